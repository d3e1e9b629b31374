"""Returning users (PersonaRecSessions-v0): the same user across sessions and never across users, a user that
remembers what it told the agent, consistency checked against every session, and memory that holds only what
was said."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dialog_env
from dialog_env import acts as A
from dialog_env.envs.sessions import SESSION_HEADER, PersonaRecSessionsEnv

ACT, TEXT = dialog_env.SESSION_ENV_IDS


def play(env, seed: int, policy, max_steps: int = 200):
    """Steps ``policy(env, info)`` until the episode ends; returns every step's (obs, reward, info)."""
    obs, info = env.reset(seed=seed)
    steps = [(obs, 0.0, info)]
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(env, info))
        steps.append((obs, reward, info))
        if terminated or truncated:
            return steps
    raise AssertionError("the episode did not end")


def random_policy(seed: int):
    rng = np.random.default_rng(seed)

    def act(env, info):
        a = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
        return a if env.unwrapped.mode == "act" else env.unwrapped.act_to_text(a)

    return act


@pytest.mark.parametrize("env_id", [ACT, TEXT])
def test_passes_the_env_checkers(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, split="train")
    check_env(env.unwrapped, skip_render_check=True)
    if env_id == ACT:
        from stable_baselines3.common.env_checker import check_env as sb3_check

        sb3_check(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", [ACT, TEXT])
def test_same_user_in_every_session_and_a_new_one_each_episode(env_id):
    env = gym.make(env_id, split="train", sessions=3).unwrapped
    personas_by_episode = []
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        personas, goals = [env.inner.persona], [env.inner.goal]
        assert env.inner.judge.earlier == {} and env.inner.user.told_before == {}  # nothing of the last user
        if env_id == TEXT:
            assert obs.startswith(SESSION_HEADER.format(k=1)) and SESSION_HEADER.format(k=2) not in obs
        policy = random_policy(seed)
        sessions_seen = [info["session"]]
        while True:
            obs, _, terminated, truncated, info = env.step(policy(env, info))
            if "session_outcome" in info and not (terminated or truncated):
                personas.append(env.inner.persona)
                goals.append(env.inner.goal)
                sessions_seen.append(info["session"])
                assert env.inner.judge.earlier == env.inner.user.told_before  # the user remembers what it told
            if terminated or truncated:
                break
        assert sessions_seen == [0, 1, 2] and info["session"] == 2 and "session_outcome" in info
        assert all(p == personas[0] for p in personas)
        assert len(set(goals)) == len(goals) or len(goals) > len(env.world.categories)
        personas_by_episode.append(tuple(sorted(personas[0].values.items())))
    assert len(set(personas_by_episode)) > 6


def _first_answer(env) -> tuple[str, str]:
    """Ask slots in the first session until the user states one; returns (slot, value)."""
    world = env.world
    for slot in world.slot_names:
        _, _, terminated, truncated, info = env.step(world_ask(env, slot))
        assert not (terminated or truncated)
        if slot in env.inner.judge.revealed:
            return slot, env.inner.judge.revealed[slot]
    raise AssertionError("no answer")


def world_ask(env, slot: str) -> int:
    return env.inner.act_table.ask(slot)


def end_session(env):
    """Say bye: the session ends (a failure) and the next starts."""
    _, reward, terminated, truncated, info = env.step(env.inner.act_table.bye)
    assert "session_outcome" in info
    return reward, terminated, truncated, info


def test_the_user_remembers_what_it_told_and_asking_again_costs_patience_and_reward():
    env = PersonaRecSessionsEnv(sessions=2, split="train")
    for seed in range(30):
        env.reset(seed=seed)
        slot, value = _first_answer(env)
        end_session(env)
        assert env.session == 1 and env.inner.judge.earlier.get(slot) == value
        budget = env.inner.user.budget
        _, _, _, _, info = env.step(world_ask(env, slot))
        acts = env.inner.last_context.user_acts
        assert any(a.intent == A.REPEAT and a.slot == slot for a in acts)  # "as I said"
        assert budget - env.inner.user.budget == 2  # a turn, and one more for asking again
        assert info["reward_terms"]["redundancy"] < 0 and info["reward_terms"]["discovery"] == 0
        return
    raise AssertionError("no seed gave an answer in the first session")


def test_contradicting_a_fact_from_an_earlier_session_is_penalised():
    env = PersonaRecSessionsEnv(sessions=2, mode="text", split="train")
    for seed in range(30):
        env.reset(seed=seed)
        world = env.world
        slot = value = None
        for s in world.slot_names:
            env.step(env.act_to_text(world_ask(env, s)))
            if s in env.inner.judge.revealed:
                slot, value = s, env.inner.judge.revealed[s]
                break
        if slot is None:
            continue
        env.step("Goodbye!")
        assert env.session == 1 and slot not in env.inner.judge.revealed  # not said in this session
        wrong = next(v for v in world.values if v.slot == slot and v.id != value)
        _, _, _, _, info = env.step(env.inner.acts_to_text([A.DialogueAct(A.CONFIRM, slot, wrong.id)]))
        assert info["reward_terms"]["persona_consistency"] < 0
        return
    raise AssertionError("no seed revealed a fact")


@pytest.mark.parametrize("env_id", [ACT, TEXT])
def test_memory_holds_only_what_was_said(env_id):
    """Act mode: this session's belief vector and the session index, nothing more. Text mode: exactly the
    transcripts of the sessions so far."""
    env = gym.make(env_id, split="train", sessions=3).unwrapped
    for seed in range(6):
        steps = play(env, seed, random_policy(seed))
        transcripts: list[list[str]] = [[]]

        def lines(messages):
            return [f"{'User' if m['role'] == 'user' else 'Agent'}: {m['content']}" for m in messages]

        for obs, _, info in steps:
            if "session_outcome" in info and info["session"] == len(transcripts):
                if env_id == TEXT:
                    transcripts[-1] = lines(info["session_messages"])
                transcripts.append([])
            if env_id == ACT:
                index = obs[-3:]
                assert index.tolist() == [float(i == info["session"]) for i in range(3)]
            else:
                messages = info["messages"]  # the running session's chat
                transcripts[-1] = lines(messages)
                expected = "\n".join(
                    f"{SESSION_HEADER.format(k=k + 1)}\n" + "\n".join(lines) for k, lines in enumerate(transcripts)
                )
                assert obs == expected
        # the tracker holds only the current session: at a session start it knows nothing said before
        assert all(k in env.inner.judge.revealed for k in env.inner.tracker.known())


def test_same_seed_and_actions_give_the_same_episode():
    runs = []
    for _ in range(2):
        env = gym.make(TEXT, split="train", sessions=3).unwrapped
        steps = play(env, 7, random_policy(7))
        runs.append([(o, r, i.get("session_outcome")) for o, r, i in steps])
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"sessions": 0}, "sessions must be a positive integer"), ({"mode": "speech"}, "mode must be 'act' or 'text'")],
)
def test_bad_arguments_name_the_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PersonaRecSessionsEnv(**kwargs)


