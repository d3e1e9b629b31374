"""What the LM trainers (SFT, GRPO) share: run folders, argument checks, LoRA, the final model.

A run folder holds ``config.yaml`` (the resolved configuration), ``checkpoints/`` (``--resume``
continues from the last), ``tb/`` (TensorBoard) and ``final_model/`` (the merged policy with its
tokenizer and prompt record). Under ``accelerate launch`` every process runs the trainer; only the
main one checks and writes the folder.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.prompts import save_policy_record
from dialog_env.cliargs import add_dataclass_arguments
from dialog_env.interrupt import STOP, TrainingInterrupted, stop_on_signals
from dialog_env.io import atomic_write_bytes, atomic_write_text
from dialog_env.lm import model_spec_problem, save_pretrained_atomic


@dataclass
class LMRunFields:
    """Fields of every LM trainer's configuration (SFT and GRPO), after their own."""

    lora: bool = True
    """train LoRA adapters (peft); --no-lora trains all weights"""
    lora_r: int = 16
    """LoRA rank"""
    lora_alpha: int = 32
    """LoRA alpha"""
    lora_layers: int = 0
    """put LoRA adapters only on the top this many transformer blocks (the backward pass then stops there,
    so steps are cheaper); 0: every block"""
    dtype: str = "float32"
    """weights dtype: float32 or bfloat16 (bf16 mixed precision; faster where the CPU has AVX512-BF16)"""
    logging_steps: int = 1
    """log every this many steps"""
    time_limit_min: float = 0.0
    """stop after this many minutes of training (checkpoint and final model still saved); 0: no limit"""


