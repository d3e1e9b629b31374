"""Agents against returning users (PersonaRecSessions-v0): per-session success, re-asks, contradictions.

    python scripts/eval_sessions.py --agents rule rule_memory planner planner_memory --out runs/sessions_eval

Each agent plays the same users (episode ``i`` has seed ``seed + i``). An agent name given more than
once (``rl2=sb3:runs/rl2_s0 rl2=sb3:runs/rl2_s1``: training seeds) pools its entries' users. Prints the
per-session table, a table over the later sessions (2..K: what memory is for) and, with
``--paired A B``, A − B per user over the later sessions (entries of A and B pair in the order given,
so seed ``i`` of A meets the same users as seed ``i`` of B). With ``--out`` it writes ``results.json``
and ``results.md`` (published whole).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dialog_env.evaluation import mean_ci
from dialog_env.io import atomic_write_json, atomic_write_text, check_output_folder, publish_folder

OUTPUTS = ("results.json", "results.md")
LABELS = {
    "success": "success",
    "return": "return",
    "turns": "turns",
    "asks": "questions",
    "re_asks": "re-asked facts",
    "cross_contradiction_rate": "cross-session contradiction rate",
}


def summarize_sessions(rows: list[list[dict[str, float]]]) -> list[dict[str, dict[str, float]]]:
    """Per session index: ``{metric: {"mean", "ci95"}}`` over episodes."""
    out = []
    for k in range(len(rows[0])):
        out.append({m: dict(zip(("mean", "ci95"), mean_ci([r[k][m] for r in rows]), strict=True)) for m in LABELS})
    return out


LATER = ("success", "return", "asks", "re_asks", "cross_contradiction_rate")
"""Later-session metrics: success and the contradiction rate averaged over sessions 2..K, the others summed."""


def later_sessions(row: list[dict[str, float]]) -> dict[str, float]:
    """One user's sessions 2..K as one record (:data:`LATER`)."""
    later = row[1:]
    out = {m: sum(s[m] for s in later) for m in LATER}
    for m in ("success", "cross_contradiction_rate"):
        out[m] /= max(1, len(later))
    return out


def later_table(later: dict[str, list[dict[str, float]]], paired: list[str] | None) -> str:
    """Markdown: each agent over sessions 2..K (per-user :func:`later_sessions` records), and ``paired``'s A − B."""

    def cells(values: dict[str, list[float]]) -> str:
        return " | ".join("{:.3f} ± {:.3f}".format(*mean_ci(values[m])) for m in LATER)

    head = "| agent | users | " + " | ".join(f"{LABELS[m]} (sessions 2..K)" for m in LATER) + " |"
    lines = [head, "|---|---|" + "---|" * len(LATER)]
    for label, per_user in later.items():
        lines.append(f"| {label} | {len(per_user)} | " + cells({m: [x[m] for x in per_user] for m in LATER}) + " |")
    if paired:
        a, b = paired
        diff = {m: [x[m] - y[m] for x, y in zip(later[a], later[b], strict=True)] for m in LATER}
        lines.append(f"| {a} − {b} (paired) | {len(later[a])} | " + cells(diff) + " |")
    return "\n".join(lines)


def _rl2(spec: str) -> bool:
    """Whether an ``sb3:<run>`` agent was trained with the previous action and reward in its observation."""
    if not spec.startswith("sb3:"):
        return False
    import yaml

    path = Path(spec[4:])
    for folder in [path, *list(path.parents)[:3]]:
        if (folder / "config.yaml").is_file():
            return bool((yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("previous_action_reward"))
    return False


def main(argv: list[str] | None = None) -> int:
    """Evaluate the agents; print and optionally write the tables."""
    from agents import make_agent
    from dialog_env.benchmark import parse_agent_entry
    from dialog_env.envs.sessions import evaluate_sessions

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", nargs="+", default=["rule", "rule_memory", "planner", "planner_memory"])
    p.add_argument("--episodes", type=int, default=200, help="returning users per agent")
    p.add_argument("--sessions", type=int, default=3, help="sessions per user")
    p.add_argument("--split", default="test", help="persona split")
    p.add_argument("--seed", type=int, default=0, help="seed of the first user")
    p.add_argument("--mode", default="act", choices=["act", "text"], help="act or text env")
    p.add_argument("--paired", nargs=2, default=None, metavar=("A", "B"), help="report A - B per user, sessions 2..K")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    if args.out:
        check_output_folder(Path(args.out), OUTPUTS, "--out")
    entries = [parse_agent_entry(a) for a in args.agents]
    if args.paired:
        counts = {label: [x for x, _ in entries].count(label) for label, _ in entries}
        for name in args.paired:
            if name not in counts:
                p.error(f"--paired: {name!r} is not one of the agents {sorted(counts)}")
        a, b = args.paired
        if counts[a] != counts[b]:
            users_a, users_b = counts[a] * args.episodes, counts[b] * args.episodes
            p.error(f"--paired: {a} has {users_a} users and {b} {users_b}; they must match")
    rows_of: dict[str, list[list[dict[str, float]]]] = {}
    for label, spec in entries:
        make_agent(spec)  # fail fast on a bad spec
        rows = evaluate_sessions(
            lambda spec=spec: make_agent(spec),
            split=args.split,
            episodes=args.episodes,
            sessions=args.sessions,
            seed=args.seed,
            mode=args.mode,
            previous_action_reward=_rl2(spec),
        )
        rows_of.setdefault(label, []).extend(rows)
        print(f"{label} ({spec}): done", file=sys.stderr, flush=True)
    results = {label: summarize_sessions(rows) for label, rows in rows_of.items()}
    lines = [f"split={args.split} mode={args.mode} users={args.episodes} sessions={args.sessions} seed={args.seed}", ""]
    head = "| agent | session | " + " | ".join(LABELS.values()) + " |"
    lines += [head, "|---|---|" + "---|" * len(LABELS)]
    for label, per in results.items():
        for k, s in enumerate(per):
            cells = [f"{s[m]['mean']:.3f} ± {s[m]['ci95']:.3f}" for m in LABELS]
            lines.append(f"| {label} | {k + 1} | " + " | ".join(cells) + " |")
    later = {label: [later_sessions(r) for r in rows] for label, rows in rows_of.items()}
    table = "\n".join(lines) + "\n\n" + later_table(later, args.paired)
    print(table)
    if args.out:
        with publish_folder(Path(args.out), OUTPUTS, "--out") as staging:
            atomic_write_json(
                staging / "results.json", {"config": vars(args), "results": results, "later_per_user": later}
            )
            atomic_write_text(staging / "results.md", table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
