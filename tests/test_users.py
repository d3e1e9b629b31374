"""Users as plug-ins: the protocol the env calls, the registry, the world's judge, paired noise."""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dialog_env  # noqa: F401
from dialog_env import acts as A
from dialog_env.acts import DialogueAct as Act
from dialog_env.judge import FALSE_ACCEPT, Judge
from dialog_env.persona import PersonaSampler
from dialog_env.users import USERS, AgendaUser, UserSimulator, UserTurn, make_user, register_user
from dialog_env.world import load_world

ACT_ID, TEXT_ID = "dialog_env/PersonaRec-v0", "dialog_env/PersonaRecText-v0"
MODULE = "tests.test_users"


def play(env, player, seed, each_turn=None):
    """One whole dialogue of ``player``; ``each_turn(info)`` after every step; returns the last info."""
    obs, info = env.reset(seed=seed)
    player.reset(env, seed=seed)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(player.act(obs, info))
        done = terminated or truncated
        if each_turn is not None:
            each_turn(info)
    return info


class MinimalUser:
    """A third-party user written against the protocol only: answers every question truthfully,
    accepts any recommendation the judge allows, and leaves after twelve turns."""

    def __init__(self, world):
        self.world = world

    def reset(self, persona, goal, rng, judge):
        self.persona, self.judge, self.turns = persona, judge, 0
        return UserTurn((Act(A.REQUEST, None, goal),), f"I want a {goal}.")

    def respond(self, agent_acts, agent_text):
        self.turns += 1
        for a in agent_acts:
            if a.intent == A.RECOMMEND and self.judge.acceptable(a.value):
                return UserTurn((Act(A.ACCEPT, None, a.value),), "Yes, that one.", "accepted")
        out = [Act(A.INFORM, a.slot, self.persona.values[a.slot]) for a in agent_acts if a.intent == A.ASK]
        if self.turns >= 12:
            return UserTurn((*out, Act(A.BYE, None, "left")), "Bye.", "left")
        return UserTurn(tuple(out), self.render(out, None))

    def render(self, acts, rng):
        facts = [self.world.value(a.slot, a.value).fact for a in acts if a.intent == A.INFORM]
        return (". ".join(facts) + ".") if facts else "Hmm."


class LyingUser(MinimalUser):
    """Claims every recommendation is accepted and states false facts: the judge must not believe it."""

    def respond(self, agent_acts, agent_text):
        recs = [a.value for a in agent_acts if a.intent == A.RECOMMEND]
        if recs:
            return UserTurn((Act(A.ACCEPT, None, recs[0]),), "Perfect!", "accepted")
        lies = []
        for a in agent_acts:
            if a.intent == A.ASK:
                wrong = [v for v in self.world.slot[a.slot].value_ids if v != self.persona.values[a.slot]]
                lies.append(Act(A.INFORM, a.slot, wrong[0]))
        return UserTurn(tuple(lies), self.render(lies, None))


class NotAUser:
    def __init__(self, world):
        pass

    def reset(self, persona, goal, rng, judge):
        return UserTurn((), "")


@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_a_third_party_user_passes_the_env_checkers(env_id):
    env = gym.make(env_id, user=f"{MODULE}:MinimalUser")
    assert isinstance(env.unwrapped.user, MinimalUser) and isinstance(env.unwrapped.user, UserSimulator)
    gym_check_env(env.unwrapped)
    if env_id == ACT_ID:  # SB3's checker has no Text spaces
        sb3_check_env(env.unwrapped)


@pytest.mark.parametrize("agent", ["rule", "planner"])
def test_a_third_party_user_plays_whole_dialogues_judged_by_the_world(agent):
    from agents import make_agent

    env = gym.make(TEXT_ID, user=f"{MODULE}:MinimalUser")
    player = make_agent(agent)
    outcomes = []
    for seed in range(20):
        info = play(env, player, seed)
        outcomes.append(info["outcome"])
        core = env.unwrapped
        assert info["is_success"] == (info["outcome"] == "accepted")
        assert all(core.persona.values[s] == v for s, v in core.judge.revealed.items())
    assert {"accepted", "left"} <= set(outcomes)