def check_counts(cfg: Any, error: type[Exception], positive: Iterable[str], non_negative: Iterable[str] = ()) -> None:
    """Raise ``error`` naming the first field that is not a positive (or non-negative) integer."""
    for names, low, what in ((positive, 1, "a positive integer"), (non_negative, 0, "an integer >= 0")):
        for name in names:
            v = getattr(cfg, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise error(f"{name}: expected {what}, got {v!r}")


def check_common(cfg: Any, error: type[Exception]) -> None:
    """Checks of the fields every LM trainer has: model, dtype and time limit."""
    problem = model_spec_problem(cfg.model)
    if problem:
        raise error(problem)
    if cfg.dtype not in ("float32", "bfloat16"):
        raise error(f"dtype: expected float32 or bfloat16, got {cfg.dtype!r}")
    if not cfg.time_limit_min >= 0:
        raise error(f"time_limit_min: expected minutes >= 0 (0: no limit), got {cfg.time_limit_min!r}")


def run_name(exp_name: str, seed: int) -> str:
    """``PersonaRecText-v0__<exp_name>__<seed>__<unix time>`` (CleanRL's run names)."""
    return f"dialog_env_PersonaRecText-v0__{exp_name}__{seed}__{int(time.time())}"


CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a Trainer checkpoint folder is incomplete (a kill during its write), or None if it is whole.

    The Trainer writes the weights, optimizer, scheduler and random states first and
    ``trainer_state.json`` last, so a parseable state at the folder's own step means the rest is there.
    """
    m = CHECKPOINT_DIR.match(folder.name)
    state = folder / "trainer_state.json"
    if m is None:
        return "not a checkpoint-<step> folder"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        step = json.loads(state.read_text())["global_step"]
    except (ValueError, KeyError, OSError):
        return "trainer_state.json is cut short"
    if step != int(m.group(1)):
        return f"trainer_state.json is at step {step}"
    if not any((folder / w).is_file() for w in _WEIGHTS):
        return "no weights"
    return None


def resume_point(run: Path, log: Any = print) -> Path | None:
    """The newest complete checkpoint of an LM run; partial ones and stray temp files are reported and removed.

    Returns:
        The checkpoint folder, or None if the run has none yet (it then starts over).
    """
    folder = run / "checkpoints"
    leftovers = [*run.glob(".*.tmp"), *run.glob(".final_model.*"), *(folder.glob(".*.tmp") if folder.is_dir() else [])]
    for tmp in leftovers:
        log(f"removing {tmp} (an interrupted write)")
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    complete: dict[int, Path] = {}
    if folder.is_dir():
        for ckpt in folder.iterdir():
            if (m := CHECKPOINT_DIR.match(ckpt.name)) and ckpt.is_dir():
                problem = checkpoint_problem(ckpt)
                if problem is None:
                    complete[int(m.group(1))] = ckpt
                else:
                    log(f"ignoring partial checkpoint {ckpt.name} ({problem}): removed")
                    shutil.rmtree(ckpt)
    return complete[max(complete)] if complete else None


def open_run(cfg: Any, run: Path, resume: bool, error: type[Exception]) -> Path | None:
    """Check a run folder and, for a new run, write its ``config.yaml`` (main process only).

    Returns:
        On resume, the checkpoint to continue from (None: the run starts over, killed before its first).

    Raises:
        error: A new run over an existing one.
    """
    if resume:
        ckpt = resume_point(run) if int(os.environ.get("RANK", "0")) == 0 else _newest(run)
        if ckpt is None:
            print(f"resuming {run}: no complete checkpoint yet, starting over", flush=True)
        else:
            print(f"resuming {run} from {ckpt.name}", flush=True)
        return ckpt
    if int(os.environ.get("RANK", "0")) == 0:
        if (run / "config.yaml").exists():
            raise error(f"{run}: a run already exists here; resume it with --resume")
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return None


def _newest(run: Path) -> Path | None:
    found = [
        (int(m.group(1)), p)
        for p in (run / "checkpoints").glob("checkpoint-*")
        if (m := CHECKPOINT_DIR.match(p.name)) and checkpoint_problem(p) is None
    ]
    return max(found)[1] if found else None


def stop_callback() -> Any:
    """Trainer callback: on a stop request (SIGINT/SIGTERM, see :mod:`dialog_env.interrupt`), save and stop.

    The step in progress finishes; the Trainer then writes a checkpoint and leaves its loop.
    """
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if STOP:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopOnSignal()


def _finished_at(trainer: Any, checkpoint: Path) -> bool:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    target = trainer.args.max_steps if trainer.args.max_steps > 0 else state.get("max_steps", 0)
    return target > 0 and state["global_step"] >= target


def train_interruptibly(trainer: Any, run: Path, checkpoint: Path | None, resume_command: str) -> None:
    """``trainer.train`` (from ``checkpoint``) under :func:`dialog_env.interrupt.stop_on_signals`.

    Raises:
        TrainingInterrupted: A signal stopped the run; its checkpoint is saved.
    """
    if checkpoint is not None and _finished_at(trainer, checkpoint):
        # Killed after its last checkpoint, before the final model: the Trainer, resumed there, would
        # train one step more than the run asked for, so only the weights and the log are read back.
        from transformers import TrainerState

        print(f"{checkpoint.name} is the run's last step; writing the final model", flush=True)
        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        return
    trainer.add_callback(stop_callback())
    with stop_on_signals():
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        if STOP:
            raise TrainingInterrupted(run, resume_command, trainer.state.global_step)


def load_run_config(run: Path, cls: type, error: type[Exception], max_steps: int | None = None) -> Any:
    """The configuration of an existing run (for ``--resume``), optionally with a new ``max_steps``."""
    if not (run / "config.yaml").is_file():
        raise error(f"{run}: not a run folder (no config.yaml)")
    cfg = cls(**yaml.safe_load((run / "config.yaml").read_text()))
    if max_steps is not None:
        cfg.max_steps = max_steps
    return cfg


def add_run_arguments(p: Any, cls: type) -> Any:
    """One flag per config field, plus ``--config``, ``--resume`` and ``--run-dir``."""
    add_dataclass_arguments(p, cls)
    p.add_argument("--config", default=None, help=f"YAML file of {cls.__name__} fields; flags override it")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.add_argument("--run-dir", default=None, help="exact run folder (default: <run-root>/<run name>)")
    return p


def lora_targets(model: Any, top_layers: int = 0, error: type[Exception] = ValueError) -> tuple[Any, Any]:
    """LoRA ``target_modules`` and ``layers_to_transform`` for every linear layer of the top blocks.

    ``top_layers=0`` adapts every linear layer but the output head (peft's ``"all-linear"``). Otherwise
    only the top ``top_layers`` transformer blocks get adapters: nothing below them needs a gradient, so
    the backward pass stops at the lowest adapted block.

    Raises:
        error: ``top_layers`` exceeds the model's number of blocks.
    """
    if not top_layers:
        return "all-linear", None
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    n = int(model.config.num_hidden_layers)
    if top_layers > n:
        raise error(f"lora_layers: the model has {n} transformer blocks, got {top_layers}")
    head = model.get_output_embeddings()
    names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and module is not head
        }
    )
    return names, list(range(n - top_layers, n))


def lora_config(model: Any, cfg: Any, error: type[Exception] = ValueError) -> Any:
    """Peft's ``LoraConfig`` from a trainer config's ``lora_r``, ``lora_alpha`` and ``lora_layers``."""
    from peft import LoraConfig

    targets, layers = lora_targets(model, cfg.lora_layers, error)
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def has_accelerator() -> bool:
    """Whether a CUDA device is present (else the trainers run on the CPU)."""
    import torch

    return torch.cuda.is_available()


def time_limit_callback(minutes: float) -> Any:
    """Trainer callback: stop (and save) once ``minutes`` of training have passed.

    Wall-clock budgets ("what does an hour of training buy on this machine") are how LM runs are
    compared; the step that crosses the limit finishes, then the trainer saves and stops.
    """
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if time.monotonic() - self.start >= 60 * minutes:
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeLimit()


def save_policy(trainer: Any, folder: Path, prompt: str, **record: Any) -> Path:
    """Save the trained policy (LoRA merged in), its tokenizer and its prompt record as a plain model folder.

    The folder is written atomically, the record (:data:`agents.prompts.POLICY_FILE`) included, so
    ``lm:<folder>`` and a later ``--model <folder>`` use the prompt the policy was trained with.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return save_pretrained_atomic(
        model, trainer.processing_class, folder, extra=lambda tmp: save_policy_record(tmp, prompt, **record)
    )


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure to ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
