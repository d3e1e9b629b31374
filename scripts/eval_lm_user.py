"""Agents against the agenda user and the LM-backed user: a cross-simulator table.

    python scripts/eval_lm_user.py --agents rule planner --episodes 50 --split test
    python scripts/eval_lm_user.py --agents planner mppo=sb3:runs/<run> --user-model smollm2 --out runs/lm_user

Against the LM user, ``--in-flight`` dialogues (16) run together, so its turns of one round are
phrased in one batched call (an agent without ``act_batch`` is built once per dialogue slot).

For every agent and both users (same seeds, so the same personas and goals): success, contradiction
rate, turns, return, the rule tracker's joint-goal accuracy on what the user said, and for the LM
user how often its text verified (the rest of its turns fell back to the template). Writes
``results.json`` and ``results.md`` with ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agents import make_agent
from dialog_env.benchmark import parse_agent_entry
from dialog_env.evaluation import evaluate, summarize
from dialog_env.io import atomic_write_json, atomic_write_text, publish_folder

COLUMNS = ("success", "contradiction_rate", "turns", "return", "jga")


def run(agent_entry: str, user: str, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate one agent against one user; the LM user's verification counts ride along."""
    _, spec = parse_agent_entry(agent_entry)
    per_user: dict[int, dict[str, int]] = {}  # the latest cumulative counts of each user object (one per env)

    def on_end(core: Any, record: Any) -> None:
        counts = getattr(core.user, "stats", None)
        if counts is not None:
            per_user[id(core.user)] = dict(counts)

    t0 = time.perf_counter()
    records = evaluate(  # an agent that plays one mode only (lm:, text-only agents) gets it
        lambda: make_agent(spec),
        split=args.split,
        episodes=args.episodes,
        seed=args.seed,
        mode=args.mode,
        env_kwargs={"user": user},
        on_end=on_end,
        in_flight=args.in_flight if user != "agenda" else 1,
        batch_size=args.in_flight,
    )
    summary = summarize(records)
    row: dict[str, Any] = {m: summary[m] for m in COLUMNS}
    row["seconds"] = time.perf_counter() - t0
    stats = {k: sum(c[k] for c in per_user.values()) for k in ("turns", "verified", "fallback")}
    if user != "agenda":
        row["verified_rate"] = stats["verified"] / max(1, stats["turns"])
        row["user_turns"] = stats["turns"]
    return row


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, evaluate every agent against both users, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", nargs="+", default=["rule", "planner"], help="agent specs (label=spec allowed)")
    p.add_argument("--user-model", default="smollm2", help="model of the LM user (lm:<model>)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="text", choices=["act", "text"])
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--in-flight", type=int, default=16, help="dialogues in flight (LM users phrase a round together)")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    users = ["agenda", f"lm:{args.user_model}"]
    rows = []
    for entry in args.agents:
        for user in users:
            row = run(entry, user, args)
            rows.append({"agent": parse_agent_entry(entry)[0], "user": user, **row})
            print(f"{rows[-1]['agent']} vs {user}: {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    head = "| agent | user | " + " | ".join(COLUMNS) + " | LM text verified |"
    lines = [head, "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [f"{r[c]['mean']:.3f} ± {r[c]['ci95']:.3f}" for c in COLUMNS]
        verified = f"{r['verified_rate']:.3f} ({r['user_turns']} turns)" if "verified_rate" in r else "–"
        lines.append(f"| {r['agent']} | {r['user']} | " + " | ".join(cells) + f" | {verified} |")
    table = "\n".join(lines)
    print(f"split={args.split} episodes={args.episodes} seed={args.seed}\n{table}")
    if args.out:
        with publish_folder(Path(args.out), ("results.json", "results.md"), "--out") as staging:
            atomic_write_json(staging / "results.json", {"config": vars(args), "rows": rows})
            atomic_write_text(staging / "results.md", table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
