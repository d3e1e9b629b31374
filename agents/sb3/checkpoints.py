"""Checkpoints of an SB3 run, complete or not at all.

A checkpoint at ``n`` env steps is a set of files in ``checkpoints/``:

- ``step_<n>.zip``: the model (SB3's own format: weights, optimizer, step and update counters, the
  last observations);
- ``step_<n>.replay_buffer.pkl``: the replay buffer (off-policy algorithms only);
- ``step_<n>.best.zip``: ``best_model.zip`` as it was then (a hard link where the file system has
  them), so a resume never keeps a best model from the discarded part of the run;
- ``step_<n>.state.pkl``, written last: the training envs (each pickled, mid-episode), the random
  number generators, a recurrent policy's LSTM states (which SB3 leaves out of its zip) and
  ``metrics.json`` as it was then. Its presence marks the checkpoint complete.

Checkpoints are taken at rollout boundaries (after an update, before the next rollout), so a
resumed run repeats no update and loses none: it continues exactly where the checkpoint was and
ends with the uninterrupted run's update count and, seed for seed, its weights.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from dialog_env.io import atomic_write_bytes

CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.zip$")
"""File names of checkpoint models; the group is the step count."""
_PART = re.compile(r"^step_(\d+)\.(zip|state\.pkl|best\.zip|replay_buffer\.pkl)$")
_TMP = re.compile(r"^\..*\.tmp$")
STATE_VERSION = 1


def atomic_save_model(model: BaseAlgorithm, path: Path) -> Path:
    """Save a model zip atomically (serialised in memory, then temp file + rename)."""
    buf = io.BytesIO()
    model.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


@dataclass
class CheckpointScan:
    """What ``checkpoints/`` holds: complete checkpoints (by step), partial ones, stray temp files."""

    complete: dict[int, Path] = field(default_factory=dict)
    partial: dict[int, list[Path]] = field(default_factory=dict)
    temp: list[Path] = field(default_factory=list)

    @property
    def latest(self) -> Path | None:
        """The model zip of the newest complete checkpoint."""
        return self.complete[max(self.complete)] if self.complete else None


def scan_checkpoints(run_dir: Path) -> CheckpointScan:
    """Sort the files of ``run_dir/checkpoints`` (and temp files of ``run_dir``) into a :class:`CheckpointScan`."""
    scan = CheckpointScan()
    folder = Path(run_dir) / "checkpoints"
    scan.temp = [p for p in Path(run_dir).iterdir() if _TMP.match(p.name)] if Path(run_dir).is_dir() else []
    if not folder.is_dir():
        return scan
    parts: dict[int, list[Path]] = {}
    for p in folder.iterdir():
        if _TMP.match(p.name):
            scan.temp.append(p)
        elif m := _PART.match(p.name):
            parts.setdefault(int(m.group(1)), []).append(p)
    for step, files in parts.items():
        names = {p.name for p in files}
        if f"step_{step}.zip" in names and f"step_{step}.state.pkl" in names:
            scan.complete[step] = folder / f"step_{step}.zip"
        else:
            scan.partial[step] = sorted(files)
    return scan


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The model zip of the newest complete checkpoint in ``run_dir/checkpoints``, or None."""
    return scan_checkpoints(run_dir).latest


def checkpoint_step(path: Path) -> int:
    """The step count of a checkpoint model zip (``step_<n>.zip``)."""
    m = CHECKPOINT_NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a checkpoint (step_<n>.zip)")
    return int(m.group(1))


def clean_run(run_dir: Path, log: Any = print) -> CheckpointScan:
    """Remove partial checkpoints and stray temp files (a kill left them), reporting each.

    Returns:
        The scan after cleaning.
    """
    scan = scan_checkpoints(run_dir)
    for p in scan.temp:
        log(f"removing {p} (an interrupted write)")
        p.unlink(missing_ok=True)
    for step, files in sorted(scan.partial.items()):
        log(f"ignoring partial checkpoint at step {step} ({', '.join(p.name for p in files)}): removed")
        for p in files:
            p.unlink(missing_ok=True)
    return scan_checkpoints(run_dir)


def _snapshot_envs(venv: VecEnv) -> list[bytes] | None:
    try:
        return list(venv.env_method("snapshot"))
    except Exception as e:  # a plug-in env or reward that cannot be pickled
        warnings.warn(
            f"the training envs cannot be pickled ({type(e).__name__}: {e}); a resume from this checkpoint "
            "starts fresh envs instead of continuing their dialogues",
            stacklevel=2,
        )
        return None


