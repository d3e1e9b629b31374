"""LM rollout throughput: batched dialogues vs the naive loop, same model and settings, same run.

Plays the same dialogues (greedy decoding, so both give identical transcripts) twice: the naive
loop calls ``generate`` once per dialogue turn; the batched runner advances ``--batch`` dialogues
per ``generate`` call (left padding, one KV cache per batch). Prints aggregate generated tokens/s,
their ratio, and the fraction of this CPU's compute ceiling: a measured matmul rate divided by
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

import gymnasium as gym
import torch

import dialog_env  # noqa: F401 - registers the envs
from agents.lm import LMAgent
from dialog_env.evaluation import run_episodes_batched
from dialog_env.io import atomic_write_json
from dialog_env.lm import generate_batch


class TokenCounter:
    """Wraps an LM agent and counts the tokens it generates."""

    def __init__(self, agent: LMAgent) -> None:
        self.agent, self.tokens = agent, 0
        self.mode = "text"

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Reset the wrapped agent."""
        self.agent.reset(env, seed)

    def act_batch(self, cores: Sequence[Any]) -> list[str]:
        """Generate for many dialogues; count the new tokens."""
        texts, _, comps = generate_batch(
            self.agent.model, self.agent.tokenizer, [self.agent.conversation(c) for c in cores], self.agent.config
        )
        self.tokens += sum(len(c) for c in comps)
        return texts


def matmul_rate(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    """Measured dense matmul FLOP/s at this thread count."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def play(counter: TokenCounter, seeds: Sequence[int], batch: int, turns: int) -> tuple[int, float]:
    """Play one dialogue per seed, ``batch`` at a time, each capped at ``turns`` agent turns."""
    envs = [gym.make("dialog_env/PersonaRecText-v0", split="test", max_episode_steps=turns) for _ in range(batch)]
    counter.tokens = 0
    t0 = time.perf_counter()
    run_episodes_batched(envs, counter, seeds)
    return counter.tokens, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--turns", type=int, default=3, help="agent turns per dialogue")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    agent = LMAgent(args.model, max_new_tokens=args.max_new_tokens, dtype=args.dtype)
    counter = TokenCounter(agent)
    seeds = list(range(args.batch))
    play(counter, seeds[:2], 2, 1)  # warm-up
    naive, batched = [], []
    for _ in range(args.repeats):
        tok, dt = play(counter, seeds, 1, args.turns)
        naive.append(tok / dt)
        tok_b, dt_b = play(counter, seeds, args.batch, args.turns)
        batched.append(tok_b / dt_b)
        assert tok_b == tok, "greedy batched and naive dialogues must generate the same tokens"
    params = sum(p.numel() for p in agent.model.parameters())
    rate = matmul_rate(getattr(torch, args.dtype))
    ceiling = rate / (2 * params)
    med_n, med_b = statistics.median(naive), statistics.median(batched)
    result = {
        "command": "python scripts/bench_lm_rollout.py " + " ".join(argv or []),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {args.threads}, {args.dtype}",
        "params": params,
        "naive_tok_s": {"median": med_n, "min": min(naive), "max": max(naive)},
        "batched_tok_s": {"median": med_b, "min": min(batched), "max": max(batched)},
        "speedup": med_b / med_n,
        "matmul_gflops": rate / 1e9,
        "ceiling_tok_s": ceiling,
        "batched_fraction_of_ceiling": med_b / ceiling,
    }
    print(f"model {args.model} ({params / 1e6:.0f}M params, {args.dtype}), {args.batch} dialogues x {args.turns} turns")
    print(f"naive loop (1 per generate): {med_n:7.1f} tok/s  (min {min(naive):.1f}, max {max(naive):.1f})")
    print(f"batched ({args.batch} per generate): {med_b:7.1f} tok/s  (min {min(batched):.1f}, max {max(batched):.1f})")
    print(f"speed-up: {med_b / med_n:.2f}x")
    print(
        f"matmul {rate / 1e9:.0f} GFLOP/s -> ceiling {ceiling:.0f} tok/s; batched reaches {med_b / ceiling:.1%} of it"
    )
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
