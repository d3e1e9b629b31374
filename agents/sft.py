"""Supervised fine-tuning of an LM policy on demonstrations, with TRL's ``SFTTrainer``.

``dialog-env train sft --model smollm2 --data data/planner --run-dir runs/sft`` trains on a data
set written by ``dialog-env collect`` (or any chat data set with a ``messages`` column). Each
dialogue becomes one token sequence laid out exactly as a GRPO rollout and the LM agent lay it
out (:func:`tokenize_dialogue`): the prompt rendered by the chat template, then every agent turn's
tokens and its end-of-turn token, then the user's reply with the template tokens around it. The
loss is on the agent's tokens only (``assistant_masks``): the prompt, the user's turns and their
state notes are context, never targets.

A run folder holds ``config.yaml``, ``checkpoints/`` (``--resume`` continues from the last),
``tb/`` (TensorBoard), ``train_log.json``, ``learning_curve.png`` and ``final_model/``: the merged
model, its tokenizer and the prompt style of its data (``dialog_env_policy.json``), usable as
``lm:<run>/final_model`` in eval and benchmark and as ``--model`` for ``dialog-env train lm``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.lm_runs import (
    LMRunFields,
    add_run_arguments,
    check_common,
    check_counts,
    has_accelerator,
    load_run_config,
    lora_config,
    open_run,
    run_name,
    save_figure,
    save_policy,
    time_limit_callback,
    train_interruptibly,
)
from agents.prompts import PROMPTS
from dialog_env.cliargs import dataclass_values
from dialog_env.io import atomic_write_text
from dialog_env.lm import DEFAULT_MODEL, render_ids, resolve_model_path, user_turn_text


class SFTConfigError(ValueError):
    """An invalid SFT argument or data set; the message names the field and what is allowed."""


@dataclass
class SFTTrainConfig(LMRunFields):
    """Arguments of an SFT run (one field, one docstring)."""

    model: str = DEFAULT_MODEL
    """base model: smollm2 (embedded default), a Hugging Face id or a local folder"""
    data: str = ""
    """data set folder from dialog-env collect (or a .jsonl file with a messages column); several, comma-separated,
    are trained on together (e.g. demonstrations plus teacher labels at the policy's own states)"""
    exp_name: str = "sft"
    """experiment name, part of the run folder name"""
    run_root: str = "runs"
    """folder that holds run folders"""
    seed: int = 0
    """seed of the trainer (shuffling, LoRA init)"""
    epochs: float = 1.0
    """passes over the data (ignored when max_steps > 0)"""
    max_steps: int = 0
    """optimizer steps; 0: epochs decide"""
    per_device_train_batch_size: int = 8
    """dialogues per device and step"""
    gradient_accumulation_steps: int = 1
    """gradient accumulation"""
    learning_rate: float = 2e-4
    """peak learning rate (LoRA); use ~2e-5 with --no-lora"""
    warmup_ratio: float = 0.05
    """fraction of the steps spent warming the learning rate up"""
    max_length: int = 1024
    """longest token sequence kept (longer dialogues are cut at the end)"""
    save_steps: int = 20
    """checkpoint every this many steps"""

    def validate(self) -> None:
        """Raise :class:`SFTConfigError` naming the field and the allowed values."""
        if not self.data:
            raise SFTConfigError("data: give the data set folder (from `dialog-env collect --out DIR`)")
        check_common(self, SFTConfigError)
        check_counts(
            self,
            SFTConfigError,
            positive=("per_device_train_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha",
                      "max_length", "save_steps", "logging_steps"),
            non_negative=("max_steps", "lora_layers"),
        )  # fmt: skip
        if not self.max_steps and not self.epochs > 0:
            raise SFTConfigError(f"epochs: expected a number > 0 (or set max_steps), got {self.epochs!r}")
        if not self.learning_rate > 0:
            raise SFTConfigError(f"learning_rate: expected a number > 0, got {self.learning_rate!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SFTConfigError(f"warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio!r}")


def tokenize_dialogue(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    prompt_messages: int = 1,
    train_from: int | None = None,
    user_turns: bool = False,
) -> tuple[list[int], list[int]]:
    """One dialogue as the token sequence a rollout produces, with a mask on the agent's tokens.

    The prompt (the first ``prompt_messages`` messages and the dialogue up to the first agent turn)
    is rendered by the chat template with the generation prompt; each agent turn adds its tokens
    and the end-of-turn token (mask 1); each user turn that an agent turn follows adds the text the
    template puts between the two (:func:`dialog_env.lm.user_turn_text`, mask 0). Messages after the
    last agent turn are left out: nothing is learnt from them.

    Args:
        tokenizer: A tokenizer with a chat template (see :func:`dialog_env.lm.prepare_tokenizer`).
        messages: The dialogue in chat format.
        prompt_messages: Leading messages that belong to the prompt (a worked example's agent turns
            are not trained).
        train_from: Index of the first message whose agent turns are trained (default: the first
            after the prompt). Earlier agent turns are laid out like the others, as a rollout holds
            them, but masked: a teacher-labelled row (``dialog-env collect --roll-in``) is another
            policy's dialogue up to one state, then the teacher's reply there.
        user_turns: Also put the mask on the user's replies (and their state notes) between trained
            agent turns: the loss then models the whole conversation, what the user said included
            (how :mod:`agents.lm_meta` adapts a policy to one user).

    Returns:
        ``(input_ids, assistant_masks)`` of the same length.

    Raises:
        SFTConfigError: The dialogue has no agent turn after its prompt, or none from ``train_from``.
    """
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= prompt_messages]
    if not turns:
        raise SFTConfigError("data: a dialogue has no assistant turn after its prompt")
    trained_from = prompt_messages if train_from is None else train_from
    if not any(i >= trained_from for i in turns):
        raise SFTConfigError(f"data: a row's train_from ({train_from}) is after its last assistant turn ({turns[-1]})")
    first, last = turns[0], turns[-1]
    ids = render_ids(tokenizer, messages[:first], add_generation_prompt=True)
    mask = [0] * len(ids)
    eos = tokenizer.eos_token_id
    for i in range(first, last + 1):
        m = messages[i]
        if m["role"] == "assistant":
            reply = tokenizer(m["content"], add_special_tokens=False)["input_ids"] + [eos]
            ids += reply
            mask += [int(i >= trained_from)] * len(reply)
        else:
            between = tokenizer(user_turn_text(tokenizer, messages[:i], m["content"]), add_special_tokens=False)
            ids += between["input_ids"]
            mask += [int(user_turns and i > trained_from)] * len(between["input_ids"])
    return ids, mask


