"""Run agents on held-out personas and summarise the metrics with 95% confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from dialog_env.envs.core import PersonaRecCore
from dialog_env.view import agent_view, declares_privileged
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
        outcome: ``accepted``, ``left``, ``bye``, ``truncated`` or ``false_accept``.
        mode: ``act`` or ``text``: the env the agent played in.
        privileged: The agent declared that it reads hidden state (its view had the persona).
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
    mode: str = ""
    privileged: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)

    def metric(self, name: str) -> float:
        """A metric by its name in :data:`METRICS`."""
        return float(self.return_ if name == "return" else getattr(self, name))


class EpisodeAccumulator:
    """Collects one dialogue's metrics turn by turn (shared by the sequential and batched loops)."""

    def __init__(self, core: PersonaRecCore, seed: int, privileged: bool = False) -> None:
        self.core, self.seed, self.privileged = core, seed, privileged
        self.ret, self.turns, self.bad_turns, self.jga_hits = 0.0, 0, 0, 0
        self.consistency: list[float] = []
        self.terms: dict[str, float] = {}

    def add(self, reward: float, info: dict[str, Any]) -> None:
        """Account for one step (reads the env's last turn context)."""
        ctx = self.core.last_context
        self.ret += reward
        self.turns += 1
        self.bad_turns += consistency_counts(ctx)[1] > 0
        self.consistency.append(persona_consistency([ctx])[0])
        self.jga_hits += self.core.tracker.known() == ctx.revealed
        for k, v in info["reward_terms"].items():
            self.terms[k] = self.terms.get(k, 0.0) + v

    def record(self, outcome: str | None) -> EpisodeRecord:
        """The finished episode's record."""
        outcome = outcome or "truncated"
        return EpisodeRecord(
            seed=self.seed,
            success=outcome == "accepted",
            contradiction_rate=self.bad_turns / self.turns,
            consistency=float(np.mean(self.consistency)),
            slots_discovered=len(self.core.judge.revealed),
            turns=self.turns,
            return_=self.ret,
            jga=self.jga_hits / self.turns,
            outcome=outcome,
            reward_terms=self.terms,
            mode=self.core.mode,
            privileged=self.privileged,
            messages=self.core.messages(),
        )


def _core(env: gym.Env) -> PersonaRecCore:
    core = env.unwrapped
    if not isinstance(core, PersonaRecCore):
        raise TypeError(f"evaluation needs a PersonaRec environment, got {type(core).__name__}")
    return core


#: Called when a dialogue ends, while its env still holds it: ``on_end(core, record)``.
EpisodeHook = Callable[[PersonaRecCore, "EpisodeRecord"], None]


def run_episode(
    env: gym.Env,
    agent: Any,
    seed: int,
    options: dict[str, Any] | None = None,
    on_end: EpisodeHook | None = None,
) -> EpisodeRecord:
    """Play one dialogue of ``agent`` in ``env`` from ``reset(seed=seed)``."""
    core = _core(env)
    obs, info = env.reset(seed=seed, options=options)
    privileged = declares_privileged(agent)
    agent.reset(agent_view(env, privileged), seed=seed)
    acc = EpisodeAccumulator(core, seed, privileged)
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        acc.add(reward, info)
        if terminated or truncated:
            record = acc.record(info["outcome"])
            if on_end is not None:
                on_end(core, record)
            return record


def run_episodes_batched(
    envs: Sequence[gym.Env], agent: Any, seeds: Sequence[int], on_end: EpisodeHook | None = None
) -> list[EpisodeRecord]:
    """Play one dialogue per seed, ``len(envs)`` at a time, with ``agent.act_batch`` per turn.

    Each env takes the next seed when its dialogue ends; records come back in seed order, equal
    to what :func:`run_episode` gives for each seed when the agent's choices are per-dialogue.
    """
    cores = [_core(e) for e in envs]
    privileged = declares_privileged(agent)
    views = [agent_view(e, privileged) for e in envs]
    pending = list(enumerate(seeds))[::-1]
    records: dict[int, EpisodeRecord] = {}
    active: dict[int, tuple[int, EpisodeAccumulator]] = {}

    def start(k: int) -> None:
        if pending:
            idx, s = pending.pop()
            envs[k].reset(seed=s)
            agent.reset(views[k], seed=s)
            active[k] = (idx, EpisodeAccumulator(cores[k], s, privileged))

    for k in range(len(envs)):
        start(k)
    while active:
        ks = sorted(active)
        texts = agent.act_batch([views[k] for k in ks])
        for k, text in zip(ks, texts, strict=True):
            _, reward, terminated, truncated, info = envs[k].step(text)
            idx, acc = active[k]
            acc.add(reward, info)
            if terminated or truncated:
                records[idx] = acc.record(info["outcome"])
                if on_end is not None:
                    on_end(cores[k], records[idx])
                del active[k]
                start(k)
    return [records[i] for i in range(len(seeds))]


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
    batch_size: int = 16,
    on_end: EpisodeHook | None = None,
) -> list[EpisodeRecord]:
    """Evaluate one agent on ``episodes`` dialogues with seeds ``seed, seed+1, ...``.

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

    Raises:
        ValueError: Bad ``mode`` or ``episodes``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    agent = agent_factory()
    mode = getattr(agent, "mode", None) or mode
    if hasattr(agent, "act_batch"):
        envs = [gym.make(MODES[mode], split=split, **(env_kwargs or {})) for _ in range(min(batch_size, episodes))]
        try:
            return run_episodes_batched(envs, agent, range(seed, seed + episodes), on_end)
        finally:
            for e in envs:
                e.close()
    env = gym.make(MODES[mode], split=split, **(env_kwargs or {}))
    seeds: Iterable[int] = range(seed, seed + episodes)
    if progress is not None:
        seeds = progress(seeds)
    try:
        return [run_episode(env, agent, s, on_end=on_end) for s in seeds]
    finally:
        env.close()


def record_to_json(r: EpisodeRecord, with_messages: bool = False) -> dict[str, Any]:
    """A JSON-serialisable dict of a record (``return`` spelled without the underscore)."""
    d = asdict(r)
    d["return"] = d.pop("return_")
    if not with_messages:
        d.pop("messages")
    return d
