"""LM rollout throughput: batched dialogues vs the naive loop, same model and settings, same run.

Plays the same dialogues of ``PersonaRecText-v0`` (greedy decoding, so every runner should give
the same transcripts) with the multi-turn rollout used in GRPO training, three ways:

- naive: one ``generate`` per dialogue turn, the whole sequence re-encoded each time;
- padded batch: ``--batch`` dialogues per ``generate`` call (left padding), still re-encoding;
- incremental batch (the default runner): ``--batch`` dialogues per call, each dialogue's KV cache
  kept between turns, shared prompt prefixes encoded once (:class:`dialog_env.lm.IncrementalBatch`).

Prints aggregate generated tokens/s (median, min-max over ``--repeats``), the ratios to the naive
loop, and the fraction of this CPU's compute ceiling: a measured matmul rate divided by
2 * parameters FLOPs per token.

    python scripts/bench_lm_rollout.py --batch 16 --turns 3 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from agents.lm import shared_lm
from agents.lm_grpo import DialogueRollout
from dialog_env.io import atomic_write_json
from dialog_env.lm import GenerationConfig

RUNNERS = {
    "naive": {"batch": 1, "reuse_cache": False},
    "padded": {"reuse_cache": False},
    "incremental": {"reuse_cache": True},
}


def play(rollout: DialogueRollout, lm: tuple[Any, Any], seeds: Sequence[int], batch: int, reuse: bool) -> dict:
    """Play one dialogue per seed, ``batch`` at a time; generated tokens, seconds and completions."""
    model, tokenizer = lm
    config = GenerationConfig(max_new_tokens=rollout.max_new_tokens)
    t0 = time.perf_counter()
    out = rollout.rollout(model, tokenizer, seeds, config, batch_size=batch, reuse_cache=reuse)
    seconds = time.perf_counter() - t0
    return {"tokens": sum(sum(m) for m in out["env_mask"]), "seconds": seconds, "ids": out["completion_ids"]}


def matmul_rate(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    """Measured dense matmul FLOP/s at this thread count."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--turns", type=int, default=3, help="agent turns per dialogue")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = shared_lm(args.model, args.dtype)
    rollout = DialogueRollout(split="test", max_turns=args.turns, max_new_tokens=args.max_new_tokens)
    seeds = list(range(args.batch))
    play(rollout, lm, seeds[:2], 2, True)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in RUNNERS}
    same: list[int] = []
    for _ in range(args.repeats):  # interleaved, so load on the machine hits every runner alike
        runs = {}
        for name, opts in RUNNERS.items():
            runs[name] = play(rollout, lm, seeds, opts.get("batch", args.batch), opts["reuse_cache"])
            rates[name].append(runs[name]["tokens"] / runs[name]["seconds"])
        same.append(sum(a == b for a, b in zip(runs["naive"]["ids"], runs["incremental"]["ids"], strict=True)))
    params = sum(p.numel() for p in lm[0].parameters())
    rate = matmul_rate(getattr(torch, args.dtype))
    ceiling = rate / (2 * params)
    med = {name: statistics.median(v) for name, v in rates.items()}
    result = {
        "command": "python scripts/bench_lm_rollout.py " + " ".join(argv or []),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {args.threads}, {args.dtype}",
        "params": params,
        "tok_s": {name: {"median": med[name], "min": min(v), "max": max(v)} for name, v in rates.items()},
        "speedup": med["incremental"] / med["naive"],
        "speedup_padded": med["padded"] / med["naive"],
        "identical_dialogues": min(same),
        "matmul_gflops": rate / 1e9,
        "ceiling_tok_s": ceiling,
        "batched_fraction_of_ceiling": med["incremental"] / ceiling,
    }
    print(f"model {args.model} ({params / 1e6:.0f}M params, {args.dtype}), {args.batch} dialogues x {args.turns} turns")
    labels = {
        "naive": "naive loop (1 generate per dialogue turn)",
        "padded": f"padded batch ({args.batch} per generate, re-encoding)",
        "incremental": f"incremental batch ({args.batch}, KV cache kept)",
    }
    for name, v in rates.items():
        print(f"{labels[name]:<48} {med[name]:7.1f} tok/s  (min {min(v):.1f}, max {max(v):.1f})")
    print(
        f"speed-up over the naive loop: {result['speedup']:.2f}x (padded batch alone: {result['speedup_padded']:.2f}x)"
    )
    print(f"greedy dialogues identical to the naive loop's: {min(same)}/{len(seeds)}")
    print(
        f"matmul {rate / 1e9:.0f} GFLOP/s -> ceiling {ceiling:.0f} tok/s; incremental batch reaches "
        f"{result['batched_fraction_of_ceiling']:.1%} of it"
    )
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
