"""Agents against the agenda user and the LM-backed user: a cross-simulator table.

    python scripts/eval_lm_user.py --agents rule planner --episodes 50 --split test
    python scripts/eval_lm_user.py --agents planner mppo=sb3:runs/<run> --user-model smollm2 --out runs/lm_user

Against both users ``--in-flight`` dialogues (16) run together: the LM user's turns of one round are
phrased in one batched call, and an LM agent's turns are generated in one call too (an agent without
``act_batch`` is built once per dialogue slot).

For every agent and both users (same seeds, so the same personas and goals): success, contradiction
rate, turns, return, the rule tracker's joint-goal accuracy on what the user said, and for the LM
user how often its text verified (the rest of its turns fell back to the template). Then paired
differences over the same dialogues: each agent's LM user − agenda user, and with ``--paired A B``
agent A − agent B against each user (e.g. a policy trained on LM-user dialogues against one trained on
agenda-user dialogues). Writes ``results.json`` (with each dialogue's seed, success and return) and
``results.md`` with ``--out``.

    python scripts/eval_lm_user.py --agents a=lm:runs/a/final_model b=lm:runs/b/final_model --paired a b
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
from dialog_env.evaluation import EpisodeRecord, evaluate, paired_difference, summarize
from dialog_env.io import atomic_write_json, atomic_write_text, publish_folder

COLUMNS = ("success", "contradiction_rate", "turns", "return", "jga")
PAIRED = ("success", "contradiction_rate", "turns", "return")


def run(agent_entry: str, user: str, args: argparse.Namespace) -> tuple[dict[str, Any], list[EpisodeRecord]]:
    """Evaluate one agent against one user; the LM user's verification counts ride along.

    Returns:
        The table row and the dialogues' records, sorted by seed.
    """
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
        in_flight=args.in_flight,
        batch_size=args.in_flight,
    )
    summary = summarize(records)
    row: dict[str, Any] = {m: summary[m] for m in COLUMNS}
    row["seconds"] = time.perf_counter() - t0
    stats = {k: sum(c[k] for c in per_user.values()) for k in ("turns", "verified", "fallback")}
    if user != "agenda":
        row["verified_rate"] = stats["verified"] / max(1, stats["turns"])
        row["user_turns"] = stats["turns"]
    records = sorted(records, key=lambda r: r.seed)
    row["dialogues"] = [{"seed": r.seed, "success": r.metric("success"), "return": r.metric("return")} for r in records]
    return row, records


def paired_rows(
    cells: dict[tuple[str, str], list[EpisodeRecord]], users: list[str], pair: list[str] | None
) -> list[dict[str, Any]]:
    """Paired differences: every agent's LM user − agenda user, and ``pair[0] − pair[1]`` against each user."""
    out = []
    for agent in dict.fromkeys(a for a, _ in cells):
        diff = paired_difference(cells[agent, users[1]], cells[agent, users[0]])
        out.append({"comparison": f"{agent}: {users[1]} − {users[0]}", **{m: diff[m] for m in PAIRED}})
    if pair:
        for user in users:
            diff = paired_difference(cells[pair[0], user], cells[pair[1], user])
            out.append({"comparison": f"{pair[0]} − {pair[1]} vs {user}", **{m: diff[m] for m in PAIRED}})
    return out


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
    p.add_argument(
        "--paired", nargs=2, default=None, metavar=("A", "B"), help="also report agent A − B on the same dialogues"
    )
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    labels = [parse_agent_entry(e)[0] for e in args.agents]
    if len(set(labels)) != len(labels):
        p.error(f"--agents: labels must be distinct, got {labels}")
    if args.paired and not set(args.paired) <= set(labels):
        p.error(f"--paired: both agents must be among the --agents labels {labels}, got {args.paired}")
    torch.set_num_threads(args.threads)
    users = ["agenda", f"lm:{args.user_model}"]
    rows = []
    cells: dict[tuple[str, str], list[EpisodeRecord]] = {}
    for entry, label in zip(args.agents, labels, strict=True):
        for user in users:
            row, cells[label, user] = run(entry, user, args)
            rows.append({"agent": label, "user": user, **row})
            print(f"{rows[-1]['agent']} vs {user}: {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    head = "| agent | user | " + " | ".join(COLUMNS) + " | LM text verified |"
    lines = [head, "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        shown = [f"{r[c]['mean']:.3f} ± {r[c]['ci95']:.3f}" for c in COLUMNS]
        verified = f"{r['verified_rate']:.3f} ({r['user_turns']} turns)" if "verified_rate" in r else "–"
        lines.append(f"| {r['agent']} | {r['user']} | " + " | ".join(shown) + f" | {verified} |")
    paired = paired_rows(cells, users, args.paired)
    lines += ["", "| paired, same dialogues | " + " | ".join(PAIRED) + " |", "|---|" + "---|" * len(PAIRED)]
    for r in paired:
        diffs = [f"{r[m]['mean']:+.3f} ± {r[m]['ci95']:.3f}" for m in PAIRED]
        lines.append(f"| {r['comparison']} | " + " | ".join(diffs) + " |")
    table = "\n".join(lines)
    print(f"split={args.split} episodes={args.episodes} seed={args.seed}\n{table}")
    if args.out:
        with publish_folder(Path(args.out), ("results.json", "results.md"), "--out") as staging:
            atomic_write_json(staging / "results.json", {"config": vars(args), "rows": rows, "paired": paired})
            atomic_write_text(staging / "results.md", table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
