"""PersonaRecDuel-v0: PettingZoo's parallel API, a user that never lies, single-agent sides for SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from pettingzoo.test import parallel_api_test
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dialog_env
from dialog_env import acts as A
from dialog_env.envs.duel import ASSISTANT, USER, AssistantSide, PersonaRecDuelEnv, UserSide
from dialog_env.users.adversarial import PolicyUser, UserActTable, random_user_policy

DUEL_ID = "dialog_env/PersonaRecDuel-v0"


def play_random(env: PersonaRecDuelEnv, seed: int, rng: np.random.Generator) -> list[tuple]:
    """One dialogue with both sides uniform over their masks; returns (actions, rewards) per step."""
    obs, _ = env.reset(seed=seed)
    steps = []
    while env.agents:
        actions = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.agents}
        obs, rewards, term, trunc, infos = env.step(actions)
        steps.append((actions, rewards, infos))
    return steps


def test_pettingzoo_parallel_api_test():
    env = dialog_env.make_parallel(DUEL_ID, split="test")
    parallel_api_test(env, num_cycles=1000)
    with pytest.raises(ValueError, match="env_id"):
        dialog_env.make_parallel("dialog_env/Nope-v0")


@pytest.mark.parametrize("side", [AssistantSide, UserSide])
def test_single_agent_sides_pass_both_checkers(side):
    env = side(split="train")
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env)


def test_the_user_never_states_a_false_fact_over_random_personas_and_acts():
    # Property: whatever either side does, every fact the user states (inform, affirm) is its
    # persona's, it accepts exactly the acceptable recommendations and rejects the others.
    env = PersonaRecDuelEnv(split="all", max_turns=12)
    core, user = env.core, env.policy_user
    rng = np.random.default_rng(0)
    stated = 0
    for seed in range(300):
        obs, _ = env.reset(seed=seed)
        persona = core.persona
        while env.agents:
            if env.user_turn:
                pending = env.pending_acts
                mask = obs[USER]["action_mask"].astype(bool)
                rec = next((a.value for a in pending if a.intent == A.RECOMMEND), None)
                if rec is not None:
                    assert mask[user.table.accept] == core.judge.acceptable(rec)
                    assert mask[user.table.reject] != core.judge.acceptable(rec)
                    assert mask.sum() == 1
                assert not mask[UserActTable.WAIT]
                if any(a.intent == A.ASK for a in pending) and user.evasions_left == 0:
                    assert set(np.flatnonzero(mask)) <= {UserActTable.ANSWER, user.table.leave}  # must answer
            actions = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.agents}
            obs, _, _, _, infos = env.step(actions)
            if USER in infos and "user_act" in infos[USER]:
                for act in core.last_context.user_acts:
                    if act.intent in (A.INFORM, A.AFFIRM):
                        assert persona.values[act.slot] == act.value, (seed, act)
                        stated += 1
                    if act.intent == A.ACCEPT:
                        assert core.judge.acceptable(act.value)
    assert stated > 200  # the property was exercised


def test_same_seed_and_actions_give_the_same_dialogue_and_rewards():
    a, b = PersonaRecDuelEnv(split="test"), PersonaRecDuelEnv(split="test")
    for seed in (1, 2, 3):
        run_a = play_random(a, seed, np.random.default_rng(seed))
        run_b = play_random(b, seed, np.random.default_rng(seed))
        assert [(s[0], s[1]) for s in run_a] == [(s[0], s[1]) for s in run_b]
        assert a.core.transcript() == b.core.transcript()


def test_turns_alternate_and_rewards_arrive_when_an_exchange_completes():
    env = PersonaRecDuelEnv(split="test")
    obs, _ = env.reset(seed=4)
    assert obs[USER]["action_mask"].tolist() == [1] + [0] * (env.user_table.size - 1)  # the user waits
    assert obs[ASSISTANT]["action_mask"][env.assistant_wait] == 0
    ask = env.core.act_table.ask("diet")
    obs, rewards, *_ = env.step({ASSISTANT: ask, USER: UserActTable.WAIT})
    assert rewards == {ASSISTANT: 0.0, USER: 0.0}
    assert obs[ASSISTANT]["action_mask"].tolist() == [0] * env.assistant_wait + [1]  # the assistant waits
    assert obs[USER]["action_mask"][UserActTable.ANSWER] == 1
    obs, rewards, term, trunc, infos = env.step({ASSISTANT: env.assistant_wait, USER: UserActTable.ANSWER})
    assert set(infos[USER]["reward_terms"]) == {"contradiction", "failure", "turn_cost"}
    assert rewards[ASSISTANT] == pytest.approx(
        sum(env.core.reward_fn.weights[k] * v for k, v in infos[ASSISTANT]["reward_terms"].items())
    )
    assert rewards[USER] == pytest.approx(-env.turn_cost)  # no contradiction drawn, not over
    assert "diet" in env.core.judge.revealed


def test_the_assistant_never_sees_the_persona():
    env = PersonaRecDuelEnv(split="test", debug=False)
    plain = gym.make("dialog_env/PersonaRec-v0", split="test").unwrapped
    rng = np.random.default_rng(5)
    for seed in range(10):
        obs, infos = env.reset(seed=seed)
        plain_obs, _ = plain.reset(seed=seed)
        assert np.array_equal(obs[ASSISTANT]["observation"], plain_obs)  # PersonaRec-v0's view, nothing more
        while env.agents:
            actions = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.agents}
            obs, _, _, _, infos = env.step(actions)
            info = infos.get(ASSISTANT, {})
            assert not {"persona", "traits", "goal", "debug"} & set(info)
            text = repr(info)
            for slot, value in env.core.persona.values.items():
                if slot not in env.core.judge.revealed:
                    assert f"'{value}'" not in text


def test_bad_actions_and_arguments_get_clear_errors():
    env = PersonaRecDuelEnv(split="test")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions\['user'\]: answer is not allowed now; allowed: \['wait'\]"):
        env.step({ASSISTANT: 0, USER: UserActTable.ANSWER})
    with pytest.raises(ValueError, match="no action for live agent 'user'"):
        env.step({ASSISTANT: 0})
    env.step({ASSISTANT: env.core.act_table.ask("diet"), USER: 0})
    with pytest.raises(ValueError, match=r"actions\['user'\]: accept is not allowed now"):
        env.step({ASSISTANT: env.assistant_wait, USER: env.user_table.accept})
    with pytest.raises(ValueError, match="user: the duel's user is its second agent"):
        PersonaRecDuelEnv(user="agenda")
    with pytest.raises(ValueError, match="failure_weight must be a finite number"):
        PersonaRecDuelEnv(failure_weight=float("nan"))
    with pytest.raises(ValueError, match=r"user action must be an integer in \[0, "):
        env.user_table.name(999)


def test_the_user_side_never_says_an_act_outside_the_mask():
    env = UserSide(split="test")
    env.reset(seed=0)
    forbidden = next(i for i, ok in enumerate(env.action_masks()) if not ok)
    _, _, _, _, info = env.step(forbidden)
    assert info["replaced_action"] is True


@pytest.mark.parametrize("env_id", ["dialog_env/PersonaRec-v0", "dialog_env/PersonaRecText-v0"])
def test_a_trained_user_plugs_into_every_env_as_adv(tmp_path, env_id):
    from sb3_contrib import MaskablePPO

    from agents import make_agent

    side = UserSide(split="train")
    model = MaskablePPO("MlpPolicy", side, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    model.save(tmp_path / "final_model.zip")
    env = gym.make(env_id, user=f"adv:{tmp_path}", split="test")
    agent = make_agent("rule")
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(agent.act(obs, info))
            done = term or trunc
        for _role, text in env.unwrapped._history:
            assert text
    with pytest.raises(ValueError, match="no MaskablePPO user policy found"):
        gym.make(env_id, user=f"adv:{tmp_path / 'missing'}")


def test_a_policy_user_answering_truthfully_lets_the_planner_succeed():
    from agents import make_agent

    duel = PersonaRecDuelEnv(split="test")
    planner = make_agent("planner")
    wins = 0
    for seed in range(20):
        obs, infos = duel.reset(seed=seed)
        planner.reset(duel.core, seed=seed)
        info = {"action_mask": duel.core.action_masks()}
        while duel.agents:
            a = planner.act(obs[ASSISTANT]["observation"], info)
            obs, _, _, _, infos = duel.step({ASSISTANT: int(a), USER: UserActTable.WAIT})
            u = duel.policy_user.choose(duel.pending_acts)
            obs, _, _, _, infos = duel.step({ASSISTANT: duel.assistant_wait, USER: u})
            info = {"action_mask": duel.core.action_masks()}
        wins += infos[ASSISTANT]["is_success"]
    assert wins >= 14  # a cooperative policy user is as easy as the agenda user (planner: about 0.9)


def test_random_user_policy_is_seeded_and_truthful():
    world = dialog_env.envs.duel.PersonaRecDuelEnv(split="test").core.world
    user = PolicyUser(world)
    p, q = random_user_policy(3), random_user_policy(3)
    mask = np.zeros(user.table.size, dtype=bool)
    mask[[1, 5, 9]] = True
    assert [p(None, mask) for _ in range(10)] == [q(None, mask) for _ in range(10)]


def test_the_assistant_sees_a_challenge_with_its_slot_in_its_observation():
    """A challenge ("what did I say about my diet?") reaches the assistant's view as its own intent."""
    env = PersonaRecDuelEnv(split="test")
    env.reset(seed=4)
    core = env.core
    bit = core.encoder.intent_index(A.CHALLENGE)
    with pytest.raises(ValueError, match="intent"):
        core.encoder.intent_index("ask")  # an agent intent
    ask = core.act_table.ask("diet")
    env.step({ASSISTANT: ask, USER: UserActTable.WAIT})
    obs, *_ = env.step({ASSISTANT: env.assistant_wait, USER: UserActTable.ANSWER})
    assert obs[ASSISTANT]["observation"][bit] == 0.0
    env.step({ASSISTANT: core.act_table.chitchat, USER: UserActTable.WAIT})
    challenge = env.user_table.challenge_start + core.world.slot_names.index("diet")
    obs, *_ = env.step({ASSISTANT: env.assistant_wait, USER: challenge})
    assert obs[ASSISTANT]["observation"][bit] == 1.0
    assert core.tracker.last_user_acts == (A.DialogueAct(A.CHALLENGE, "diet"),)


