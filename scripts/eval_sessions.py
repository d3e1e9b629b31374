"""Agents against returning users (PersonaRecSessions-v0): per-session success, re-asks, contradictions.

    python scripts/eval_sessions.py --agents rule rule_memory planner planner_memory --out runs/sessions_eval

Each agent plays the same users (episode ``i`` has seed ``seed + i``). Prints one table per metric
group and, with ``--out``, writes ``results.json`` and ``results.md`` (published whole).
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
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    if args.out:
        check_output_folder(Path(args.out), OUTPUTS, "--out")
    results = {}
    for label, spec in (parse_agent_entry(a) for a in args.agents):
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
        results[label] = summarize_sessions(rows)
        print(f"{label}: done", file=sys.stderr, flush=True)
    lines = [f"split={args.split} mode={args.mode} users={args.episodes} sessions={args.sessions} seed={args.seed}", ""]
    head = "| agent | session | " + " | ".join(LABELS.values()) + " |"
    lines += [head, "|---|---|" + "---|" * len(LABELS)]
    for label, per in results.items():
        for k, s in enumerate(per):
            cells = [f"{s[m]['mean']:.3f} ± {s[m]['ci95']:.3f}" for m in LABELS]
            lines.append(f"| {label} | {k + 1} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with publish_folder(Path(args.out), OUTPUTS, "--out") as staging:
            atomic_write_json(staging / "results.json", {"config": vars(args), "results": results})
            atomic_write_text(staging / "results.md", table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