def tokenize_dataset(dataset: Any, tokenizer: Any, max_length: int) -> Any:
    """``input_ids`` and ``assistant_masks`` columns for every dialogue of a chat data set (cut to ``max_length``)."""

    def one(row: dict[str, Any]) -> dict[str, list[int]]:
        start = row.get("train_from")
        ids, mask = tokenize_dialogue(
            tokenizer, row["messages"], int(row.get("prompt_messages") or 1), None if start is None else int(start)
        )
        return {"input_ids": ids[:max_length], "assistant_masks": mask[:max_length]}

    tokenized = dataset.map(one, remove_columns=dataset.column_names)
    return tokenized.filter(lambda row: any(row["assistant_masks"]))  # a cut may leave nothing to learn


TRAINING_COLUMNS = ("messages", "prompt_messages", "prompt_style", "train_from")


def load_training_data(data: str) -> Any:
    """The rows of one data set folder, or of several given as ``DIR1,DIR2`` (DAgger's aggregate).

    Several folders are reduced to the columns training reads (:data:`TRAINING_COLUMNS`; a dialogue
    row without ``train_from`` trains from its first agent turn) and concatenated.

    Raises:
        SFTConfigError: An empty entry in the list.
        CollectError: A folder without a data set.
    """
    from datasets import concatenate_datasets

    from agents.collect import load_demonstrations

    parts = [p.strip() for p in str(data).split(",")]
    if any(not p for p in parts):
        raise SFTConfigError(f"data: expected a folder or comma-separated folders, got {data!r}")
    if len(parts) == 1:
        return load_demonstrations(parts[0])
    sets = []
    for part in parts:
        ds = load_demonstrations(part)
        if "train_from" not in ds.column_names:
            first = ds["prompt_messages"] if "prompt_messages" in ds.column_names else [1] * len(ds)
            ds = ds.add_column("train_from", [int(f or 1) for f in first])
        if "prompt_messages" not in ds.column_names:
            ds = ds.add_column("prompt_messages", [1] * len(ds))
        if "prompt_style" not in ds.column_names:
            raise SFTConfigError(f"data: {part} has no prompt_style column; collect it with `dialog-env collect`")
        ds = ds.select_columns(list(TRAINING_COLUMNS))
        sets.append(ds.cast(sets[0].features) if sets else ds)  # one schema (int widths may differ)
    return concatenate_datasets(sets)


