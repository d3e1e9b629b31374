"""Environment throughput: PersonaRec-v0 and PersonaRecText-v0 against CartPole-v1, same run.

Each repeat times CartPole-v1 and the PersonaRec envs back to back (raw ``env.unwrapped``
steps, random actions drawn beforehand, resets included), so machine noise hits all alike.
Prints the median and min-max steps/s of each and the ratio of medians; ``--json`` saves them.

    python scripts/bench_throughput.py --steps 20000 --repeats 5
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

import dialog_env  # noqa: F401 - registers the envs
from dialog_env.io import atomic_write_json

UTTERANCES = (
    "Do you have any pets?",
    "What kind of music do you like?",
    "So you're vegetarian, right?",
    "Any allergies I should know about?",
    "How about Prime Cut Steakhouse?",
    "What do you do for a living?",
    "You might enjoy the Blue Note Jazz Night.",
    "How is your day going?",
)


def time_env(env: gym.Env, actions: Sequence[Any], seed: int) -> float:
    """Steps per second over ``actions``, resetting whenever an episode ends."""
    env.reset(seed=seed)
    step, reset = env.step, env.reset
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = step(a)
        if term or trunc:
            reset()
    return len(actions) / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20000, help="steps per timing")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median and min-max reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be positive")

    rng = np.random.default_rng(args.seed)
    envs: dict[str, tuple[gym.Env, list[Any]]] = {}
    cart = gym.make("CartPole-v1").unwrapped
    envs["CartPole-v1"] = (cart, rng.integers(0, 2, args.steps).tolist())
    act_env = gym.make("dialog_env/PersonaRec-v0").unwrapped
    envs["PersonaRec-v0"] = (act_env, rng.integers(0, act_env.action_space.n, args.steps).tolist())
    text_env = gym.make("dialog_env/PersonaRecText-v0").unwrapped
    envs["PersonaRecText-v0"] = (text_env, [UTTERANCES[i] for i in rng.integers(0, len(UTTERANCES), args.steps)])

    for env, actions in envs.values():  # warm-up: imports, caches, lazy compiles
        time_env(env, actions[:500], args.seed)
    rates: dict[str, list[float]] = {k: [] for k in envs}
    for r in range(args.repeats):
        for name, (env, actions) in envs.items():
            rates[name].append(time_env(env, actions, args.seed + r))

    ref = statistics.median(rates["CartPole-v1"])
    result: dict[str, Any] = {
        "command": "python scripts/bench_throughput.py " + " ".join(argv or []),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "steps": args.steps,
        "repeats": args.repeats,
        "envs": {},
    }
    print(f"{'env':<20}{'median steps/s':>16}{'min-max':>22}{'ratio to CartPole':>20}")
    for name, rs in rates.items():
        med = statistics.median(rs)
        row = {"median": med, "min": min(rs), "max": max(rs), "ratio_to_cartpole": med / ref}
        result["envs"][name] = row
        print(f"{name:<20}{med:>16,.0f}{f'{min(rs):,.0f}-{max(rs):,.0f}':>22}{med / ref:>20.3f}")
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
