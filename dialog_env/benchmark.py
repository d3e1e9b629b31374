"""The benchmark: agents x splits x noise levels x seeds -> a leaderboard with 95% CIs.

Outputs (atomically, in one folder): ``leaderboard.json``, ``leaderboard.md``, one PNG bar chart
per headline metric, and ``transcripts.jsonl`` (a few dialogues per agent and condition). The
same inputs give the same numbers: every episode's seed is fixed by the evaluation seed.

Several specs may share a label (``mppo=sb3:runs/a mppo=sb3:runs/b``): their episodes are
pooled into one row, e.g. to report a method over several training seeds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dialog_env.evaluation import METRIC_LABELS, METRICS, MODES, EpisodeRecord, evaluate, record_to_json, summarize
from dialog_env.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    check_output_folder,
    publish_folder,
)
from dialog_env.persona import SPLITS
from dialog_env.users import DEFAULT_USER, make_user
from dialog_env.world import load_world
from rewards.compose import reward_specs_from_config

CHART_METRICS = ("success", "return", "contradiction_rate", "consistency")
QUALITY_CHARTS = ("distinct_2", "words", "bleu", "perplexity", "left_rate", "nli_c")
#: Episode seeds of evaluation seed ``s`` start at ``s * SEED_STRIDE``: disjoint persona draws.
SEED_STRIDE = 1_000_003


@dataclass
class BenchmarkConfig:
    """What to benchmark.

    Attributes:
        agents: Agent specs, optionally labelled ``label=spec`` (see :func:`agents.make_agent`).
        splits: Persona splits.
        noise: Semantic error rates of the user channel.
        seeds: Evaluation seeds (each draws a different set of personas).
        episodes: Dialogues per agent spec, split, noise level and seed.
        mode: ``act`` or ``text``.
        transcripts: Dialogues kept per agent and condition in ``transcripts.jsonl``.
        reward_weights: Reward specs of every env (see :class:`rewards.WeightedReward`); ``None``: the defaults.
        user: The user simulator (see :mod:`dialog_env.users`).
        redact: Replace persona values in ``transcripts.jsonl`` with ``[slot]`` (:mod:`dialog_env.safety`).
        quality: Also measure text quality per row (:mod:`dialog_env.quality`: distinct-1/2, words per
            turn, engagement), written as a table and one chart per metric.
        references: With ``quality``: a demonstration set (``collect`` folder) whose agent turns are the
            BLEU references.
        quality_lm: With ``quality``: the model under which the agent's turns' perplexity is measured.
        quality_nli: With ``quality``: PAML's consistency C with the NLI detector (``nli_c``).
    """

    agents: list[str]
    splits: list[str] = field(default_factory=lambda: ["test", "test_unseen"])
    noise: list[float] = field(default_factory=lambda: [0.0, 0.15, 0.3])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    episodes: int = 200
    mode: str = "act"
    transcripts: int = 2
    reward_weights: Any = None
    user: str = DEFAULT_USER
    redact: bool = False
    quality: bool = False
    references: str | None = None
    quality_lm: str | None = None
    quality_nli: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and what is allowed."""
        if not self.agents:
            raise ValueError("agents: give at least one agent")
        for s in self.splits:
            if s not in (*SPLITS, "all"):
                raise ValueError(f"splits: unknown split {s!r}; expected one of {[*SPLITS, 'all']}")
        for n in self.noise:
            if not 0.0 <= n < 1.0:
                raise ValueError(f"noise: {n} is outside [0, 1)")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        if self.episodes < 1 or not self.seeds:
            raise ValueError("episodes must be positive and seeds non-empty")
        self.reward_weights = reward_specs_from_config(self.reward_weights)
        if self.user != DEFAULT_USER:
            make_user(self.user, load_world())  # fails now, with the allowed names, not mid-run
        if (self.references or self.quality_lm or self.quality_nli) and not self.quality:
            raise ValueError("references, quality_lm and quality_nli: set quality too (they are text-quality options)")
        if self.references:
            from dialog_env.quality import load_references

            try:
                load_references(self.references)
            except ValueError as e:
                raise ValueError(f"references: {e}") from e
        if self.quality_lm:
            from dialog_env.lm import model_spec_problem

            problem = model_spec_problem(self.quality_lm)
            if problem is not None:
                raise ValueError(f"quality_lm: {problem}")

    def env_kwargs(self, noise: float) -> dict[str, Any]:
        """Env kwargs of one noise level."""
        kw: dict[str, Any] = {"noise": noise}
        if self.reward_weights is not None:
            kw["reward_weights"] = self.reward_weights
        if self.user != DEFAULT_USER:
            kw["user"] = self.user
        return kw