def data_prompt_style(dataset: Any, source: str) -> str:
    """The one prompt style a data set was written in (its ``prompt_style`` column), for the model's record.

    Raises:
        SFTConfigError: Several styles, or an unknown one.
    """
    if "prompt_style" not in dataset.column_names:
        raise SFTConfigError(
            f"data: {source} has no prompt_style column; collect it with `dialog-env collect`, which records the "
            "prompt the policy will be evaluated with"
        )
    styles = sorted(set(dataset["prompt_style"]))
    if len(styles) != 1 or styles[0] not in PROMPTS:
        raise SFTConfigError(
            f"data: {source} mixes or names unknown prompt styles {styles}; expected one of {list(PROMPTS)}"
        )
    return styles[0]


def build_sft_trainer(cfg: SFTTrainConfig, run: Path) -> tuple[Any, str]:
    """The configured ``SFTTrainer`` for a run folder, and the data's prompt style."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from dialog_env.lm import prepare_tokenizer

    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tb")
    path = resolve_model_path(cfg.model)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path), name=cfg.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    dataset = load_training_data(cfg.data)
    style = data_prompt_style(dataset, cfg.data)
    train = tokenize_dataset(dataset, tokenizer, cfg.max_length)
    peft_config = lora_config(model, cfg, SFTConfigError) if cfg.lora else None
    args = SFTConfig(
        output_dir=str(run / "checkpoints"),
        seed=cfg.seed,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a fraction of the steps
        lr_scheduler_type="cosine",
        max_length=cfg.max_length,
        packing=False,
        train_sampling_strategy="group_by_length",  # batches of similar lengths: little padding
        bf16=cfg.dtype == "bfloat16",
        save_steps=cfg.save_steps,
        save_total_limit=3,
        logging_steps=cfg.logging_steps,
        report_to=["tensorboard"],
        use_cpu=not has_accelerator(),
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[time_limit_callback(cfg.time_limit_min)] if cfg.time_limit_min else None,
    )
    return trainer, style


def train_sft(cfg: SFTTrainConfig, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) an SFT run; returns its folder.

    Raises:
        SFTConfigError: Invalid configuration or data set, or nothing to resume.
    """
    cfg.validate()
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / run_name(cfg.exp_name, cfg.seed)
    checkpoint = open_run(cfg, run, resume, SFTConfigError)
    trainer, style = build_sft_trainer(cfg, run)
    train_interruptibly(trainer, run, checkpoint, f"dialog-env train sft --resume {run}")
    if trainer.accelerator.is_main_process:
        save_policy(trainer, run / "final_model", style, trained_by="sft", model=cfg.model, data=str(cfg.data))
        log = [e for e in trainer.state.log_history if "loss" in e]
        if log:
            atomic_write_text(run / "train_log.json", json.dumps(log, indent=1))
            plot_sft_curve(log, run / "learning_curve.png")
    trainer.accelerator.wait_for_everyone()
    return run


def plot_sft_curve(log: Sequence[dict[str, Any]], path: Path) -> Path:
    """Training curve of an SFT run: the loss on agent tokens per step (and the learning rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in log]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(steps, [e["loss"] for e in log], "o-", lw=1, ms=3, color="C0", label="loss (agent tokens)")
    ax.set(xlabel="SFT step", ylabel="cross-entropy", title="SFT on demonstrations")
    if any("learning_rate" in e for e in log):
        lr = ax.twinx()
        lr.plot(steps, [e.get("learning_rate", float("nan")) for e in log], color="C1", lw=1, alpha=0.6)
        lr.set_ylabel("learning rate", color="C1")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def resume_sft(run_dir: str | Path, max_steps: int | None = None) -> Path:
    """Continue an SFT run from its last checkpoint (optionally to a new ``max_steps``)."""
    run = Path(run_dir)
    return train_sft(load_run_config(run, SFTTrainConfig, SFTConfigError, max_steps), run_dir=run, resume=True)


def build_sft_parser(p: Any) -> Any:
    """Add the SFT arguments to a parser."""
    return add_run_arguments(p, SFTTrainConfig)


def run_sft_from_args(args: Any) -> Path:
    """Shared by ``scripts/train_sft.py`` and ``dialog-env train sft``."""
    if args.resume:
        run = resume_sft(args.resume, max_steps=args.max_steps)
    else:
        cfg = SFTTrainConfig(**dataclass_values(SFTTrainConfig, args, SFTConfigError))
        run = train_sft(cfg, run_dir=args.run_dir)
    print(f"run folder: {run} (final_model/, checkpoints/, tb/, learning_curve.png)")
    print(f"evaluate with: dialog-env eval --agents lm:{run / 'final_model'} --mode text")
    print(f"continue with GRPO: dialog-env train lm --model {run / 'final_model'}")
    return run


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line of ``scripts/train_sft.py``."""
    import argparse

    p = argparse.ArgumentParser(description="Fine-tune an LM policy on demonstrations with TRL's SFTTrainer.")
    build_sft_parser(p)
    return run_sft_from_args(p.parse_args(argv))
