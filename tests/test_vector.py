"""Vector envs give every env's own, current observation (text included), and envs pickle mid-dialogue."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401 - registers the environments
from dialog_env.spaces import TranscriptSpace

TEXT = "dialog_env/PersonaRecText-v0"
ACT = "dialog_env/PersonaRec-v0"
LINES = [
    "Hello! What cuisine do you like?",
    "Do you have any dietary restrictions?",
    "What is your budget?",
    "I recommend the Thai place downtown.",
    "Goodbye!",
]


def reference(env_id: str, n: int, actions, seed: int = 0):
    """The same steps on n single envs, with Gymnasium's next-step autoreset written out."""
    envs = [gym.make(env_id, split="train") for _ in range(n)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    steps, done = [], [False] * n
    for action in actions:
        row = []
        for i, e in enumerate(envs):
            if done[i]:
                o, r, t, tr = e.reset()[0], 0.0, False, False
            else:
                o, r, t, tr, _ = e.step(action[i])
            done[i] = t or tr
            row.append((o, r, t, tr))
        steps.append(row)
    return obs, steps


def same_obs(a, b) -> bool:
    return a == b if isinstance(a, str) else np.array_equal(a, b)


def vector_envs(env_id: str, n: int):
    fns = [lambda: gym.make(env_id, split="train")] * n
    return {
        "make_vec sync": lambda: gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", split="train"),
        "make_vec async": lambda: gym.make_vec(env_id, num_envs=n, vectorization_mode="async", split="train"),
        "Sync": lambda: gym.vector.SyncVectorEnv(fns),
        "Async shared memory": lambda: gym.vector.AsyncVectorEnv(fns),
        "Async shared memory, copy=False": lambda: gym.vector.AsyncVectorEnv(fns, copy=False),
        "Async pipes": lambda: gym.vector.AsyncVectorEnv(fns, shared_memory=False),
    }


@pytest.mark.parametrize("kind", list(vector_envs(TEXT, 2)))
@pytest.mark.parametrize("env_id", [TEXT, ACT])
def test_every_vector_env_class_returns_each_envs_current_observation(env_id, kind):
    n = 3
    rng = np.random.default_rng(0)
    if env_id == TEXT:
        actions = [tuple(LINES[int(k)] for k in rng.integers(0, len(LINES), n)) for _ in range(14)]
    else:
        actions = [rng.integers(0, 70, n) for _ in range(14)]
    start, steps = reference(env_id, n, actions)
    env = vector_envs(env_id, n)[kind]()
    try:
        obs, _ = env.reset(seed=0)
        assert all(same_obs(obs[i], start[i]) for i in range(n))
        ended = 0
        for action, row in zip(actions, steps, strict=True):
            obs, reward, term, trunc, _ = env.step(action)
            for i, (o, r, t, tr) in enumerate(row):
                assert same_obs(obs[i], o), (kind, i)
                assert reward[i] == pytest.approx(r) and term[i] == t and trunc[i] == tr
            ended += int(np.sum(term | trunc))
        assert ended > 0  # the steps crossed episode ends, so autoresets were compared too
        if env_id == TEXT:
            assert all(isinstance(o, str) and not o.startswith("\n") for o in obs)
    finally:
        env.close()


def test_transcript_space_round_trips_and_rejects_foreign_characters():
    space = TranscriptSpace(max_length=40, min_length=1, charset="abc \n")
    row = space.encode("a b\nc")
    assert row.shape == (40,) and space.decode(row) == "a b\nc"
    assert space.decode(space.encode("")) == ""
    with pytest.raises(ValueError, match="'z' is not in the space's charset"):
        space.encode("abz")
    with pytest.raises(ValueError, match="more than max_length 40"):
        space.encode("a" * 41)
    clone = pickle.loads(pickle.dumps(space))
    assert clone == space and clone.decode(row) == "a b\nc"
    assert copy.deepcopy(space) == space


@pytest.mark.parametrize(("env_id", "kwargs"), [(ACT, {}), (ACT, {"noise": 0.15}), (TEXT, {})])
def test_env_pickled_mid_dialogue_plays_on_identically(env_id, kwargs):
    """What an SB3 checkpoint stores: the env mid-dialogue, which must continue exactly as the original."""
    env = gym.make(env_id, split="train", **kwargs)
    core = env.unwrapped
    rng = np.random.default_rng(1)

    def act():
        a = int(rng.choice(np.flatnonzero(core.action_masks())))
        return a if env_id == ACT else core.act_to_text(a)

    compared = 0
    for seed in range(25):
        env.reset(seed=seed)
        over = False
        for _ in range(int(rng.integers(0, 4))):
            _, _, t, tr, _ = env.step(act())
            if t or tr:
                over = True
                break
        if over:
            continue
        clone = pickle.loads(pickle.dumps(env))
        for _ in range(20):
            a = act()
            (o1, r1, t1, tr1, i1), (o2, r2, t2, tr2, i2) = env.step(a), clone.step(a)
            assert same_obs(o1, o2) and (r1, t1, tr1) == (r2, t2, tr2)
            assert i1["user_text"] == i2["user_text"] and i1["reward_terms"] == i2["reward_terms"]
            assert np.array_equal(core.action_masks(), clone.unwrapped.action_masks())
            compared += 1
            if t1 or tr1:
                break
    assert compared > 40