def parse_agent_entry(entry: str) -> tuple[str, str]:
    """``"label=spec"`` -> ``(label, spec)``; a bare spec is its own label."""
    label, sep, spec = entry.partition("=")
    return (label, spec) if sep and label and spec else (entry, entry)


BENCHMARK_OUTPUTS = ("leaderboard.json", "leaderboard.md", "transcripts.jsonl")
"""Files of a benchmark output folder (and one PNG chart per metric)."""


def run_benchmark(
    cfg: BenchmarkConfig,
    out: str | Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write its files; returns the leaderboard dict.

    Raises:
        ValueError: Invalid configuration or agent spec.
    """
    from agents import make_agent

    cfg.validate()
    out = Path(out)
    check_output_folder(out, BENCHMARK_OUTPUTS, "out")
    entries = [parse_agent_entry(a) for a in cfg.agents]
    for _, spec in entries:
        make_agent(spec)  # fail fast on a bad spec, before any episode runs
    labels = list(dict.fromkeys(label for label, _ in entries))
    references = None
    if cfg.quality and cfg.references:
        from dialog_env.quality import load_references

        references = load_references(cfg.references)
    jobs = [(split, noise) for split in cfg.splits for noise in cfg.noise]
    rows, transcripts = [], []
    for label, split, noise in [(lb, s, n) for s, n in jobs for lb in labels]:
        records: list[EpisodeRecord] = []
        specs = [spec for lb, spec in entries if lb == label]
        for spec in specs:
            for seed in cfg.seeds:
                records += evaluate(
                    lambda spec=spec: make_agent(spec),
                    split=split,
                    episodes=cfg.episodes,
                    seed=seed * SEED_STRIDE,
                    mode=cfg.mode,
                    env_kwargs=cfg.env_kwargs(noise),
                )
        summary = summarize(records)
        if progress is not None:
            progress(f"{label} split={split} noise={noise}: return {summary['return']['mean']:.2f}")
        rows.append(
            {
                "agent": label,
                "split": split,
                "noise": noise,
                "episodes": len(records),
                "privileged": any(r.privileged for r in records),
                "metrics": summary,
            }
        )
        if cfg.quality:
            from dialog_env.quality import quality

            rows[-1]["quality"] = quality(records, references, cfg.quality_lm, nli=cfg.quality_nli)
        transcripts += [
            {"agent": label, "split": split, "noise": noise, **record_to_json(r, with_messages=True)}
            for r in records[: cfg.transcripts]
        ]
    board = {"config": asdict(cfg), "rows": rows}
    with publish_folder(out, BENCHMARK_OUTPUTS) as staging:
        atomic_write_json(staging / "leaderboard.json", board)
        atomic_write_text(staging / "leaderboard.md", leaderboard_markdown(board))
        if cfg.redact:
            from dialog_env.safety import redact_rows

            transcripts = redact_rows(transcripts)
        atomic_write_jsonl(staging / "transcripts.jsonl", transcripts)
        charts = plot_leaderboard(board, staging)
        if cfg.quality:
            charts += plot_leaderboard(board, staging, QUALITY_CHARTS, source="quality")
    board["charts"] = [str(out / p.name) for p in charts]
    return board


PRIVILEGED_MARK = "(privileged)"


def leaderboard_markdown(board: dict[str, Any]) -> str:
    """One table per (split, noise) condition, agents sorted by mean return."""
    cfg = board["config"]
    lines = [
        "# Leaderboard",
        "",
        f"mode={cfg['mode']}, seeds={cfg['seeds']}, {cfg['episodes']} episodes per agent spec, split, noise and seed. "
        "Mean ± 95% CI half-width over episodes (pooled over seeds and same-label specs). "
        f"{PRIVILEGED_MARK}: the agent reads the hidden persona (a ceiling, not a competitor).",
    ]
    conditions = list(dict.fromkeys((r["split"], r["noise"]) for r in board["rows"]))
    for split, noise in conditions:
        rows = sorted(
            (r for r in board["rows"] if r["split"] == split and r["noise"] == noise),
            key=lambda r: -r["metrics"]["return"]["mean"],
        )
        lines += ["", f"## split={split}, noise={noise}", ""]
        lines.append("| agent | episodes | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |")
        lines.append("|---|---|" + "---|" * len(METRICS))
        for r in rows:
            cells = [f"{r['metrics'][m]['mean']:.3f} ± {r['metrics'][m]['ci95']:.3f}" for m in METRICS]
            label = f"{r['agent']} {PRIVILEGED_MARK}" if r.get("privileged") else r["agent"]
            lines.append(f"| {label} | {r['episodes']} | " + " | ".join(cells) + " |")
        if any("quality" in r for r in rows):
            from dialog_env.quality import quality_table

            lines += ["", "Text quality (over all dialogues of the row; – where not measured):", ""]
            lines.append(quality_table({r["agent"]: r["quality"] for r in rows if "quality" in r}))
    return "\n".join(lines) + "\n"


def plot_leaderboard(
    board: dict[str, Any], out: Path, metrics: Sequence[str] = CHART_METRICS, source: str = "metrics"
) -> list[Path]:
    """Grouped bar charts (agents x conditions), one PNG per metric.

    Args:
        board: The leaderboard.
        out: Folder of the PNGs.
        metrics: Metrics to chart.
        source: ``metrics`` (episode means with 95% CI error bars) or ``quality`` (corpus-level text
            quality, no error bars; a metric measured in no row gets no chart).
    """
    import matplotlib

    from dialog_env.quality import QUALITY_LABELS

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board["rows"]
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    conditions = list(dict.fromkeys((r["split"], r["noise"]) for r in rows))
    index = {(r["agent"], r["split"], r["noise"]): r for r in rows}
    width = 0.8 / max(1, len(agents))
    paths = []
    for m in metrics:
        if source == "quality":
            values = {k: r["quality"][m] for k, r in index.items() if "quality" in r}
            if all(math.isnan(v) for v in values.values()):
                continue
            cells = {k: (v, 0.0) for k, v in values.items()}
        else:
            cells = {k: (r["metrics"][m]["mean"], r["metrics"][m]["ci95"]) for k, r in index.items()}
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(conditions) + 2), 3.8))
        x = np.arange(len(conditions))
        for k, agent in enumerate(agents):
            vals = [cells.get((agent, s, n), (math.nan, 0.0)) for s, n in conditions]
            ax.bar(
                x + (k - (len(agents) - 1) / 2) * width,
                [v[0] for v in vals],
                width,
                yerr=[v[1] for v in vals] if source != "quality" else None,
                capsize=2,
                label=agent,
            )
        ax.set_xticks(x, [f"{s}\nnoise {n}" for s, n in conditions], fontsize=8)
        ax.set_ylabel(QUALITY_LABELS[m] if source == "quality" else METRIC_LABELS[m])
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=min(4, len(agents)))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        name = f"quality_{m}" if source == "quality" else m
        paths.append(atomic_write_bytes(out / f"{name}.png", buf.getvalue()))
    return paths
