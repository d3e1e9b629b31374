r"""Compare meta-learning runs' meta-tests: adaptation curves (PNG) and a markdown table with paired differences.

``python scripts/meta_curve.py --runs reptile=runs/meta_reptile multitask=runs/meta_multitask \
    start=runs/meta_start --out docs/img/meta_adaptation.png``

Each run's ``adaptation.json`` (written by ``dialog-env train meta``) holds per-task rows; runs with
the same seed, eval set and task count met the same users in the same target sessions, so the
difference of two methods is paired task by task (mean ± 95% CI of the per-task differences).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agents.lm_meta import adaptation_table, plot_adaptation
from dialog_env.evaluation import mean_ci

PAIRED = ("success", "return", "contradiction_rate", "asks", "re_asks")


def load(spec: str) -> tuple[str, dict]:
    """``NAME=RUN_DIR`` -> (name, the run's adaptation.json)."""
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise SystemExit(f"--runs: expected NAME=RUN_DIR, got {spec!r}")
    path = Path(folder) / "adaptation.json"
    if not path.is_file():
        raise SystemExit(f"--runs: {path} does not exist (run `dialog-env train meta` with --eval-tasks > 0)")
    return name, json.loads(path.read_text())


def paired(a: dict, b: dict) -> str:
    """Rows of per-k paired differences ``a - b`` over the tasks both met."""
    lines = ["| k | " + " | ".join(PAIRED) + " |", "|---|" + "---|" * len(PAIRED)]
    rows_a = {(r["task"], r["k"], r["seed"]): r for r in a["rows"]}
    rows_b = {(r["task"], r["k"], r["seed"]): r for r in b["rows"]}
    common = sorted(set(rows_a) & set(rows_b))
    for k in sorted({key[1] for key in common}):
        keys = [key for key in common if key[1] == k]
        cells = []
        for m in PAIRED:
            mean, half = mean_ci([rows_a[key][m] - rows_b[key][m] for key in keys])
            cells.append(f"{mean:+.3f} ± {half:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR of each meta-learning run")
    p.add_argument("--out", default=None, help="PNG of the adaptation curves")
    args = p.parse_args(argv)
    results = dict(load(s) for s in args.runs)
    print(adaptation_table({name: r["summary"] for name, r in results.items()}))
    names = list(results)
    for other in names[1:]:
        print(f"\n{names[0]} - {other}, paired by task:\n")
        print(paired(results[names[0]], results[other]))
    if args.out:
        plot_adaptation({name: r["summary"] for name, r in results.items()}, Path(args.out))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