def _reward_states(venv: VecEnv) -> dict[str, Any] | None:
    """Learned reward terms' states, read once per process the envs run in, and which process each env was in."""
    try:
        env_pid = venv.env_method("process_id")
    except AttributeError:  # envs without the training wrapper: nothing to keep
        return None
    by_pid = {pid: venv.env_method("reward_states", indices=[env_pid.index(pid)])[0] for pid in dict.fromkeys(env_pid)}
    if not any(by_pid.values()):
        return None
    return {"states": by_pid, "env_pid": env_pid}


def restore_env_reward_states(venv: VecEnv, saved: dict[str, Any]) -> None:
    """Load what :func:`save_checkpoint` kept of the learned reward terms, once into each process the envs run in."""
    env_pid = saved["env_pid"]
    if len(env_pid) != venv.num_envs:
        raise ValueError(f"checkpoint: learned reward states of {len(env_pid)} envs for {venv.num_envs} envs")
    now = venv.env_method("process_id")
    for pid in dict.fromkeys(now):
        i = now.index(pid)  # the first env of this process; its process then says which state it had
        venv.env_method("restore_reward_states", saved["states"][env_pid[i]], indices=[i])


def _rng_state(model: BaseAlgorithm) -> dict[str, Any]:
    import torch

    space_rng = getattr(model.action_space, "_np_random", None)
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "action_space": None if space_rng is None else space_rng.bit_generator.state,
    }


_RUNTIME = ("_last_lstm_states",)
"""Attributes SB3 leaves out of its zip that a resume mid-episode needs (RecurrentPPO's LSTM states)."""


def _runtime_state(model: BaseAlgorithm) -> dict[str, Any]:
    import copy

    return {k: copy.deepcopy(getattr(model, k)) for k in _RUNTIME if getattr(model, k, None) is not None}


def restore_runtime(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Put back what :func:`save_checkpoint` kept beside the zip (the envs' LSTM states of a recurrent policy)."""
    for k, v in state.get("runtime", {}).items():
        setattr(model, k, v)


def restore_rng(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Put back the generators :func:`save_checkpoint` recorded (after SB3's ``load`` reseeded them)."""
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("action_space") is not None:
        model.action_space.seed(0)  # creates the generator; its state is replaced next
        model.action_space.np_random.bit_generator.state = state["action_space"]


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists() and os.path.samefile(src, dst):
        return  # rename() of two links to one file does nothing and would leave the temp link behind
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_checkpoint(model: BaseAlgorithm, venv: VecEnv, run_dir: Path, metrics: dict[str, Any], keep: int) -> Path:
    """Write a complete checkpoint at ``model.num_timesteps`` and prune all but the newest ``keep``.

    Args:
        model: The algorithm, at a rollout boundary.
        venv: Its training envs (each with a ``snapshot()`` method returning its pickle).
        run_dir: The run folder.
        metrics: ``metrics.json``'s content as of now.
        keep: Complete checkpoints kept on disk.

    Returns:
        The model zip.
    """
    folder = Path(run_dir) / "checkpoints"
    step = int(model.num_timesteps)
    path = atomic_save_model(model, folder / f"step_{step}.zip")
    if isinstance(model, OffPolicyAlgorithm):
        buf = io.BytesIO()
        model.save_replay_buffer(buf)
        atomic_write_bytes(folder / f"step_{step}.replay_buffer.pkl", buf.getvalue())
    best = Path(run_dir) / "best_model.zip"
    if best.is_file():
        _link_or_copy(best, folder / f"step_{step}.best.zip")
    state = {
        "version": STATE_VERSION,
        "num_timesteps": step,
        "envs": _snapshot_envs(venv),
        "rng": _rng_state(model),
        "metrics": metrics,
        "runtime": _runtime_state(model),
        "reward_states": _reward_states(venv),
    }
    atomic_write_bytes(folder / f"step_{step}.state.pkl", pickle.dumps(state))  # last: marks it complete
    scan = scan_checkpoints(run_dir)
    for old in sorted(scan.complete)[:-keep]:
        for suffix in (".zip", ".state.pkl", ".best.zip", ".replay_buffer.pkl"):
            (folder / f"step_{old}{suffix}").unlink(missing_ok=True)
    return path


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The ``step_<n>.state.pkl`` beside a checkpoint model zip."""
    step = checkpoint_step(checkpoint)
    with open(Path(checkpoint).with_name(f"step_{step}.state.pkl"), "rb") as f:
        return pickle.load(f)


def restore_best_model(checkpoint: Path, run_dir: Path) -> None:
    """Make ``best_model.zip`` the one recorded with ``checkpoint`` (or remove it if there was none yet)."""
    step = checkpoint_step(checkpoint)
    recorded = Path(checkpoint).with_name(f"step_{step}.best.zip")
    best = Path(run_dir) / "best_model.zip"
    if recorded.is_file():
        _link_or_copy(recorded, best)
    else:
        best.unlink(missing_ok=True)
