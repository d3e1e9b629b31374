"""LM-user throughput: dialogues per second with many dialogues in flight vs one at a time, same run.

The planner plays ``--episodes`` text-mode dialogues against ``user="lm:<model>"`` twice per
repeat: one dialogue at a time (every user turn is its own ``generate`` call of ``tries``
candidates), and ``--in-flight`` at a time (the driver steps a round's users in threads and their
phrase batcher answers them in one call). Prints dialogues/s (median, min-max over ``--repeats``),
the ratio of the medians, and the batched ``generate`` calls per user turn.

With ``--reference`` a third way runs in the same repeats: ``--in-flight`` at a time with plain batched
generation (every candidate's whole prompt encoded, every candidate run to its end), the way the
phrase batcher worked before it encoded a prompt shared by candidates once, kept each user's opening
encoded between turns and stopped candidates that already broke the length or question guard.

    python scripts/bench_lm_user.py --episodes 16 --in-flight 16 --repeats 2 --threads 2 --reference
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from agents import make_agent
from dialog_env import lm as lm_module
from dialog_env.evaluation import evaluate
from dialog_env.io import atomic_write_json
from dialog_env.lm import PrefixStore
from dialog_env.users.lm import _BATCHERS


@contextlib.contextmanager
def plain_generation() -> Iterator[None]:
    """The phrase batcher's reference path: one plain ``generate_batch`` call, no sharing, no early stops."""

    def plain(model: Any, tokenizer: Any, conversations: Any, config: Any, seed: Any, *_: Any, **__: Any) -> Any:
        return lm_module.generate_batch(model, tokenizer, conversations, config, seed)[0]

    real = lm_module.generate_replies
    lm_module.generate_replies = plain
    try:
        yield
    finally:
        lm_module.generate_replies = real


def run(args: argparse.Namespace, in_flight: int, episodes: int | None = None, plain: bool = False) -> dict[str, Any]:
    """One timed evaluation; dialogues/s, user turns and generate calls."""
    turns: dict[int, int] = {}

    def on_end(core: Any, record: Any) -> None:
        turns[id(core.user)] = core.user.stats["turns"]

    for batcher in _BATCHERS.values():  # no run starts from openings an earlier run encoded
        batcher.store = PrefixStore(batcher.store.max_entries)
    calls = sum(b.calls for b in _BATCHERS.values())
    t0 = time.perf_counter()
    with plain_generation() if plain else contextlib.nullcontext():
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
        "plain": plain,
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
    p.add_argument("--reference", action="store_true", help="also time plain batched generation (see above)")
    p.add_argument("--out", default=None, help="JSON file for the measurements")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.in_flight < 2 or args.repeats < 1:
        p.error("--episodes and --repeats must be positive and --in-flight at least 2")
    torch.set_num_threads(args.threads)
    run(args, 2, episodes=2)  # warm-up: loads the model and fills caches
    ways = {"1": (1, False), str(args.in_flight): (args.in_flight, False)}
    if args.reference:
        ways[f"{args.in_flight} plain"] = (args.in_flight, True)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in ways}
    for _ in range(args.repeats):  # interleaved, so outside load hits every way alike
        for k, (in_flight, plain) in ways.items():
            results[k].append(run(args, in_flight, plain=plain))
            print(f"in flight {k}: {results[k][-1]['dialogues_per_s']:.3f} dialogues/s", file=sys.stderr, flush=True)
    med = {k: statistics.median(r["dialogues_per_s"] for r in rs) for k, rs in results.items()}
    for k, rs in results.items():
        rates = [r["dialogues_per_s"] for r in rs]
        per_turn = sum(r["generate_calls"] for r in rs) / max(1, sum(r["user_turns"] for r in rs))
        print(
            f"in flight {k:>8}: {med[k]:.3f} dialogues/s (min {min(rates):.3f}, max {max(rates):.3f}); "
            f"{per_turn:.2f} generate calls per user turn; success {rs[-1]['success']:.2f}"
        )
    k = str(args.in_flight)
    print(f"ratio in flight {k} / 1: {med[k] / med['1']:.2f}x")
    if args.reference:
        print(f"ratio in flight {k} / {k} plain: {med[k] / med[k + ' plain']:.2f}x")
    if args.out:
        atomic_write_json(args.out, {"config": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