def test_no_simulator_decides_success():
    env = gym.make(ACT_ID, user=f"{MODULE}:LyingUser")
    core = env.unwrapped
    env.reset(seed=3)
    ask = core.act_table.ask(core.world.slot_names[0])
    _, _, terminated, _, info = env.step(ask)
    assert not terminated and core.judge.revealed == {}  # a false answer reveals nothing
    bad = [i for i in core.world.items if i.category == core.goal and not core.judge.acceptable(i.id)]
    _, reward, terminated, _, info = env.step(core.act_table.recommend(bad[0].id))
    assert terminated and info["outcome"] == FALSE_ACCEPT and not info["is_success"]
    assert info["reward_terms"]["task_success"] == 0.0 and info["reward_terms"]["task_failure"] == -1.0


def test_the_judge_grants_only_what_the_world_allows():
    world = load_world()
    user = AgendaUser(world)
    judge = Judge(world)
    persona = PersonaSampler(world, "train").sample(np.random.default_rng(0))
    goal = world.categories[0].id
    judge.start(persona, goal)
    user.reset(persona, goal, random.Random(0), judge)
    good = next(i for i in world.items if judge.acceptable(i.id))
    other = next(i for i in world.items if i.category == goal and not judge.acceptable(i.id))
    accept = UserTurn((Act(A.ACCEPT, None, good.id),), "ok", "accepted")
    assert judge.read((Act(A.RECOMMEND, None, good.id),), accept) == "accepted"
    assert judge.read((Act(A.RECOMMEND, None, other.id),), accept) == FALSE_ACCEPT  # accepted what was not offered
    assert judge.read((), UserTurn((), "", "left")) == "left"
    with pytest.raises(ValueError, match="outcome must be one of"):
        judge.read((), UserTurn((), "", "won"))
    assert not judge.acceptable("no such item")
    with pytest.raises(ValueError):
        judge.acceptable_items[0] = True  # read-only for simulators


def test_registry_errors_name_what_is_allowed():
    world = load_world()
    with pytest.raises(ValueError, match=r"user: unknown user 'agend'; expected one of \['agenda'"):
        make_user("agend", world)
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        make_user(f"{MODULE}:Nope", world)
    with pytest.raises(ValueError, match="cannot import module"):
        make_user("no_such_pkg.users:User", world)
    with pytest.raises(TypeError, match=r"lacks UserSimulator method\(s\) \['respond', 'render'\]"):
        make_user(f"{MODULE}:NotAUser", world)
    with pytest.raises(ValueError, match="user: unknown user"):
        gym.make(ACT_ID, user="agend")


def test_users_are_found_through_entry_points(tmp_path, monkeypatch):
    """A package that declares [project.entry-points."dialog_env.users"] makes its user a name."""
    from dialog_env.users import ENTRY_POINT_GROUP

    dist = tmp_path / "fakeusers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeusers\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nminimal = {MODULE}:MinimalUser\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown user 'minimal'"):
        make_user("minimal", load_world())
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(make_user("minimal", load_world()), MinimalUser)
    with pytest.raises(ValueError, match=r"entry point of group 'dialog_env.users' \(\['minimal'\]\)"):
        make_user("maximal", load_world())


def test_registered_users_are_found_by_name():
    register_user("minimal_test_user", MinimalUser)
    try:
        env = gym.make(ACT_ID, user="minimal_test_user")
        assert isinstance(env.unwrapped.user, MinimalUser)
        assert env.unwrapped.dialog_state.__self__._init_kwargs["user"] == "minimal_test_user"
        with pytest.raises(ValueError, match="already registered"):
            register_user("minimal_test_user", LyingUser)
    finally:
        USERS.pop("minimal_test_user")


