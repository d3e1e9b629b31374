"""State notes in the text env, task_failure and the env's own turn limit."""

from __future__ import annotations

import gymnasium as gym
import pytest

import dialog_env  # noqa: F401 - registers the environments
from agents import make_agent
from dialog_env.fit import candidates
from dialog_env.notes import state_note
from rewards import DEFAULT_WEIGHTS

TEXT_ID, ACT_ID = "dialog_env/PersonaRecText-v0", "dialog_env/PersonaRec-v0"


def play(env, agent, seed):
    obs, info = env.reset(seed=seed)
    agent.reset(env, seed=seed)
    infos = [info]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        infos.append(info)
        done = terminated or truncated
    return obs, infos


def test_notes_follow_every_user_turn_when_asked():
    env = gym.make(TEXT_ID, split="test", state_notes=True)
    obs, infos = play(env, make_agent("planner"), 3)
    msgs = infos[-1]["messages"]
    notes = [m["content"].split("\n")[-1] for m in msgs if m["role"] == "user"]
    assert len(notes) == len(infos) and all(n.startswith("[") and n.endswith("]") for n in notes)
    assert notes == [i["state_note"] for i in infos]
    assert all(n in obs for n in notes)
    # Without the option the observation, messages and info are unchanged; the notes are there on demand.
    plain = gym.make(TEXT_ID, split="test")
    obs2, infos2 = play(plain, make_agent("planner"), 3)
    assert all("state_note" not in i for i in infos2)
    assert [plain.unwrapped.note(k) for k in range(len(infos2))] == notes
    assert plain.unwrapped.note() == notes[-1]
    assert "[" not in obs2 and all("\n" not in m["content"] for m in infos2[-1]["messages"])
    assert plain.unwrapped.messages(notes=True) == msgs


def test_notes_say_what_was_heard_and_what_fits():
    env = gym.make(TEXT_ID, split="train", state_notes=True)
    core = env.unwrapped
    world = core.world
    for seed in range(40):
        env.reset(seed=seed)
        _, _, term, trunc, info = env.step("Do you have any pets? What do you do for a living?")
        known = core.tracker.known()
        note = info["state_note"]
        for slot, value in known.items():
            assert world.value(slot, value).short in note
        for s in core.tracker.view().declined:
            assert f"declined {world.slot[s].noun}" in note
        cands = candidates(world, core.tracker.goal, known)
        assert note.endswith(("]",)) and f"{len(cands)} fit" in note
        named = [it for it in world.items if it.name in note]
        assert all(not it.violated_slots(known) and it.category == core.tracker.goal for it in named)


def test_notes_use_agent_side_state_only():
    """The note is a function of the tracker and the catalog: two users who said the same have the same note."""
    env = gym.make(TEXT_ID, split="train")
    core = env.unwrapped
    env.reset(seed=11)
    env.step("What kind of music do you like?")
    view = core.tracker.view()
    note = state_note(core.world, core.tracker.goal, view)
    assert note == core.note() or "heard" in note  # from the opening's point of view, every fact is new
    core.persona, core.user = None, None  # the note never needs them
    assert state_note(core.world, core.tracker.goal, view) == note
    assert all(core.world.value(s, v).short in note for s, v in view.known.items())


def test_notes_are_deterministic():
    a = play(gym.make(TEXT_ID, state_notes=True), make_agent("rule"), 7)[0]
    b = play(gym.make(TEXT_ID, state_notes=True), make_agent("rule"), 7)[0]
    assert a == b


def test_state_notes_argument_is_checked():
    with pytest.raises(ValueError, match="state_notes"):
        gym.make(TEXT_ID, state_notes="yes")


@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_turn_limit_truncates_and_charges_a_failure(env_id):
    env = gym.make(env_id, max_turns=3)
    env.reset(seed=0)
    action = env.unwrapped.act_table.chitchat if env_id == ACT_ID else "How is your day going?"
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(action)
    assert truncated and not terminated and info["outcome"] == "truncated" and not info["is_success"]
    assert info["reward_terms"]["task_failure"] == -1.0
    assert reward == pytest.approx(sum(DEFAULT_WEIGHTS[k] * v for k, v in info["reward_terms"].items()))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)


def test_failure_only_on_the_last_turn_of_a_failed_dialogue():
    env = gym.make(TEXT_ID, split="test")
    for name in ("bye", "planner", "always_recommend"):
        for seed in range(20):
            _, infos = play(env, make_agent(name), seed)
            failures = [i["reward_terms"]["task_failure"] for i in infos[1:]]
            assert failures[:-1] == [0.0] * (len(failures) - 1)
            assert failures[-1] == (0.0 if infos[-1]["outcome"] == "accepted" else -1.0)
