"""The hardening table: hardened vs same-steps control assistants, per training seed and pooled.

    python scripts/harden_table.py runs/eval2k_h5_s0 runs/eval2k_h5_s1 runs/eval2k_h5_s2 --out runs/harden_table.json

Each folder is one training seed's evaluation: sub-folders ``agenda``, ``r1`` (the first adversary,
trained against the starting assistant), ``br_control`` and ``br_hardened`` (a best-response adversary
trained against each final assistant: ``train adversarial --assistant-steps 0``), each written by
``dialog-env eval --agents fixed=... control=... hardened=... --out <folder>/<user>`` on the same
dialogue seeds. Printed (markdown) and written (``--out``, JSON):

1. per seed and user: success and contradiction rate of every agent, and hardened − control paired
   over the same dialogues;
2. pooled over the seeds: each assistant under its *own* attack (fixed: ``r1``, control:
   ``br_control``, hardened: ``br_hardened``; different users, so the difference is unpaired), and
   hardened − control against the agenda user and under each shared attack, paired over (seed,
   dialogue); hardened − fixed likewise (own attack, agenda user);
3. the attack suite: every assistant against all three attacks of its seed (one trained against each
   of the three assistants, so no assistant is spared its own), pooled and paired;
4. across seeds: each seed's hardened − control (against the agenda user, paired; under each one's own
   attack, unpaired; the attack suite, paired) and hardened − fixed (attack suite) is one sample, and
   the table gives their mean with a Student-t 95% CI over the seeds — the interval that covers the
   training seeds' spread.

Means with 95% CI half-widths over dialogues (normal approximation); the pooled CIs count every
(seed, dialogue) as one sample, so they cover the dialogue sampling, not the training seeds' spread —
the per-seed rows and the across-seed rows show that.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

USERS = ("agenda", "r1", "br_control", "br_hardened")
AGENTS = ("fixed", "control", "hardened")
OWN = {"fixed": "r1", "control": "br_control", "hardened": "br_hardened"}
METRICS = ("success", "contradiction_rate")
# Student-t 0.975 quantiles by degrees of freedom (1..30); above 30 the normal 1.96 is within 4%.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
        2.042)  # fmt: skip


def load(folder: Path) -> dict[str, list[Any]]:
    """``agent -> its records in seed order`` from an eval folder's ``episodes.jsonl``."""
    from dialog_env.evaluation import record_from_json

    path = folder / "episodes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (write it with dialog-env eval --out {folder})")
    out: dict[str, list[Any]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        out[d["agent"]].append(record_from_json(d))
    missing = [a for a in AGENTS if a not in out]
    if missing:
        raise ValueError(
            f"{path}: agents {missing} missing; evaluate with --agents {' '.join(a + '=...' for a in AGENTS)}"
        )
    return {a: sorted(rs, key=lambda r: r.seed) for a, rs in out.items()}


def _summary(records: list[Any]) -> dict[str, dict[str, float]]:
    from dialog_env.evaluation import summarize

    s = summarize(records)
    return {m: {**s[m], "n": len(records)} for m in METRICS}


def _paired(cells: list[dict[str, list[Any]]], a: str, b: str) -> dict[str, dict[str, float]]:
    """``a - b`` over the same dialogues of every cell (seeds pooled: the cells' records concatenated)."""
    from dialog_env.evaluation import paired_difference

    first, second = [r for c in cells for r in c[a]], [r for c in cells for r in c[b]]
    d = paired_difference(first, second)
    return {m: {**d[m], "n": len(first)} for m in METRICS}


def across_seeds(values: list[float]) -> dict[str, float]:
    """Mean of one value per training seed with a Student-t 95% CI half-width (NaN for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": math.nan, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    return {"mean": mean, "ci95": t * sd / math.sqrt(n), "n": n}


def table(folders: list[Path]) -> dict[str, Any]:
    """The per-seed and pooled figures."""
    seeds = [{u: load(f / u) for u in USERS} for f in folders]
    per_seed = [
        {
            "folder": str(folder),
            "users": {
                u: {
                    **{a: _summary(cells[u][a]) for a in AGENTS},
                    "hardened-control": _paired([cells[u]], "hardened", "control"),
                }
                for u in USERS
            },
        }
        for folder, cells in zip(folders, seeds, strict=True)
    ]
    own = {a: _summary([r for cells in seeds for r in cells[OWN[a]][a]]) for a in AGENTS}

    def unpaired(a: str, b: str) -> dict[str, dict[str, float]]:
        return {
            m: {
                "mean": own[a][m]["mean"] - own[b][m]["mean"],
                "ci95": math.hypot(own[a][m]["ci95"], own[b][m]["ci95"]),
            }
            for m in METRICS
        }

    shared = {u: _paired([cells[u] for cells in seeds], "hardened", "control") for u in USERS}
    attacks = [cells[u] for cells in seeds for u in USERS if u != "agenda"]
    suite = {f"{a}-{b}": _paired(attacks, a, b) for a, b in (("hardened", "control"), ("hardened", "fixed"))}
    suite["of_each"] = {a: _summary([r for c in attacks for r in c[a]]) for a in AGENTS}
    vs_fixed = {
        "own_attack": unpaired("hardened", "fixed"),
        "agenda": _paired([cells["agenda"] for cells in seeds], "hardened", "fixed"),
    }
    seed_own = [
        {m: s["users"]["br_hardened"]["hardened"][m]["mean"] - s["users"]["br_control"]["control"][m]["mean"]
         for m in METRICS}
        for s in per_seed
    ]  # fmt: skip
    seed_agenda = [s["users"]["agenda"]["hardened-control"] for s in per_seed]
    seed_suite = {
        f"attack_suite_{a}-{b}": [_paired([cells[u] for u in USERS if u != "agenda"], a, b) for cells in seeds]
        for a, b in (("hardened", "control"), ("hardened", "fixed"))
    }
    seed_level = {
        "own_attack": {m: across_seeds([d[m] for d in seed_own]) for m in METRICS},
        "agenda": {m: across_seeds([d[m]["mean"] for d in seed_agenda]) for m in METRICS},
        **{k: {m: across_seeds([d[m]["mean"] for d in v]) for m in METRICS} for k, v in seed_suite.items()},
    }
    return {
        "per_seed": per_seed,
        "own_attack": own,
        "own_attack_hardened-control": unpaired("hardened", "control"),
        "shared_paired": shared,
        "hardened-fixed": vs_fixed,
        "attack_suite": suite,
        "across_seeds": seed_level,
    }


def _f(d: dict[str, float], sign: bool = False) -> str:
    ci = "(one seed: no CI)" if math.isnan(d["ci95"]) else f"± {d['ci95']:.3f}"
    return f"{d['mean']:+.3f} {ci}" if sign else f"{d['mean']:.3f} {ci}"


def _pair(d: dict[str, dict[str, float]]) -> str:
    return f"{_f(d['success'], True)} | {_f(d['contradiction_rate'], True)}"


def markdown(t: dict[str, Any]) -> str:
    """The figures as markdown tables."""
    lines = [
        "| seed | user | fixed: success / contradiction | control | hardened | hardened − control, paired |",
        "|---|---|---|---|---|---|",
    ]
    for k, s in enumerate(t["per_seed"]):
        for u in USERS:
            r = s["users"][u]
            cells = [f"{_f(r[a]['success'])} / {_f(r[a]['contradiction_rate'])}" for a in AGENTS]
            d = _pair(r["hardened-control"]).replace(" | ", " / ")
            lines.append(f"| {k} | {u} | " + " | ".join(cells) + f" | {d} |")
    lines += ["", "| pooled over seeds | success | contradiction rate |", "|---|---|---|"]
    for a in AGENTS:
        o = t["own_attack"][a]
        lines.append(f"| {a} under its own attack ({OWN[a]}) | {_f(o['success'])} | {_f(o['contradiction_rate'])} |")
    lines.append(
        f"| hardened − control, each under its own attack (unpaired) | {_pair(t['own_attack_hardened-control'])} |"
    )
    for u in USERS:
        lines.append(f"| hardened − control against {u} (paired) | {_pair(t['shared_paired'][u])} |")
    v = t["hardened-fixed"]
    lines.append(f"| hardened − fixed, each under its own attack (unpaired) | {_pair(v['own_attack'])} |")
    lines.append(f"| hardened − fixed against agenda (paired) | {_pair(v['agenda'])} |")
    lines += ["", "| attack suite (all three attacks of each seed, pooled) | success | contradiction rate |"]
    lines.append("|---|---|---|")
    for a in AGENTS:
        o = t["attack_suite"]["of_each"][a]
        lines.append(f"| {a} | {_f(o['success'])} | {_f(o['contradiction_rate'])} |")
    for k in ("hardened-control", "hardened-fixed"):
        lines.append(f"| {k.replace('-', ' − ')} (paired) | {_pair(t['attack_suite'][k])} |")
    n = t["across_seeds"]["agenda"]["success"]["n"]
    lines += ["", f"| across {n} seeds (mean of per-seed differences, t 95% CI) | success | contradiction rate |"]
    lines.append("|---|---|---|")
    lines.append(f"| hardened − control, each under its own attack | {_pair(t['across_seeds']['own_attack'])} |")
    lines.append(f"| hardened − control against agenda | {_pair(t['across_seeds']['agenda'])} |")
    for k in ("hardened-control", "hardened-fixed"):
        lines.append(f"| {k.replace('-', ' − ')}, attack suite | {_pair(t['across_seeds']['attack_suite_' + k])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: eval folders, one per training seed; ``--out`` writes the JSON (atomically)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="one eval folder per training seed")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = p.parse_args(argv)
    try:
        t = table(args.folders)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    print(markdown(t))
    if args.out is not None:
        from dialog_env.io import atomic_write_json

        atomic_write_json(args.out, t)
    return t


if __name__ == "__main__":
    main()
