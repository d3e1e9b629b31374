"""Run agents on held-out personas and summarise the metrics with 95% confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from dialog_env.envs.core import PersonaRecCore
from rewards.builtin import consistency_counts, persona_consistency

METRICS = ("success", "contradiction_rate", "consistency", "slots_discovered", "turns", "return", "jga")
METRIC_LABELS = {
    "success": "success",
    "contradiction_rate": "contradiction rate",
    "consistency": "consistency",
    "slots_discovered": "slots discovered",
    "turns": "turns",
    "return": "return",
    "jga": "tracker JGA",
}
MODES = {"act": "dialog_env/PersonaRec-v0", "text": "dialog_env/PersonaRecText-v0"}


@dataclass
class EpisodeRecord:
    """Metrics of one dialogue.

    Attributes:
        success: The user accepted a recommendation.
        contradiction_rate: Fraction of agent turns contradicting a revealed fact.
        consistency: Mean per-turn ``persona_consistency``.
        slots_discovered: Persona slots the user revealed by the end.
        turns: Agent turns.
        return_: Sum of rewards.
        jga: Joint-goal accuracy of the tracker over the episode's turns.
        reward_terms: Episode sums of each reward term.
        messages: The dialogue in chat format.
        outcome: ``accepted``, ``left``, ``bye`` or ``truncated``.
    """

    seed: int
    success: bool
    contradiction_rate: float
    consistency: float
    slots_discovered: int
    turns: int
    return_: float
    jga: float
    outcome: str
    reward_terms: dict[str, float] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)

    def metric(self, name: str) -> float:
        """A metric by its name in :data:`METRICS`."""
        return float(self.return_ if name == "return" else getattr(self, name))


def run_episode(env: gym.Env, agent: Any, seed: int, options: dict[str, Any] | None = None) -> EpisodeRecord:
    """Play one dialogue of ``agent`` in ``env`` from ``reset(seed=seed)``."""
    core = env.unwrapped
    if not isinstance(core, PersonaRecCore):
        raise TypeError(f"run_episode needs a PersonaRec environment, got {type(core).__name__}")
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(env, seed=seed)
    ret, turns, bad_turns, jga_hits = 0.0, 0, 0, 0
    consistency: list[float] = []
    terms: dict[str, float] = {}
    outcome = "truncated"
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        ctx = core.last_context
        ret += reward
        turns += 1
        bad_turns += consistency_counts(ctx)[1] > 0
        consistency.append(persona_consistency([ctx])[0])
        jga_hits += core.tracker.known() == ctx.revealed
        for k, v in info["reward_terms"].items():
            terms[k] = terms.get(k, 0.0) + v
        if terminated or truncated:
            outcome = info["outcome"] or "truncated"
            break
    return EpisodeRecord(
        seed=seed,
        success=outcome == "accepted",
        contradiction_rate=bad_turns / turns,
        consistency=float(np.mean(consistency)),
        slots_discovered=len(core.user.revealed),
        turns=turns,
        return_=ret,
        jga=jga_hits / turns,
        outcome=outcome,
        reward_terms=terms,
        messages=core.messages(),
    )


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


def evaluate(
    agent_factory: Callable[[], Any],
    *,
    split: str = "test",
    episodes: int = 200,
    seed: int = 0,
    mode: str = "act",
    env_kwargs: dict[str, Any] | None = None,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> list[EpisodeRecord]:
    """Evaluate one agent on ``episodes`` dialogues with seeds ``seed, seed+1, ...``.

    Every agent evaluated with the same ``seed`` meets the same personas and goals.

    Args:
        agent_factory: Builds the agent (called once).
        split: Persona split.
        episodes: Number of dialogues.
        seed: First episode seed.
        mode: ``act`` (``PersonaRec-v0``) or ``text`` (``PersonaRecText-v0``).
        env_kwargs: Extra env kwargs (``noise``, ``tracker``, ``reward_weights``, ...).
        progress: Optional wrapper for the episode iterator (e.g. ``tqdm``).

    Raises:
        ValueError: Bad ``mode`` or ``episodes``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    env = gym.make(MODES[mode], split=split, **(env_kwargs or {}))
    agent = agent_factory()
    seeds: Iterable[int] = range(seed, seed + episodes)
    if progress is not None:
        seeds = progress(seeds)
    try:
        return [run_episode(env, agent, s) for s in seeds]
    finally:
        env.close()


def record_to_json(r: EpisodeRecord, with_messages: bool = False) -> dict[str, Any]:
    """A JSON-serialisable dict of a record (``return`` spelled without the underscore)."""
    d = asdict(r)
    d["return"] = d.pop("return_")
    if not with_messages:
        d.pop("messages")
    return d