def true_acts(noise: float, seed: int, actions: list[int]) -> list[list[str]]:
    env = gym.make(ACT_ID, noise=noise, debug=True)
    env.reset(seed=seed)
    out = []
    for a in actions:
        _, _, terminated, truncated, info = env.step(a)
        out.append(info["debug"]["true_user_acts"])
        if terminated or truncated:
            break
    return out


def test_noise_levels_are_paired_comparisons():
    """Same seed, same agent actions: the user's true acts are the same at every noise level."""
    core = gym.make(ACT_ID).unwrapped
    rng = random.Random(0)
    differs = 0
    for seed in range(60):
        actions = [rng.randrange(core.act_table.size) for _ in range(8)]
        clean = true_acts(0.0, seed, actions)
        for noise in (0.15, 0.3):
            assert true_acts(noise, seed, actions) == clean, (seed, noise)
        noisy = gym.make(ACT_ID, noise=0.3)
        plain = gym.make(ACT_ID)
        noisy.reset(seed=seed)
        plain.reset(seed=seed)
        for a in actions[:3]:
            n, p = noisy.step(a), plain.step(a)
            differs += not np.array_equal(n[0], p[0])
            if n[2] or n[3] or p[2] or p[3]:
                break
    assert differs > 0  # the channel does change what the agent hears


# -- the LM-backed user ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from tests.lm_fixtures import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny_user"))


def play_lm_user(tiny_lm, seed, agent="planner", max_turns=6):
    from agents import make_agent

    env = gym.make(TEXT_ID, user=f"lm:{tiny_lm}", max_turns=max_turns)
    play(env, make_agent(agent), seed)
    return env.unwrapped


def test_a_tiny_model_lm_user_runs_end_to_end_and_falls_back_to_templates(tiny_lm):
    from dialog_env.users.lm import LMUser

    core = play_lm_user(tiny_lm, seed=1)
    user = core.user
    assert isinstance(user, LMUser) and isinstance(user, UserSimulator)
    assert user.stats["turns"] == core.turn + 1 and user.stats["candidates"] == user.stats["turns"] * user.tries
    # A random tiny model never says what the acts mean: every turn is the template, verified or not.
    assert user.stats["fallback"] == user.stats["turns"] and user.stats["verified"] == 0
    # The tracker heard exactly what the user truly said (JGA 1 on every turn).
    assert core.tracker.known() == core.judge.revealed
    again = play_lm_user(tiny_lm, seed=1)
    assert again.messages() == core.messages()  # seeded: the same dialogue


def test_the_lm_user_says_the_first_candidate_that_verifies(tiny_lm, monkeypatch):
    from dialog_env.users.lm import LMUser

    world = load_world()
    user = LMUser(world, model=str(tiny_lm))
    persona = PersonaSampler(world, "train").sample(np.random.default_rng(3))
    judge = Judge(world)
    goal = world.categories[1].id
    judge.start(persona, goal)
    said = {}

    def fake_candidates(template):
        said["template"] = template
        unrevealed = next(s for s in world.slot_names)
        invented = f"{template} {world.value(unrevealed, persona.values[unrevealed]).fact}."
        long = f"I can help you with that! {template} " + "Here are some ideas for you. " * 3
        return ["", invented, long, f"{template} Can I help?", template.upper() + "!", "something else entirely"]

    monkeypatch.setattr(user, "candidates", fake_candidates)
    opening = user.reset(persona, goal, random.Random(0), judge)
    # Refused: empty, an invented fact, an assistant-like ramble, a question the template does not ask.
    assert opening.text == said["template"].upper() + "!"
    assert opening.acts == (Act(A.REQUEST, None, goal),)
    assert user.stats == {"turns": 1, "verified": 1, "fallback": 0, "candidates": 5}


def test_lm_user_specs_are_checked():
    with pytest.raises(ValueError, match="user 'lm:runs/nope/model': model: no such folder"):
        gym.make(TEXT_ID, user="lm:runs/nope/model")
    from dialog_env.users.lm import LMUser

    with pytest.raises(ValueError, match="tries and max_new_tokens must be positive"):
        LMUser(load_world(), tries=0)