def test_earlier_facts_are_the_envs_to_set_and_must_be_true():
    env = PersonaRecSessionsEnv()
    with pytest.raises(ValueError, match="a new episode is a new user"):
        env.reset(seed=0, options={"earlier": {"diet": "vegan"}})
    inner = env.inner
    inner.reset(seed=0)
    persona = inner.persona
    slot = next(iter(persona.values))
    wrong = next(v.id for v in inner.world.values if v.slot == slot and v.id != persona.values[slot])
    with pytest.raises(ValueError, match=f"earlier: {slot}={wrong!r} is not a fact of this persona"):
        inner.reset(options={"persona": persona, "earlier": {slot: wrong}})
    with pytest.raises(ValueError, match="needs the 'persona' option"):
        inner.reset(options={"earlier": {slot: persona.values[slot]}})


def test_agents_with_memory_never_re_ask_and_do_better_with_a_returning_user():
    from agents import make_agent
    from dialog_env.envs.sessions import SESSION_METRICS, evaluate_sessions

    def run(spec):
        return evaluate_sessions(lambda: make_agent(spec), split="test", episodes=30, sessions=3, seed=0)

    rule, rule_memory = run("rule"), run("rule_memory")
    assert len(rule) == 30 and all(len(r) == 3 and set(r[0]) == set(SESSION_METRICS) for r in rule)
    # The first session is the same dialogue with or without memory.
    assert [r[0] for r in rule] == [r[0] for r in rule_memory]
    for later in (1, 2):
        assert sum(r[later]["re_asks"] for r in rule_memory) == 0
        assert sum(r[later]["re_asks"] for r in rule) > 30  # it asks again what it was told
        mean = {name: np.mean([r[later]["return"] for r in rows]) for name, rows in (("m", rule_memory), ("r", rule))}
        assert mean["m"] > mean["r"] + 10
    # A random agent recommends against facts it was told before: the cross-session rate sees it.
    rnd = evaluate_sessions(lambda: make_agent("random"), split="test", episodes=30, sessions=3, seed=0)
    assert np.mean([r[2]["cross_contradiction_rate"] for r in rnd]) > 0.1
    assert all(r[0]["cross_contradiction_rate"] == 0 for r in rnd)  # nothing earlier in a first session


