"""Weighted composition of reward terms."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from dialog_env.context import TurnContext
from rewards.base import call_reward
from rewards.builtin import BuiltinTerm
from rewards.registry import get_reward

# PyDial's benchmark reward is success * 20 - turns; ConvLab charges a failed dialogue too
# (+80 / -40), and conversational recommenders (EAR, CRM) a rejected recommendation. A failure
# costs more than a rejection, so trying beats giving up; nothing pays for restating the user.
DEFAULT_WEIGHTS: dict[str, float] = {
    "task_success": 20.0,
    "task_failure": 10.0,
    "turn_cost": 1.0,
    "rejection": 5.0,
    "persona_consistency": 1.0,
    "redundancy": 1.0,
    "discovery": 2.0,
}


class WeightedReward:
    """``reward = sum_i w_i * term_i``; every term is reported, weighted or not.

    Args:
        weights: Reward spec (name, entry point, ``"module:attr"`` path or callable) -> weight.
            ``None`` means :data:`DEFAULT_WEIGHTS`. A weight of 0 keeps a term reported but
            out of the sum.

    Raises:
        ValueError: An unknown reward spec, or a weight that is not a finite number.
    """

    def __init__(self, weights: Mapping[str | Callable, float] | None = None) -> None:
        weights = DEFAULT_WEIGHTS if weights is None else weights
        if not isinstance(weights, Mapping):
            raise ValueError(f"reward weights must be a mapping of reward -> weight, got {weights!r}")
        self.terms: list[tuple[str, Callable, float]] = []
        for spec, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
                raise ValueError(f"reward weight for {spec!r} must be a finite number, got {w!r}")
            name, fn = get_reward(spec)
            if any(n == name for n, _, _ in self.terms):
                raise ValueError(f"reward {name!r} appears twice in the weights")
            self.terms.append((name, fn, float(w)))
        if not self.terms:
            raise ValueError("reward weights are empty; give at least one reward")

    @property
    def names(self) -> list[str]:
        """Term names, in order."""
        return [n for n, _, _ in self.terms]

    @property
    def weights(self) -> dict[str, float]:
        """Term name -> weight."""
        return {n: w for n, _, w in self.terms}

    def __call__(self, contexts: Sequence[TurnContext]) -> tuple[list[float], dict[str, list[float]]]:
        """Score a batch: returns ``(totals, {term: values})``.

        Raises:
            rewards.RewardError: A term raised or returned NaN (the message names it).
        """
        totals = [0.0] * len(contexts)
        per_term: dict[str, list[float]] = {}
        for name, fn, w in self.terms:
            if type(fn) is BuiltinTerm:  # our own scorers: skip the per-call checks (hot path)
                score = fn.score
                vals = [score(c) for c in contexts]
            else:
                vals = call_reward(name, fn, contexts)
            per_term[name] = vals
            if w:
                for i, v in enumerate(vals):
                    totals[i] += w * v
        return totals, per_term
