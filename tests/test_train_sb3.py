"""Training scripts as subprocesses with tiny budgets (CleanRL-style smoke tests), resume, errors."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agents.sb3 import SB3Agent, latest_checkpoint, load_model
from dialog_env.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "ppo": ["--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1"],
    "maskable_ppo": ["--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1"],
    "a2c": ["--hp", "n_steps=8"],
    "dqn": ["--hp", "learning_starts=64", "--hp", "buffer_size=2000", "--hp", "target_update_interval=100"],
}


def train_cmd(run_dir: Path, algo: str, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "scripts" / "train_sb3.py"),
        "--algo", algo,
        "--total-timesteps", str(steps),
        "--n-envs", "2",
        "--eval-freq", "256",
        "--checkpoint-freq", "256",
        "--eval-episodes", "4",
        "--run-dir", str(run_dir),
        "--no-progress-bar",
        *TINY[algo],
        *extra,
    ]  # fmt: skip


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "maskable_ppo"])
def test_train_script_writes_a_complete_run_folder(tmp_path, algo):
    run_dir = tmp_path / "run"
    r = run(train_cmd(run_dir, algo, 512))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"run folder: {run_dir}" in r.stdout
    for name in ("config.yaml", "metrics.json", "best_model.zip", "final_model.zip", "learning_curve.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["algo"] == algo and config["resolved_hyperparams"]["n_envs"] >= 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["evals"] and metrics["num_timesteps"] >= 512
    assert {"success", "return", "contradiction_rate"} <= set(metrics["evals"][-1])
    assert set(metrics["references"]) == {"rule", "oracle"}
    assert any((run_dir / "tb").rglob("events.out.tfevents.*"))
    if algo == "dqn":
        assert any((run_dir / "checkpoints").glob("step_*.replay_buffer.pkl"))
    model = load_model(run_dir)
    assert model.num_timesteps >= 256
    records = evaluate(lambda: SB3Agent(model), split="test", episodes=3, seed=0)
    assert len(records) == 3


def test_tensorboard_logs_every_reward_term(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    r = run(train_cmd(run_dir, "maskable_ppo", 1024))
    assert r.returncode == 0, r.stderr[-2000:]
    events = EventAccumulator(str(next((run_dir / "tb").iterdir())))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for term in ("task_success", "turn_cost", "rejection", "persona_consistency", "redundancy", "discovery"):
        assert f"reward/{term}" in tags
    assert {"eval/success", "eval/return", "charts/success_rate"} <= tags


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, "maskable_ppo", 100_000)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while latest_checkpoint(run_dir) is None or latest_checkpoint(run_dir).name == "step_256.zip":
            assert proc.poll() is None and time.time() < deadline, "training ended or stalled before two checkpoints"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = latest_checkpoint(run_dir)
    done = int(ckpt.stem.split("_")[1])
    assert done >= 512 and not (run_dir / "final_model.zip").exists()
    target = done + 1024
    resume = [sys.executable, str(ROOT / "scripts" / "train_sb3.py"), "--resume", str(run_dir)]
    r = run([*resume, "--total-timesteps", str(target), "--no-progress-bar"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"from step {done}" in r.stdout
    final = load_model(run_dir / "final_model.zip")
    assert target <= final.num_timesteps < 2 * target  # the step count continued instead of restarting
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = [e["num_timesteps"] for e in metrics["evals"]]
    assert steps == sorted(steps) and steps[-1] >= target


def test_resume_needs_a_run_with_a_checkpoint(tmp_path):
    r = run([sys.executable, str(ROOT / "scripts" / "train_sb3.py"), "--resume", str(tmp_path)])
    assert r.returncode == 2 and "not a run folder" in r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["--algo", "sac"],
            "unknown algorithm 'sac'; expected one of ['ppo', 'a2c', 'dqn', 'maskable_ppo', 'recurrent_ppo']",
        ),
        (["--env-id", "CartPole-v1"], "unknown environment 'CartPole-v1'"),
        (["--split", "holdout"], "unknown split 'holdout'"),
        (["--hp", "learning_rat=0.1"], "does not take ['learning_rat']; allowed: ["),
        (["--hp", "oops"], "expected key=value"),
        (["--total-timesteps", "0"], "total_timesteps: expected a positive integer"),
        (["--vec-env", "ray"], "vec_env: expected one of ['dummy', 'subproc']"),
        (["--user", "nobody"], "user: unknown user 'nobody'"),
        (["--hp", "learning_rate=fast"], "hyperparams: maskable_ppo rejected"),
    ],
)
def test_bad_arguments_list_what_is_allowed(tmp_path, args, needle):
    r = run([sys.executable, str(ROOT / "scripts" / "train_sb3.py"), "--run-dir", str(tmp_path / "r"), *args])
    assert r.returncode == 2
    assert needle in r.stderr
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_training_against_another_user(tmp_path):
    # The cooperative policy-played user: trains and evaluates against it, recorded in the run.
    run_dir = tmp_path / "run"
    user = "dialog_env.users.adversarial:PolicyUser"
    r = run(train_cmd(run_dir, "maskable_ppo", 256, "--user", user))
    assert r.returncode == 0, r.stderr[-2000:]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["user"] == user
    from agents.sb3.config import TrainConfig

    assert TrainConfig(user=user).env_kwargs()["user"] == user
    assert "user" not in TrainConfig().env_kwargs()  # the default stays out of the env kwargs


def test_subprocess_vec_env_and_cli_entry_point(tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, "ppo", 256, "--vec-env", "subproc")
    cmd[1:2] = ["-m", "dialog_env.cli", "train", "sb3"]
    r = run(cmd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run_dir / "final_model.zip").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["vec_env"] == "subproc"


def test_rl2_on_returning_users_trains_evaluates_per_session_and_loads(tmp_path):
    """RecurrentPPO with the previous action and reward in the observation on PersonaRecSessions-v0."""
    from dialog_env.envs.sessions import evaluate_sessions

    run_dir = tmp_path / "rl2"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "train_sb3.py"), "--algo", "recurrent_ppo",
        "--env-id", "dialog_env/PersonaRecSessions-v0", "--previous-action-reward", "--sessions", "2",
        "--total-timesteps", "512", "--n-envs", "2", "--eval-freq", "256", "--checkpoint-freq", "256",
        "--eval-episodes", "3", "--run-dir", str(run_dir), "--no-progress-bar",
        "--hp", "n_steps=64", "--hp", "batch_size=64",
    ]  # fmt: skip
    r = run(cmd)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"success", "return", "re_asks", "contradiction_rate"} <= set(metrics["evals"][-1])
    assert set(metrics["references"]) == {"rule", "rule_memory"}
    model = load_model(run_dir)
    assert type(model).__name__ == "RecurrentPPO" and type(model.policy).__name__ == "MaskedLstmPolicy"
    # The policy reads the mask from the observation's tail and never picks a masked act.
    import numpy as np

    n = model.action_space.n
    for allowed in (3, n - 1):
        obs = np.random.default_rng(allowed).random(model.observation_space.shape, dtype=np.float32)
        obs[-n:] = 0.0
        obs[-n + allowed] = 1.0
        for deterministic in (True, False):
            action, _ = model.predict(obs, episode_start=np.array([True]), deterministic=deterministic)
            assert int(action) == allowed
    rows = evaluate_sessions(lambda: SB3Agent(model), split="test", episodes=2, sessions=2, previous_action_reward=True)
    assert len(rows) == 2 and all(len(r) == 2 for r in rows)


def test_previous_action_reward_wrapper():
    import gymnasium as gym
    import numpy as np
    from gymnasium.utils.env_checker import check_env

    from dialog_env.wrappers import PreviousActionReward

    env = PreviousActionReward(gym.make("dialog_env/PersonaRecSessions-v0", split="train").unwrapped)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    n = env.action_space.n
    assert obs.shape == (env.env.observation_space.shape[0] + n + 1,) and not obs[-n - 1 :].any()
    action = int(np.flatnonzero(info["action_mask"])[0])
    obs, reward, *_ = env.step(action)
    assert obs[-n - 1 + action] == 1.0 and obs[-n - 1 : -1].sum() == 1.0
    assert obs[-1] == pytest.approx(np.clip(reward / 20.0, -1, 1))
    with pytest.raises(ValueError, match="needs a Box observation and a Discrete action space"):
        PreviousActionReward(gym.make("dialog_env/PersonaRecText-v0"))