def test_task_sets_are_disjoint_reproducible_and_play_their_goals(tmp_path):
    from dialog_env.persona import PersonaError
    from dialog_env.tasks import TASK_SETS, load_tasks, make_tasks, save_tasks

    env = PersonaRecSessionsEnv(sessions=3, split="train")
    world = env.world
    sets = {name: make_tasks(world, name, 150, sessions=3, seed=1) for name in TASK_SETS}
    combos = {name: {tuple(sorted(t.persona.values.items())) for t in ts} for name, ts in sets.items()}
    assert not combos["meta_train"] & combos["meta_test"] and not combos["meta_train"] & combos["meta_valid"]
    seen = {(s, v) for t in sets["meta_train"] for s, v in t.persona.values.items()}
    assert all(any((s, v) not in seen for s, v in t.persona.values.items()) for t in sets["meta_test_unseen"])
    assert make_tasks(world, "meta_test", 20, seed=1) == sets["meta_test"][:20]  # reproducible
    assert all(len(set(t.goals)) == len(t.goals) or len(t.goals) > len(world.categories) for t in sets["meta_test"])
    path = save_tasks(tmp_path / "tasks.jsonl", sets["meta_test"][:5])
    assert load_tasks(path, world) == sets["meta_test"][:5]
    (tmp_path / "bad.jsonl").write_text('{"values": {}, "traits": {}, "goals": ["spaceship"]}\n')
    with pytest.raises(PersonaError, match=r"bad.jsonl:1: goals: unknown category 'spaceship'"):
        load_tasks(tmp_path / "bad.jsonl", world)
    with pytest.raises(ValueError, match="task_set: expected one of"):
        make_tasks(world, "meta_everything", 3)
    # A task plays its persona and its goals, session by session.
    task = sets["meta_test"][0]
    env.reset(seed=0, options={"task": task})
    goals, persona = [env.inner.goal], env.inner.persona
    while True:
        _, _, terminated, truncated, info = env.step(env.inner.act_table.bye)
        if terminated or truncated:
            break
        goals.append(env.inner.goal)
        assert env.inner.persona == persona
    assert tuple(goals) == task.goals and persona == task.persona
    with pytest.raises(ValueError, match="2 goals for 3 sessions"):
        env.reset(options={"task": {**task.to_dict(), "goals": list(task.goals[:2])}})


def test_eval_sessions_script(tmp_path):
    """The returning-users evaluation as a user runs it: tables on stdout, results published to --out."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "eval"
    cmd = [sys.executable, str(root / "scripts" / "eval_sessions.py"), "--agents", "rule", "planner_memory",
           "mem=rule_memory", "mem=rule_memory", "--paired", "mem", "rule",
           "--episodes", "3", "--sessions", "2", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 2 and "--paired: mem has 6 users and rule 3; they must match" in r.stderr
    cmd[cmd.index("--paired") + 2] = "planner_memory"
    cmd.insert(cmd.index("planner_memory"), "planner_memory")  # two entries each: 6 users a side
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "planner_memory" in r.stdout and (out / "results.md").is_file()
    assert "| mem − planner_memory (paired) | 6 |" in r.stdout
    results = json.loads((out / "results.json").read_text())
    later = results["later_per_user"]
    assert len(later["planner_memory"]) == 6 and len(later["mem"]) == 6 and len(later["rule"]) == 3  # pooled
    assert later["planner_memory"][:3] == later["planner_memory"][3:]  # the same users, the same play
    assert {"success", "return", "asks"} <= set(later["rule"][0])