@pytest.mark.real_model
def test_the_lm_user_on_the_embedded_smollm2():
    """SmolLM2 phrases real turns; whatever it says, the tracker hears only verified acts."""
    from agents import make_agent

    env = gym.make(TEXT_ID, user="lm:smollm2", split="test", max_turns=3)
    player = make_agent("planner")
    core = env.unwrapped

    def heard_truly(info):
        assert core.tracker.known() == core.judge.revealed

    play(env, player, 0, heard_truly)
    stats = core.user.stats
    assert stats["turns"] >= 2 and stats["verified"] + stats["fallback"] == stats["turns"]


def test_lm_users_in_flight_together_phrase_in_one_batched_call_per_round(tiny_lm):
    """The driver steps LM users in threads; their phrase batcher answers a round with one generate call."""
    from dialog_env.driver import DialogueDriver, ScriptedPolicy

    scripts = [["What do you do for a living?", "Do you have any pets?", "What do you like to drink?"]] * 6
    envs = [gym.make(TEXT_ID, user=f"lm:{tiny_lm}", max_turns=3) for _ in range(3)]
    batcher = envs[0].unwrapped.user.batcher
    assert all(e.unwrapped.user.batcher is batcher for e in envs)
    calls = batcher.calls
    together = DialogueDriver(envs).play(ScriptedPolicy(scripts), range(6))
    batched_calls = batcher.calls - calls
    calls = batcher.calls
    alone = DialogueDriver(envs[:1]).play(ScriptedPolicy(scripts), range(6))
    one_by_one = batcher.calls - calls
    turns = sum(r.turns for r in alone) + len(alone)  # every user turn and every opening phrases once
    assert one_by_one == turns and batched_calls < turns / 2
    # A random tiny model never verifies, so both runs say the templates: the same dialogues.
    assert [r.messages for r in together] == [r.messages for r in alone]


def test_the_lm_user_is_paired_with_the_agenda_user(tiny_lm):
    """Same seed, same agent: the LM user's decisions are the agenda user's (its sampling has its own stream)."""
    from agents import make_agent

    for seed in (1, 2, 3):
        lm = play_lm_user(tiny_lm, seed=seed, agent="rule", max_turns=10)
        env = gym.make(TEXT_ID, max_turns=10)
        play(env, make_agent("rule"), seed)
        # A random tiny model never verifies, so the LM user says the templates: the whole dialogue matches.
        assert lm.messages() == env.unwrapped.messages()


def test_eval_lm_user_script_reports_paired_differences(tiny_lm, tmp_path):
    """The cross-simulator table as a user runs it: both users per agent, and paired differences."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cross"
    cmd = [sys.executable, str(root / "scripts" / "eval_lm_user.py"), "--agents", "rule", "p=planner",
           "--user-model", str(tiny_lm), "--episodes", "3", "--in-flight", "2", "--paired", "p", "nobody",
           "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 2 and "--paired: both agents must be among the --agents labels" in r.stderr
    cmd[cmd.index("nobody")] = "rule"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    comparisons = [p["comparison"] for p in results["paired"]]
    lm = f"lm:{tiny_lm}"
    assert comparisons == [f"rule: {lm} − agenda", f"p: {lm} − agenda", "p − rule vs agenda", f"p − rule vs {lm}"]
    rows = {(row["agent"], row["user"]): row for row in results["rows"]}
    # A random tiny model never verifies: the LM user says the templates, so each agent's dialogues match.
    assert rows["p", lm]["dialogues"] == rows["p", "agenda"]["dialogues"]
    assert results["paired"][1]["success"] == {"mean": 0.0, "ci95": 0.0}
    planner = [d["success"] for d in rows["p", "agenda"]["dialogues"]]
    rule = [d["success"] for d in rows["rule", "agenda"]["dialogues"]]
    assert results["paired"][2]["success"]["mean"] == pytest.approx(sum(planner) / 3 - sum(rule) / 3)
    assert "| p − rule vs agenda |" in (out / "results.md").read_text()