def test_contradiction_acts_script_counts_the_contradictions_the_evaluation_counts(tmp_path):
    """scripts/contradiction_acts.py: every agent turn counted once, its contradicting turns the same as eval's."""
    import importlib.util
    import json
    from pathlib import Path

    from agents.base import make_agent
    from dialog_env.evaluation import evaluate

    path = Path(__file__).resolve().parents[1] / "scripts" / "contradiction_acts.py"
    spec = importlib.util.spec_from_file_location("contradiction_acts", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "counts.json"
    (row,) = script.main(["--agent", "random", "--noise", "0.3", "--episodes", "12", "--out", str(out)])
    assert json.loads(out.read_text()) == [row]
    records = evaluate(lambda: make_agent("random"), episodes=12, env_kwargs={"noise": 0.3})
    assert row["agent_turns"] == sum(r.turns for r in records) == sum(row["turns_by_intent"].values())
    bad = sum(round(r.contradiction_rate * r.turns) for r in records)
    assert bad > 0  # the random agent at noise 0.3 contradicts: the check can fail
    assert sum(row["contradicting_turns_by_intent"].values()) == bad
    assert sum(row["contradicting_turns_by_user_turn_before"].values()) == bad
    with pytest.raises(SystemExit):
        script.main(["--agent", "random", "--episodes", "0"])
