"""Checkpoint files of an SB3 run: ``checkpoints/step_<n>.zip``, written atomically."""

from __future__ import annotations

import io
import re
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

from dialog_env.io import atomic_write_bytes

CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.zip$")
"""File names of checkpoints; the group is the step count."""


def atomic_save_model(model: BaseAlgorithm, path: Path) -> Path:
    """Save a model zip atomically (serialised in memory, then temp file + rename)."""
    buf = io.BytesIO()
    model.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most steps in ``run_dir/checkpoints``, or None."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return max(found)[1] if found else None
