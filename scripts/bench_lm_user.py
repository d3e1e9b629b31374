"""LM-user throughput: dialogues per second with many dialogues in flight vs one at a time, same run.

The planner plays ``--episodes`` text-mode dialogues against ``user="lm:<model>"`` twice per
repeat: one dialogue at a time (every user turn is its own ``generate`` call of ``tries``
candidates), and ``--in-flight`` at a time (the driver steps a round's users in threads and their
phrase batcher answers them in one call). Prints dialogues/s (median, min-max over ``--repeats``),
the ratio of the medians, and the batched ``generate`` calls per user turn.

    python scripts/bench_lm_user.py --episodes 16 --in-flight 16 --repeats 2 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from agents import make_agent
from dialog_env.evaluation import evaluate
from dialog_env.io import atomic_write_json
from dialog_env.users.lm import _BATCHERS


def run(args: argparse.Namespace, in_flight: int, episodes: int | None = None) -> dict[str, Any]:
    """One timed evaluation; dialogues/s, user turns and generate calls."""
    turns: dict[int, int] = {}

    def on_end(core: Any, record: Any) -> None:
        turns[id(core.user)] = core.user.stats["turns"]

    calls = sum(b.calls for b in _BATCHERS.values())
    t0 = time.perf_counter()
    records = evaluate(
        lambda: make_agent(args.agent),
        split=args.split,
        episodes=episodes or args.episodes,
        mode="text",
        env_kwargs={"user": f"lm:{args.user_model}"},
        in_flight=in_flight,
        on_end=on_end,
    )
    seconds = time.perf_counter() - t0
    return {
        "in_flight": in_flight,
        "seconds": seconds,
        "dialogues_per_s": len(records) / seconds,
        "user_turns": sum(turns.values()),
        "generate_calls": sum(b.calls for b in _BATCHERS.values()) - calls,
        "success": sum(r.success for r in records) / len(records),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, time both ways, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agent", default="planner")
    p.add_argument("--user-model", default="smollm2")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=2, help="torch threads (fixed: the machine is shared)")
    p.add_argument("--out", default=None, help="JSON file for the measurements")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.in_flight < 2 or args.repeats < 1:
        p.error("--episodes and --repeats must be positive and --in-flight at least 2")
    torch.set_num_threads(args.threads)
    run(args, 2, episodes=2)  # warm-up: loads the model and fills caches
    results: dict[int, list[dict[str, Any]]] = {1: [], args.in_flight: []}
    for _ in range(args.repeats):  # interleaved, so outside load hits both alike
        for k in results:
            results[k].append(run(args, k))
            print(f"in flight {k}: {results[k][-1]['dialogues_per_s']:.3f} dialogues/s", file=sys.stderr, flush=True)
    med = {k: statistics.median(r["dialogues_per_s"] for r in rs) for k, rs in results.items()}
    for k, rs in results.items():
        rates = [r["dialogues_per_s"] for r in rs]
        per_turn = sum(r["generate_calls"] for r in rs) / max(1, sum(r["user_turns"] for r in rs))
        print(
            f"in flight {k:>2}: {med[k]:.3f} dialogues/s (min {min(rates):.3f}, max {max(rates):.3f}); "
            f"{per_turn:.2f} generate calls per user turn; success {rs[-1]['success']:.2f}"
        )
    print(f"ratio in flight {args.in_flight} / 1: {med[args.in_flight] / med[1]:.2f}x")
    if args.out:
        atomic_write_json(args.out, {"config": vars(args), "results": {str(k): v for k, v in results.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
