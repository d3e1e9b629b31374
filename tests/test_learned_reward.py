"""The discriminator reward: agent-side features, learns while it scores, shared per process."""

from __future__ import annotations

import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401 - registers the envs
from agents import make_agent
from rewards import DEFAULT_WEIGHTS
from rewards.learned import DiscriminatorReward, turn_features

ACT_ID = "dialog_env/PersonaRec-v0"
SMALL = {"episodes": 30, "update_every": 128, "steps": 10, "batch": 64, "seed": 7}


def play(env, agent_name, episodes, seed=0):
    agent = make_agent(agent_name)
    terms = []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        agent.reset(env, seed=seed + i)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(agent.act(obs, info))
            terms.append(info["reward_terms"]["discriminator"])
            done = term or trunc
    return terms


def test_features_see_only_the_agent_side():
    env = gym.make(ACT_ID, split="test").unwrapped
    env.reset(seed=3)
    env.step(env.act_table.ask("diet"))
    ctx = env.last_context
    other = dataclasses.replace(
        ctx,
        persona=dataclasses.replace(ctx.persona, values={k: "x" for k in ctx.persona.values}),
        revealed={},
        revealed_before={},
        user_acts=(),
    )
    assert np.array_equal(turn_features(ctx), turn_features(other))


def test_it_learns_to_tell_the_teacher_from_a_random_policy_while_scoring():
    weights = {**DEFAULT_WEIGHTS, "discriminator": {"weight": 1.0, "kwargs": SMALL}}
    env = gym.make(ACT_ID, split="train", reward_weights=weights)
    disc = env.unwrapped.reward_fn.terms[-1][1]
    assert isinstance(disc, DiscriminatorReward)
    play(env, "random", 150, seed=100)  # the policy being trained, here a random one
    assert disc.updates >= 3
    random_after = np.mean(play(env, "random", 40, seed=5000))
    planner_after = np.mean(play(env, "planner", 40, seed=5000))
    assert planner_after > random_after + 1.0  # teacher-like turns now earn more


def test_envs_of_one_process_share_one_discriminator_and_pickling_keeps_it():
    weights = {**DEFAULT_WEIGHTS, "discriminator": {"weight": 1.0, "kwargs": {**SMALL, "seed": 8}}}
    a = gym.make(ACT_ID, reward_weights=weights).unwrapped.reward_fn.terms[-1][1]
    b = gym.make(ACT_ID, reward_weights=weights).unwrapped.reward_fn.terms[-1][1]
    assert a is b
    assert pickle.loads(pickle.dumps(a)) is a


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"episodes": 0}, "episodes: expected a positive integer"), ({"teacher": "oracle"}, "reads the hidden persona")],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        gym.make(ACT_ID, reward_weights={"discriminator": {"weight": 1.0, "kwargs": {**SMALL, **kwargs}}})


def test_its_state_round_trips_and_a_cleared_process_starts_untrained():
    """reward_states / restore_reward_states carry what it learned; clear_reward_states forgets it."""
    from rewards.learned import clear_reward_states, restore_reward_states, reward_states

    clear_reward_states()
    kwargs = {**SMALL, "seed": 11}
    env = gym.make(ACT_ID, split="train", reward_weights={"discriminator": {"weight": 1.0, "kwargs": kwargs}})
    play(env, "random", 60, seed=300)
    disc = env.unwrapped.reward_fn.terms[-1][1]
    assert disc.updates >= 1
    saved = reward_states()
    probe = np.stack([disc.policy[0], disc.demos[0]])
    want = disc.logits(probe)
    clear_reward_states()
    fresh = DiscriminatorReward(**kwargs)
    assert fresh is not disc and fresh.updates == 0 and not np.allclose(fresh.logits(probe), want)
    assert restore_reward_states(pickle.loads(pickle.dumps(saved))) == 1
    assert fresh.updates == disc.updates and fresh.n_policy == disc.n_policy
    np.testing.assert_array_equal(fresh.logits(probe), want)
    # both go on alike: the same kept turns, optimiser and generator
    assert disc.update() == pytest.approx(fresh.update())
    bad = {**saved[0]["state"], "policy": np.zeros((3, 5), dtype=np.float32)}
    with pytest.raises(ValueError, match="discriminator state: kept turns"):
        fresh.load_state_dict(bad)
    clear_reward_states()
