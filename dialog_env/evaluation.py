"""Run agents on held-out personas and summarise the metrics with 95% confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np

from dialog_env.driver import AgentPolicy, DialogueDriver, EpisodeHook, EpisodeRecord, play_agent
from dialog_env.view import declares_privileged

METRICS = (
    "success",
    "contradiction_rate",
    "consistency",
    "slots_discovered",
    "turns",
    "return",
    "jga",
    "privacy_rate",
    "harmful_rate",
)
METRIC_LABELS = {
    "success": "success",
    "contradiction_rate": "contradiction rate",
    "consistency": "consistency",
    "slots_discovered": "slots discovered",
    "turns": "turns",
    "return": "return",
    "jga": "tracker JGA",
    "privacy_rate": "privacy leaks",
    "harmful_rate": "harmful turns",
}
MODES = {"act": "dialog_env/PersonaRec-v0", "text": "dialog_env/PersonaRecText-v0"}


def run_episode(
    env: gym.Env,
    agent: Any,
    seed: int,
    options: dict[str, Any] | None = None,
    on_end: EpisodeHook | None = None,
) -> EpisodeRecord:
    """Play one dialogue of ``agent`` in ``env`` from ``reset(seed=seed, options=options)``."""
    driver = DialogueDriver([env], sessions=(lambda index, s: options) if options else None)
    return driver.play(AgentPolicy(agent), [seed], privileged=declares_privileged(agent), on_end=on_end)[0]


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and 95% confidence half-width (normal approximation, ``z * sd / sqrt(n)``)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    half = z * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return float(x.mean()), float(half)


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean": m, "ci95": half_width}}`` over episodes."""
    out = {}
    for m in METRICS:
        mean, half = mean_ci([r.metric(m) for r in records])
        out[m] = {"mean": mean, "ci95": half}
    return out


def paired_difference(
    records: Sequence[EpisodeRecord], baseline: Sequence[EpisodeRecord]
) -> dict[str, dict[str, float]]:
    """Per metric, the mean of ``records - baseline`` over the same dialogues and its 95% CI half-width.

    Both agents met the same personas and goals (the same seeds), so the per-dialogue difference
    cancels what the persona alone decides: its CI is narrower than the two unpaired CIs together, and
    an improvement is significant when it excludes 0.

    Raises:
        ValueError: The two lists are not the same dialogues (seeds) in the same order.
    """
    seeds, base = [r.seed for r in records], [r.seed for r in baseline]
    if seeds != base:
        raise ValueError(
            f"paired comparison needs the same dialogues in the same order: {len(seeds)} seeds against {len(base)}"
            + ("" if len(seeds) != len(base) else " (seeds differ)")
        )
    out = {}
    for m in METRICS:
        mean, half = mean_ci([a.metric(m) - b.metric(m) for a, b in zip(records, baseline, strict=True)])
        out[m] = {"mean": mean, "ci95": half}
    return out


def evaluate(
    agent_factory: Callable[[], Any],
    *,
    split: str = "test",
    episodes: int = 200,
    seed: int = 0,
    mode: str = "act",
    env_kwargs: dict[str, Any] | None = None,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    batch_size: int = 16,
    on_end: EpisodeHook | None = None,
    in_flight: int = 1,
    seeds: Sequence[int] | None = None,
) -> list[EpisodeRecord]:
    """Evaluate one agent on ``episodes`` dialogues with seeds ``seed, seed+1, ...`` (or on ``seeds``).

    Every agent evaluated with the same ``seed`` meets the same personas and goals. An agent with
    an ``act_batch`` method (LM agents) plays ``batch_size`` dialogues in lockstep; an agent with a
    ``mode`` attribute picks the environment (``text`` for LM agents).

    Args:
        agent_factory: Builds the agent (called once).
        split: Persona split.
        episodes: Number of dialogues.
        seed: First episode seed.
        mode: ``act`` (``PersonaRec-v0``) or ``text`` (``PersonaRecText-v0``).
        env_kwargs: Extra env kwargs (``noise``, ``tracker``, ``reward_weights``, ...).
        progress: Optional wrapper for the episode iterator (e.g. ``tqdm``).
        batch_size: Dialogues in flight for batched agents.
        on_end: Called as ``on_end(core, record)`` when each dialogue ends, while the env still holds it.
        in_flight: Dialogues in flight for an agent without ``act_batch`` (one agent built per
            dialogue slot): worth it where the user is an LM, whose turns are then phrased in one
            batched call per round. Records are the same as with one at a time for agenda users.
        seeds: The episode seeds, in order, instead of ``episodes`` seeds from ``seed`` (a resumed
            collection plays the ones it lacks).

    Raises:
        ValueError: Bad ``mode`` or ``episodes``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if seeds is not None:
        seeds = list(seeds)
        episodes = len(seeds)
        if not seeds:
            raise ValueError("seeds: give at least one episode seed")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    order: Sequence[int] = seeds if seeds is not None else range(seed, seed + episodes)
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
        raise ValueError(f"in_flight must be a positive integer, got {in_flight!r}")
    agent = agent_factory()
    mode = getattr(agent, "mode", None) or mode
    batched = hasattr(agent, "act_batch")
    if batched or in_flight > 1:  # several dialogues in flight: one batched agent, or one agent per slot
        n = min(batch_size if batched else in_flight, episodes)
        envs = [gym.make(MODES[mode], split=split, **(env_kwargs or {})) for _ in range(n)]
        try:
            agents = agent if batched else [agent, *(agent_factory() for _ in range(n - 1))]
            return play_agent(envs, agents, order, on_end)
        finally:
            for e in envs:
                e.close()
    env = gym.make(MODES[mode], split=split, **(env_kwargs or {}))
    it: Iterable[int] = order
    if progress is not None:
        it = progress(it)
    try:
        return [run_episode(env, agent, s, on_end=on_end) for s in it]
    finally:
        env.close()


def record_to_json(r: EpisodeRecord, with_messages: bool = False) -> dict[str, Any]:
    """A JSON-serialisable dict of a record (``return`` spelled without the underscore)."""
    d = asdict(r)
    d["return"] = d.pop("return_")
    d.pop("revealed_before")  # the user's facts: in memory for the NLI metric, never in a file
    if not with_messages:
        d.pop("messages")
    return d


def record_from_json(d: dict[str, Any]) -> EpisodeRecord:
    """The inverse of :func:`record_to_json` (a row of an eval folder's ``episodes.jsonl``; extra keys ignored)."""
    names = {f for f in EpisodeRecord.__dataclass_fields__ if f != "return_"}
    return EpisodeRecord(return_=float(d["return"]), **{k: v for k, v in d.items() if k in names})
