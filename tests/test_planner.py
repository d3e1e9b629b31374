"""The planner: a non-privileged baseline that asks what decides the best fit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401 - registers the environments
from agents import PlannerAgent, make_agent
from dialog_env.evaluation import MODES, evaluate, summarize
from dialog_env.fit import candidates, certain_best, persona_samples, value_of_asking
from dialog_env.world import load_world

EPISODES = 100


@pytest.mark.parametrize("mode", list(MODES))
def test_planner_beats_rule(mode):
    scores = {}
    for name in ("rule", "planner"):
        scores[name] = summarize(evaluate(lambda n=name: make_agent(n), split="test", episodes=EPISODES, mode=mode))
    planner, rule = scores["planner"], scores["rule"]
    assert planner["success"]["mean"] >= 0.8
    assert planner["success"]["mean"] - planner["success"]["ci95"] > rule["success"]["mean"] + rule["success"]["ci95"]
    assert planner["return"]["mean"] - planner["return"]["ci95"] > rule["return"]["mean"] + rule["return"]["ci95"]
    assert planner["turns"]["mean"] < rule["turns"]["mean"]
    assert planner["contradiction_rate"]["mean"] == 0.0


class _Sealed:
    def __getattr__(self, name):
        raise AssertionError(f"the planner read privileged state: persona.{name}")


def test_planner_reads_no_privileged_state():
    """Its choices are made with the persona and user sealed off (restored only for the env's step)."""
    env = gym.make(MODES["text"], split="test")
    core = env.unwrapped
    agent = PlannerAgent()
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        done = False
        while not done:
            persona, user = core.persona, core.user
            core.persona, core.user = _Sealed(), _Sealed()
            try:
                text = agent.act(obs, info)
            finally:
                core.persona, core.user = persona, user
            obs, _, terminated, truncated, info = env.step(text)
            done = terminated or truncated


def test_planner_text_turns_ask_two_slots_in_varied_words():
    env = gym.make(MODES["text"], split="train")
    agent = PlannerAgent()
    firsts, counts = set(), []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        text = agent.act(obs, info)
        firsts.add(text)
        obs, _, _, _, info = env.step(text)
        counts.append(sum(a.startswith("ask(") for a in info["agent_acts"]))
    assert max(counts) == 2 and len(firsts) > 10


def test_planner_is_deterministic_per_seed():
    runs = [[r.messages for r in evaluate(PlannerAgent, split="valid", episodes=10, seed=3)] for _ in range(2)]
    assert runs[0] == runs[1]


def test_planner_rejects_bad_arguments():
    with pytest.raises(ValueError, match="asks_per_turn"):
        PlannerAgent(asks_per_turn=0)
    with pytest.raises(ValueError, match="confidence"):
        PlannerAgent(confidence=1.5)


def test_fit_reasoning_on_a_known_persona():
    world = load_world()
    goal = "place"
    # A cat owner living alone who loves coffee: the cat cafe appeals on three slots, unless allergic.
    known = {"pet": "cat", "family": "lives_alone", "drink": "coffee"}
    cands = candidates(world, goal, known)
    cafe = next(c for c in cands if c.item.id == "whiskers_cat_cafe")
    assert cafe.appeal == 3 and not cafe.safe and "allergy" in cafe.open_slots
    assert certain_best(cands) is None  # an allergy to cats would rule it out
    assert certain_best(candidates(world, goal, {**known, "allergy": "none"})).item.id == "whiskers_cat_cafe"
    idx, acc, items = persona_samples(world, goal, known, rejected=(), rng=np.random.default_rng(0))
    assert acc.shape == (len(items), len(idx)) and acc.any(axis=0).all()
    chance = acc.mean(axis=1)
    assert items[int(np.argmax(chance))].id == "whiskers_cat_cafe"
    gain = value_of_asking(world, idx, acc, ["allergy", "music"])
    assert gain["allergy"] >= gain["music"] and gain["allergy"] >= chance.max()
    # A rejected item is never what the prior expects the user to accept.
    idx2, acc2, items2 = persona_samples(world, goal, known, ("whiskers_cat_cafe",), np.random.default_rng(0))
    assert not acc2[[it.id for it in items2].index("whiskers_cat_cafe")].any()


def test_registered():
    assert isinstance(make_agent("planner"), PlannerAgent)
