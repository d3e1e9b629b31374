"""Behaviour cloning before RL (agents/sb3/pretrain.py): layout, learning, the run, bad input."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from agents.sb3.pretrain import _recurrent_pass, behaviour_clone, play_teacher
from agents.sb3.recurrent import MaskedLstmPolicy
from agents.sb3.train import _wrap_for_sb3

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = "dialog_env/PersonaRecSessions-v0"


def make_env(env_id: str = SESSIONS, recurrent: bool = True) -> gym.Env:
    kwargs = {"sessions": 2} if env_id == SESSIONS else {}
    env = gym.make(env_id, split="train", render_mode=None, **kwargs)
    return _wrap_for_sb3(env, previous_action_reward=recurrent, mask_in_observation=recurrent)


def recurrent_model(seed: int = 0):
    from sb3_contrib import RecurrentPPO

    kwargs = {"net_arch": [32], "lstm_hidden_size": 16}
    return RecurrentPPO(MaskedLstmPolicy, make_env(), n_steps=16, batch_size=16, seed=seed, policy_kwargs=kwargs)


def mean_log_prob(model, episodes) -> float:
    with th.no_grad():
        log_prob, _, _, weight, _ = _recurrent_pass(model.policy, episodes, 0.99, model.device, False)
    return float((log_prob * weight).sum() / weight.sum())


def test_teacher_episodes_are_what_the_policy_sees():
    episodes = play_teacher(make_env, "planner_memory", 3, seed=5)
    again = play_teacher(make_env, "planner_memory", 3, seed=5)
    env = make_env()
    for e, f in zip(episodes, again, strict=True):
        assert e.actions == f.actions and e.rewards == f.rewards  # seeded: the same dialogues
        assert all(o.shape == env.observation_space.shape for o in e.obs)
        assert all(m[a] for m, a in zip(e.masks, e.actions, strict=True))  # the teacher plays allowed acts
        assert np.array_equal(e.obs[0][-len(e.masks[0]) :], e.masks[0])  # the mask is the observation's tail
    returns = episodes[0].returns(0.5)
    r = episodes[0].rewards
    assert returns[-1] == pytest.approx(r[-1]) and returns[-2] == pytest.approx(r[-2] + 0.5 * r[-1])


def test_recurrent_pass_matches_playing_step_by_step():
    """Episodes side by side through the LSTM give each step the log-probability sequential play gives it."""
    model = recurrent_model()
    episodes = play_teacher(make_env, "planner_memory", 3, seed=11)
    log_prob, _, _, weight, _ = _recurrent_pass(model.policy, episodes, 0.99, model.device, False)
    length = int(weight.reshape(3, -1).shape[1])
    policy = model.policy
    lstm = policy.lstm_actor
    with th.no_grad():
        for i, e in enumerate(episodes):
            state = (th.zeros(lstm.num_layers, 1, lstm.hidden_size), th.zeros(lstm.num_layers, 1, lstm.hidden_size))
            for t, (obs, action) in enumerate(zip(e.obs, e.actions, strict=True)):
                dist, state = policy.get_distribution(th.as_tensor(obs[None]), state, th.tensor([float(t == 0)]))
                expected = dist.log_prob(th.tensor([action]))
                assert float(log_prob[i * length + t]) == pytest.approx(float(expected), abs=1e-4)
    assert float(weight.sum()) == sum(len(e.actions) for e in episodes)  # padding carries no weight


def test_cloning_raises_the_teachers_likelihood_recurrent_and_flat():
    from sb3_contrib import MaskablePPO

    train = play_teacher(make_env, "planner_memory", 24, seed=0)
    model = recurrent_model()
    before = mean_log_prob(model, train)
    first = behaviour_clone(model, train, epochs=1, lr=3e-3, batch_episodes=8)
    last = behaviour_clone(model, train, epochs=30, lr=3e-3, batch_episodes=8)
    assert mean_log_prob(model, train) > before + 1.0
    assert last["loss"] < first["loss"] and first["accuracy"] < last["accuracy"] <= 1.0

    flat_env = functools.partial(make_env, "dialog_env/PersonaRec-v0", False)
    flat = play_teacher(flat_env, "planner", 24, seed=0)
    mppo = MaskablePPO("MlpPolicy", flat_env(), n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [32]})
    first = behaviour_clone(mppo, flat, epochs=1, lr=3e-3, batch_episodes=8)
    last = behaviour_clone(mppo, flat, epochs=15, lr=3e-3, batch_episodes=8)
    assert last["loss"] < first["loss"] and last["accuracy"] > first["accuracy"]


def test_train_with_a_teacher_starts_the_curve_at_the_cloned_policy(tmp_path):
    run_dir = tmp_path / "rl2_bc"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "train_sb3.py"), "--algo", "recurrent_ppo",
        "--env-id", SESSIONS, "--previous-action-reward", "--sessions", "2",
        "--bc-teacher", "planner_memory", "--bc-episodes", "6", "--bc-epochs", "2",
        "--total-timesteps", "128", "--n-envs", "2", "--eval-freq", "128", "--checkpoint-freq", "128",
        "--eval-episodes", "2", "--run-dir", str(run_dir), "--no-progress-bar",
        "--hp", "n_steps=64", "--hp", "batch_size=64",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cloning planner_memory: 6 dialogues" in r.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    bc = metrics["bc"]
    assert bc["teacher"] == "planner_memory" and bc["episodes"] == 6 and bc["steps"] >= 6
    assert 0.0 <= bc["accuracy"] <= 1.0
    steps = [e["num_timesteps"] for e in metrics["evals"]]
    assert steps[0] == 0 and steps[-1] >= 128


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--bc-teacher", "oracle"], "bc_teacher: 'oracle' reads the hidden persona"),
        (["--bc-teacher", "nobody"], "bc_teacher: unknown agent 'nobody'; expected one of ["),
        (["--bc-teacher", "planner", "--bc-epochs", "0"], "bc_epochs: expected a positive integer, got 0"),
        (["--bc-teacher", "planner", "--bc-lr", "-1"], "bc_lr: expected a positive number, got -1.0"),
    ],
)
def test_bad_cloning_arguments_name_the_field(tmp_path, args, needle):
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_sb3.py"), "--run-dir", str(tmp_path / "r"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 2 and needle in r.stderr
    assert not (tmp_path / "r").exists()


def test_hyper_parameter_overrides_read_numbers_as_written():
    from agents.sb3.config import parse_overrides

    got = parse_overrides(["learning_rate=1e-4", "ent_coef=0.005", "n_steps=64", "policy=MlpPolicy", "net=[64, 64]"])
    assert got == {"learning_rate": 1e-4, "ent_coef": 0.005, "n_steps": 64, "policy": "MlpPolicy", "net": [64, 64]}
    assert isinstance(got["learning_rate"], float) and isinstance(got["n_steps"], int)
