"""GRPO step time with a trained policy's prompt vs the base model's prompt: same settings, same run.

A base model needs the ``catalog`` prompt (instruction, the category's catalog, a worked example:
about 230 tokens before the dialogue) and, never finishing a dialogue, plays every turn with long
replies. A policy fine-tuned on demonstrations reads the ``notes`` prompt (a one-line instruction
and a state note after each user turn) and ends most dialogues in a few short turns. This script
times GRPO steps of both, with the same trainer settings (16 dialogues a step: 2 personas x 8,
6 turns of at most 32 tokens, ``num_iterations=2``, LoRA), interleaving the two in every repeat,
and prints seconds per step (median, min-max over repeats), the ratio, and the mean rollout length.

Each prompt is timed with TRL's padded log-prob passes and with the padding-free ones
(:class:`agents.lm_trainer.DialogueGRPOTrainer`, the default): the trained policy's dialogues vary
in length far more than the base model's, which all run to the turn limit, so padding costs it more.
Ratios are to the base model's padded step (the reference of earlier measurements).

    python scripts/bench_grpo_step.py --trained runs/sft_smollm2/final_model --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from agents.lm_train import LMTrainConfig, build_trainer
from dialog_env.io import atomic_write_json


def step_timer() -> Any:
    """A callback recording the wall time of every optimizer step (setup and saving excluded)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self.t0)

    return StepTimer()


def time_steps(model: str, prompt: str, padding_free: bool, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Train ``args.steps`` GRPO steps; seconds per step (mean over the steps) and mean rollout tokens."""
    cfg = LMTrainConfig(
        model=model,
        prompt=prompt,
        padding_free=padding_free,
        seed=seed,
        tasks=64,
        max_steps=args.steps,
        num_generations=8,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_turns=6,
        max_new_tokens=32,
        lora_layers=args.lora_layers,
        dtype=args.dtype,
        save_steps=10**6,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, Path(tmp))
        timer = step_timer()
        trainer.add_callback(timer)
        trainer.train()
    logs = [e for e in trainer.state.log_history if "completions/mean_length" in e]
    length = statistics.mean(e["completions/mean_length"] for e in logs) if logs else float("nan")
    return {"seconds_per_step": statistics.mean(timer.seconds), "completion_tokens": length}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="smollm2", help="base model, run with the catalog prompt")
    p.add_argument("--trained", required=True, help="trained policy folder (its recorded prompt)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per measurement (one rollout batch per 2 steps)")
    p.add_argument("--lora-layers", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--padding", default="both", choices=["both", "free", "padded"], help="log-prob passes to time")
    p.add_argument("--out", default="runs/bench_grpo_step.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    prompts = {"catalog prompt (base model)": (args.base, "catalog"), "trained policy's prompt": (args.trained, "")}
    paddings = {"both": (False, True), "free": (True,), "padded": (False,)}[args.padding]
    runs = {
        f"{label}, {'padding-free' if free else 'padded'}": (model, prompt, free)
        for free in paddings
        for label, (model, prompt) in prompts.items()
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    for rep in range(args.repeats):
        for label, (model, prompt, free) in runs.items():
            results[label].append(time_steps(model, prompt, free, args, seed=rep))
            print(f"repeat {rep}: {label}: {results[label][-1]}", flush=True)
    reference = next(iter(runs))  # the base model's first-listed (padded where timed) step
    base = statistics.median(r["seconds_per_step"] for r in results[reference])
    print(
        f"\nGRPO step, 16 dialogues (2 personas x 8), 6 turns x 32 tokens, dtype {args.dtype}, {args.threads} threads"
    )
    print(f"ratios to: {reference}")
    print("| prompt | s/step (median, min-max) | ratio | completion tokens |")
    print("|---|---|---|---|")
    summary = {}
    for label, rs in results.items():
        secs = [r["seconds_per_step"] for r in rs]
        med = statistics.median(secs)
        summary[label] = {"median": med, "min": min(secs), "max": max(secs), "ratio": med / base}
        tokens = statistics.mean(r["completion_tokens"] for r in rs)
        print(f"| {label} | {med:.1f} ({min(secs):.1f}-{max(secs):.1f}) | {med / base:.2f}x | {tokens:.0f} |")
    atomic_write_json(args.out, {"args": vars(args), "runs": results, "summary": summary})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
