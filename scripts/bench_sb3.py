"""SB3 training throughput: PPO frames/s on PersonaRec-v0 vs CartPole-v1, same settings, same run.

Each repeat trains a fresh PPO (identical hyper-parameters, vectorised envs and torch threads)
on CartPole-v1 and then on PersonaRec-v0 for the same number of steps; prints median and min-max
frames/s and the ratio of medians. The default is SB3's default PPO on one env; ``--tuned``
uses this project's MaskablePPO-style settings (8 envs, 256-step rollouts, 256x256 MLP).

    python scripts/bench_sb3.py --steps 16384 --repeats 3
    python scripts/bench_sb3.py --steps 16384 --repeats 3 --tuned
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
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import dialog_env  # noqa: F401 - registers the envs
from dialog_env.io import atomic_write_json

TUNED: dict[str, Any] = {
    "n_steps": 256,
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 1e-3,
    "policy_kwargs": {"net_arch": [256, 256]},
}


def fps(env_id: str, steps: int, n_envs: int, seed: int, env_kwargs: dict[str, Any], settings: dict[str, Any]) -> float:
    """Frames per second of ``PPO.learn`` (collection and updates) over ``steps``."""
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    model = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **settings)
    t0 = time.perf_counter()
    model.learn(steps)
    dt = time.perf_counter() - t0
    venv.close()
    return model.num_timesteps / dt


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: 1, or 8 with --tuned)")
    p.add_argument("--tuned", action="store_true", help="the project's PPO settings instead of SB3's defaults")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TUNED if args.tuned else {}
    n_envs = args.n_envs or (8 if args.tuned else 1)
    envs = {"CartPole-v1": {"render_mode": None}, "dialog_env/PersonaRec-v0": {"render_mode": None}}
    fps(next(iter(envs)), 2048, n_envs, 0, envs["CartPole-v1"], settings)  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in envs}
    for r in range(args.repeats):
        for env_id, kw in envs.items():
            rates[env_id].append(fps(env_id, args.steps, n_envs, r, kw, settings))
    ref = statistics.median(rates["CartPole-v1"])
    result: dict[str, Any] = {
        "command": "python scripts/bench_sb3.py " + " ".join(argv or []),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {args.threads}",
        "settings": {
            **(settings or {"ppo": "SB3 defaults"}),
            "n_envs": n_envs,
            "steps": args.steps,
            "repeats": args.repeats,
        },
        "envs": {},
    }
    print(f"{'env':<28}{'median fps':>12}{'min-max':>18}{'ratio':>8}")
    for env_id, rs in rates.items():
        med = statistics.median(rs)
        result["envs"][env_id] = {"median": med, "min": min(rs), "max": max(rs), "ratio_to_cartpole": med / ref}
        print(f"{env_id:<28}{med:>12,.0f}{f'{min(rs):,.0f}-{max(rs):,.0f}':>18}{med / ref:>8.3f}")
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
