"""Training that survives interruptions: exact resume, partial checkpoints, runs killed before their first
checkpoint, and SIGINT/SIGTERM that save and print the resume command (SB3 and the LM trainers)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.sb3 import callbacks as sb3_callbacks
from agents.sb3.checkpoints import scan_checkpoints
from agents.sb3.config import TrainConfig
from agents.sb3.policy import load_model
from dialog_env.interrupt import EXIT_INTERRUPTED
from tests.lm_fixtures import build_tiny_lm

sb3_train = importlib.import_module("agents.sb3.train")
ROOT = Path(__file__).resolve().parents[1]


class Crash(RuntimeError):
    """Stands in for a kill at a given step (the process state is simply abandoned)."""


def sb3_config(algo: str) -> TrainConfig:
    hp = {"n_steps": 64, "batch_size": 64, "n_epochs": 2} if algo != "dqn" else {"learning_starts": 64}
    # RL² on returning users: the LSTM's state mid-episode must survive the resume too.
    rl2 = {"env_id": "dialog_env/PersonaRecSessions-v0", "previous_action_reward": True}
    return TrainConfig(
        **(rl2 if algo == "recurrent_ppo" else {}),
        algo=algo,
        total_timesteps=1024,
        n_envs=2,
        eval_freq=192,
        checkpoint_freq=300,
        eval_episodes=4,
        progress_bar=False,
        hyperparams=hp,
    )


def crash_at(monkeypatch, step: int) -> None:
    original = sb3_callbacks.EvalAndCheckpoint._on_step

    def on_step(self):
        if self.num_timesteps >= step:
            raise Crash(step)
        return original(self)

    monkeypatch.setattr(sb3_callbacks.EvalAndCheckpoint, "_on_step", on_step)


def same_weights(a, b) -> float:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def evals(run: Path) -> list[tuple[int, float, float]]:
    rows = json.loads((run / "metrics.json").read_text())["evals"]
    return [(e["num_timesteps"], e["return"]["mean"], e["success"]["mean"]) for e in rows]


@pytest.fixture(scope="module")
def sb3_reference(tmp_path_factory):
    """Uninterrupted runs, one per algorithm, to compare resumed runs with."""
    root = tmp_path_factory.mktemp("reference")
    return {algo: sb3_train.train(sb3_config(algo), root / algo) for algo in ("maskable_ppo", "dqn", "recurrent_ppo")}


@pytest.mark.parametrize("algo", ["maskable_ppo", "dqn", "recurrent_ppo"])
def test_sb3_resume_after_a_crash_is_the_uninterrupted_run(sb3_reference, tmp_path, monkeypatch, algo):
    run = tmp_path / "run"
    crash_at(monkeypatch, 700)  # after the checkpoint at ~300-384 and evaluations past it
    with pytest.raises(Crash):
        sb3_train.train(sb3_config(algo), run)
    monkeypatch.undo()
    scan = scan_checkpoints(run)
    assert scan.complete and max(scan.complete) < 700 and not (run / "final_model.zip").exists()
    sb3_train.resume(run)
    ref, got = load_model(sb3_reference[algo] / "final_model.zip"), load_model(run / "final_model.zip")
    # The same steps, the same number of updates, and seed for seed the same weights and evaluations.
    assert got.num_timesteps == ref.num_timesteps >= 1024
    assert got._n_updates == ref._n_updates > 0
    assert same_weights(got, ref) == 0.0
    assert evals(run) == evals(sb3_reference[algo])
    # The best model is the uninterrupted run's, not one from the discarded part.
    assert same_weights(load_model(run / "best_model.zip"), load_model(sb3_reference[algo] / "best_model.zip")) == 0.0


DISC = {"episodes": 20, "update_every": 64, "steps": 4, "batch": 32, "seed": 5}


def test_sb3_resume_keeps_the_learned_reward_term(tmp_path, monkeypatch):
    """A run rewarded by the discriminator: the checkpoint carries its state, so the resume is the uninterrupted run."""
    from rewards import DEFAULT_WEIGHTS
    from rewards.learned import reward_states

    weights = {**DEFAULT_WEIGHTS, "discriminator": {"weight": 1.0, "kwargs": DISC}}
    cfg = dataclasses.replace(sb3_config("maskable_ppo"), reward_weights=weights, total_timesteps=768)
    ref = sb3_train.train(cfg, tmp_path / "ref")
    ref_disc = reward_states()[0]["state"]
    run = tmp_path / "run"
    crash_at(monkeypatch, 600)
    with pytest.raises(Crash):
        sb3_train.train(cfg, run)  # a fresh run: the reference's discriminator is forgotten, not continued
    monkeypatch.undo()
    (step,) = [max(scan_checkpoints(run).complete)]
    saved = pickle.loads((run / "checkpoints" / f"step_{step}.state.pkl").read_bytes())["reward_states"]
    assert [s["state"]["updates"] for s in next(iter(saved["states"].values()))] != [0]  # it had learned
    sb3_train.resume(run)
    assert same_weights(load_model(run / "final_model.zip"), load_model(ref / "final_model.zip")) == 0.0
    assert evals(run) == evals(ref)
    got_disc = reward_states()[0]["state"]
    assert got_disc["updates"] == ref_disc["updates"] > 0 and got_disc["n_policy"] == ref_disc["n_policy"]
    for k, v in ref_disc["net"].items():
        assert torch.equal(got_disc["net"][k], v)


def test_sb3_run_killed_before_its_first_checkpoint_starts_over(sb3_reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    crash_at(monkeypatch, 100)
    with pytest.raises(Crash):
        sb3_train.train(sb3_config("maskable_ppo"), run)
    monkeypatch.undo()
    assert (run / "config.yaml").is_file() and not scan_checkpoints(run).complete
    with pytest.raises(ValueError, match="a run already exists here"):
        sb3_train.train(sb3_config("maskable_ppo"), run)
    sb3_train.resume(run)
    assert "no complete checkpoint yet, starting over" in capsys.readouterr().out
    ref = load_model(sb3_reference["maskable_ppo"] / "final_model.zip")
    assert same_weights(load_model(run / "final_model.zip"), ref) == 0.0


def test_sb3_partial_checkpoints_and_temp_files_are_reported_and_removed(sb3_reference, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sb3_reference["maskable_ppo"], run)
    folder = run / "checkpoints"
    newest = max(scan_checkpoints(run).complete)
    # A kill during the next checkpoint's write: its model is there, its state is not; temp files remain.
    (folder / f"step_{newest + 128}.zip").write_bytes((folder / f"step_{newest}.zip").read_bytes())
    (folder / f".step_{newest + 128}.state.pkl.x1.tmp").write_bytes(b"half")
    (run / ".metrics.json.x2.tmp").write_text("{")
    sb3_train.resume(run, total_timesteps=newest + 256)
    out = capsys.readouterr().out
    assert f"ignoring partial checkpoint at step {newest + 128}" in out and out.count("an interrupted write") == 2
    assert f"from step {newest}" in out
    assert not list(run.rglob("*.tmp"))
    assert load_model(run / "final_model.zip").num_timesteps >= newest + 256
    assert all(p.name.endswith((".zip", ".pkl")) for p in folder.iterdir())


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dialog_env.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could signal it"
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sb3_signal_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, sig):
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "dialog_env.cli", "train", "sb3", "--run-dir", str(run), "--total-timesteps", "1000000",
        "--n-envs", "2", "--eval-freq", "100000", "--eval-episodes", "2", "--checkpoint-freq", "100000",
        "--hp", "n_steps=64", "--hp", "batch_size=64", "--no-progress-bar",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any((run / "tb").rglob("events.out.tfevents.*")), proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert f"dialog-env train sb3 --resume {run}" in err and "Traceback" not in err
    scan = scan_checkpoints(run)
    (step,) = scan.complete  # the checkpoint the signal asked for (none was due before it)
    assert step > 0 and not scan.partial and not (run / "final_model.zip").exists()
    r = run_cli("train", "sb3", "--resume", str(run), "--total-timesteps", str(step + 128), "--no-progress-bar")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"from step {step}" in r.stdout
    assert load_model(run / "final_model.zip").num_timesteps >= step + 128


# -- LM trainers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("tiny_lm")))


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from agents.collect import CollectConfig, collect

    folder = tmp_path_factory.mktemp("demos")
    collect(CollectConfig(episodes=16), folder, progress=False)
    return folder


def sft_config(tiny: str, demos: Path):
    from agents.sft import SFTTrainConfig

    return SFTTrainConfig(
        model=tiny, data=str(demos), max_steps=5, save_steps=2, per_device_train_batch_size=2, logging_steps=1
    )


def final_weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "final_model" / "model.safetensors"))


def lm_crash_at(monkeypatch, step: int) -> None:
    from transformers import TrainerCallback

    import agents.lm_runs as lm_runs

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                raise Crash(step)

    monkeypatch.setattr(lm_runs, "stop_callback", CrashAt)  # in place of the signal callback


@pytest.fixture(scope="module")
def sft_reference(tiny, demos, tmp_path_factory):
    from agents.sft import train_sft

    return train_sft(sft_config(tiny, demos), tmp_path_factory.mktemp("sft_ref") / "run")


def test_sft_resume_after_a_crash_is_the_uninterrupted_run(tiny, demos, sft_reference, tmp_path, monkeypatch):
    from agents.sft import resume_sft, train_sft

    run = tmp_path / "run"
    lm_crash_at(monkeypatch, 3)  # checkpoint-2 is complete; step 3 is lost
    with pytest.raises(Crash):
        train_sft(sft_config(tiny, demos), run)
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    resume_sft(run)
    state = json.loads((run / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())
    ref_state = json.loads((sft_reference / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["global_step"] == ref_state["global_step"] == 5
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    ref_losses = [e["loss"] for e in ref_state["log_history"] if "loss" in e]
    assert len(losses) == len(ref_losses) == 5
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    got, ref = final_weights(run), final_weights(sft_reference)
    assert max(float(np.abs(got[k] - ref[k]).max()) for k in ref) < 1e-5


def test_lm_partial_checkpoint_is_ignored_and_a_run_without_one_starts_over(tiny, demos, tmp_path, capsys):
    import shutil

    from agents.sft import resume_sft

    run = tmp_path / "run"
    run.mkdir()
    # Killed before the first checkpoint: only the config (and a half-written checkpoint folder).
    import dataclasses

    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(sft_config(tiny, demos))))
    partial = run / "checkpoints" / "checkpoint-2"
    partial.mkdir(parents=True)
    (partial / "trainer_state.json").write_text('{"global_step": 2, "log_hist')
    resume_sft(run, max_steps=2)
    out = capsys.readouterr().out
    assert "ignoring partial checkpoint checkpoint-2 (trainer_state.json is cut short)" in out
    assert "no complete checkpoint yet, starting over" in out
    assert json.loads((partial / "trainer_state.json").read_text())["global_step"] == 2
    # A complete checkpoint beside a partial newer one: the complete one is resumed.
    newer = run / "checkpoints" / "checkpoint-4"
    shutil.copytree(partial, newer)
    (newer / "trainer_state.json").unlink()
    resume_sft(run, max_steps=3)
    out = capsys.readouterr().out
    assert "ignoring partial checkpoint checkpoint-4 (no trainer_state.json)" in out
    assert "from checkpoint-2" in out
    assert (run / "checkpoints" / "checkpoint-3").is_dir() and not newer.exists()


def test_sft_signal_saves_a_checkpoint_and_prints_the_resume_command(tiny, demos, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "dialog_env.cli", "train", "sft", "--model", tiny, "--data", str(demos),
        "--run-dir", str(run), "--max-steps", "100000", "--save-steps", "100000",
        "--per-device-train-batch-size", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any((run / "tb").rglob("events.out.tfevents.*")), proc)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert f"dialog-env train sft --resume {run}" in err and "Traceback" not in err
    (ckpt,) = (run / "checkpoints").glob("checkpoint-*")
    step = int(ckpt.name.split("-")[1])
    assert step >= 1 and json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step
    assert not (run / "final_model").exists()
    r = run_cli("train", "sft", "--resume", str(run), "--max-steps", str(step + 1))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"from checkpoint-{step}" in r.stdout and (run / "final_model" / "config.json").is_file()


def grpo_config(tiny: str):
    from agents.lm_train import LMTrainConfig

    return LMTrainConfig(
        model=tiny, tasks=4, num_generations=2, per_device_train_batch_size=4, max_new_tokens=6, max_turns=2,
        max_steps=4, save_steps=1, num_iterations=2,
    )  # fmt: skip


def test_grpo_resume_mid_cycle_is_the_uninterrupted_run(tiny, tmp_path, monkeypatch):
    """A checkpoint between two iterations on the same rollouts: the resume trains on those rollouts again."""
    from agents.lm_train import resume_lm, train_lm

    ref = train_lm(grpo_config(tiny), tmp_path / "ref")
    run = tmp_path / "run"
    lm_crash_at(monkeypatch, 2)  # checkpoint-1 holds rollouts sampled at step 1 and due again at step 2
    with pytest.raises(Crash):
        train_lm(grpo_config(tiny), run)
    monkeypatch.undo()
    resume_lm(run)
    got, want = final_weights(run), final_weights(ref)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) < 1e-5
    log = json.loads((run / "train_log.json").read_text())
    ref_log = json.loads((ref / "train_log.json").read_text())
    assert [e["step"] for e in log] == [e["step"] for e in ref_log]
    np.testing.assert_allclose([e["reward"] for e in log], [e["reward"] for e in ref_log], rtol=1e-5)


def test_grpo_resume_keeps_the_learned_reward_term(tiny, tmp_path, monkeypatch):
    """GRPO rewarded by the discriminator: the checkpoint carries its state, so later rollouts score the same."""
    from agents.lm_train import resume_lm, train_lm
    from rewards import DEFAULT_WEIGHTS
    from rewards.learned import reward_states

    disc = {**DISC, "update_every": 4}
    cfg = dataclasses.replace(
        grpo_config(tiny), reward_weights={**DEFAULT_WEIGHTS, "discriminator": {"weight": 1.0, "kwargs": disc}}
    )
    ref = train_lm(cfg, tmp_path / "ref")
    ref_updates = reward_states()[0]["state"]["updates"]
    run = tmp_path / "run"
    lm_crash_at(monkeypatch, 2)  # after checkpoint-1; the rollouts of step 3 are scored after the resume
    with pytest.raises(Crash):
        train_lm(cfg, run)
    monkeypatch.undo()
    saved = torch.load(run / "checkpoints" / "checkpoint-1" / "rollout_state.pt", weights_only=False)
    assert saved["reward_states"][0]["state"]["updates"] > 0  # it had learned before the checkpoint
    resume_lm(run)
    assert reward_states()[0]["state"]["updates"] == ref_updates
    got, want = final_weights(run), final_weights(ref)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) < 1e-5
    log = json.loads((run / "train_log.json").read_text())
    ref_log = json.loads((ref / "train_log.json").read_text())
    np.testing.assert_allclose([e["reward"] for e in log], [e["reward"] for e in ref_log], rtol=1e-5)


def test_a_run_killed_after_its_last_checkpoint_writes_the_final_model_without_another_step(
    sft_reference, tmp_path, capsys
):
    import shutil

    from agents.sft import resume_sft

    run = tmp_path / "run"
    shutil.copytree(sft_reference, run)
    shutil.rmtree(run / "final_model")  # the kill came between the last checkpoint and the final model
    resume_sft(run)
    assert "checkpoint-5 is the run's last step" in capsys.readouterr().out
    assert not (run / "checkpoints" / "checkpoint-6").exists()
    got, ref = final_weights(run), final_weights(sft_reference)
    assert max(float(np.abs(got[k] - ref[k]).max()) for k in ref) < 1e-6
    assert json.loads((run / "train_log.json").read_text()) == json.loads(
        (sft_reference / "train_log.json").read_text()
    )
