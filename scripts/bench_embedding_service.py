"""Subprocess envs with one shared embedder vs one embedder each, against one process, same run.

Text envs score ``nli_consistency`` (each agent sentence against each revealed fact, on MiniLM
embeddings). Three ways to run ``--envs`` of them, each repeat timing all three back to back:

* ``sync``: Gymnasium's ``SyncVectorEnv``, one process (the reference: one model, one cache);
* ``async``: ``AsyncVectorEnv``, every subprocess loads its own MiniLM and embeds on its own;
* ``async+service``: ``AsyncVectorEnv`` with an :class:`~dialog_env.embedding_service.EmbeddingService`.

For each: seconds to start (build, load, first reset), steps per second after that, and the
resident memory of all its processes; ratios of medians against ``sync``. The agent's lines are
drawn beforehand from templates over every value and item of the world, so sentences keep being new.

    python scripts/bench_embedding_service.py --envs 2 --steps 300 --repeats 3
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
import numpy as np
import psutil

import dialog_env  # noqa: F401 - registers the envs
from dialog_env.embedding_service import EmbeddingService
from dialog_env.io import atomic_write_json
from dialog_env.world import load_world

ENV = "dialog_env/PersonaRecText-v0"
REWARD = {"persona_consistency": 1.0, "nli_consistency": 1.0}


def agent_lines(n: int, seed: int) -> list[str]:
    """``n`` agent utterances: questions, restatements (some negated) and recommendations of the world's words."""
    world = load_world()
    rng = np.random.default_rng(seed)
    forms = [
        *(f"So {v.you}, right?" for v in world.values),
        *(f"I understand that {v.you}." for v in world.values),
        *(f"Since you don't love {v.short}, here is an idea." for v in world.values),
        *(f"How about {i.name}?" for i in world.items),
        *(q for s in world.slots for q in s.questions),
    ]
    return [forms[int(k)] for k in rng.integers(0, len(forms), n)]


def memory_mb() -> float:
    """Resident memory of this process and all its descendants, MiB."""
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run(mode: str, n_envs: int, lines: list[str], seed: int) -> dict[str, float]:
    """Start ``n_envs`` envs the ``mode`` way and step them through ``lines``."""
    t0 = time.perf_counter()
    service = EmbeddingService() if mode == "async+service" else None
    kwargs: dict[str, Any] = {"split": "train", "reward_weights": REWARD}
    if service is not None:
        kwargs["embedder"] = service.client()
    vector = {"sync": "sync"}.get(mode, "async")
    extra = {"vector_kwargs": {"context": "spawn"}} if vector == "async" else {}
    envs = gym.make_vec(ENV, num_envs=n_envs, vectorization_mode=vector, **extra, **kwargs)
    try:
        envs.reset(seed=seed)
        envs.step([lines[0]] * n_envs)  # every env has embedded once: its model is loaded
        started = time.perf_counter() - t0
        mem = memory_mb()
        t1 = time.perf_counter()
        for i in range(0, len(lines) - n_envs + 1, n_envs):
            envs.step(lines[i : i + n_envs])
        steps = (len(lines) // n_envs) * n_envs
        rate = steps / (time.perf_counter() - t1)
        mem = max(mem, memory_mb())
    finally:
        envs.close()
        if service is not None:
            service.close()
    return {"start_s": started, "steps_per_s": rate, "memory_mb": mem}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, default=2, help="envs per vector env")
    p.add_argument("--steps", type=int, default=300, help="env steps per timing (all envs together)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median and min-max reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.envs < 1 or args.steps < args.envs or args.repeats < 1:
        p.error("--envs and --repeats must be positive and --steps at least --envs")
    import torch

    torch.set_num_threads(args.threads)
    modes = ["sync", "async", "async+service"]
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    run("sync", 1, agent_lines(8, args.seed), args.seed)  # warm-up: imports, the detector's cache
    for r in range(args.repeats):
        lines = agent_lines(args.steps, args.seed + r)  # new sentences every repeat, the same for every mode
        for mode in modes:
            rows[mode].append(run(mode, args.envs, lines, args.seed + r))

    def stat(mode: str, key: str) -> dict[str, float]:
        vals = [row[key] for row in rows[mode]]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    result: dict[str, Any] = {
        "command": "python scripts/bench_embedding_service.py " + " ".join(argv or []),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "envs": args.envs,
        "steps": args.steps,
        "repeats": args.repeats,
        "modes": {m: {k: stat(m, k) for k in ("start_s", "steps_per_s", "memory_mb")} for m in modes},
    }
    ref = result["modes"]["sync"]
    print(f"{args.envs} text envs with nli_consistency, {args.steps} steps, {args.repeats} repeats; ratios vs sync\n")
    print("| mode | start s | steps/s | ratio | memory MiB | ratio |\n|---|---|---|---|---|---|")
    for m in modes:
        s = result["modes"][m]
        sps, mem = s["steps_per_s"], s["memory_mb"]
        print(
            f"| {m} | {s['start_s']['median']:.1f} | {sps['median']:.1f} ({sps['min']:.1f}-{sps['max']:.1f}) "
            f"| {sps['median'] / ref['steps_per_s']['median']:.2f} | {mem['median']:.0f} "
            f"| {mem['median'] / ref['memory_mb']['median']:.2f} |"
        )
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
