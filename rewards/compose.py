"""Weighted composition of reward terms."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dialog_env.context import TurnContext
from rewards.base import call_reward, reward_name
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


RewardSpecs = Mapping[Any, Any] | Sequence[Mapping[str, Any]]
"""What ``reward_weights`` takes: ``{spec: weight}``, ``{spec: {"weight": w, "kwargs": {...}}}``, or a
list of ``{"name": spec, "weight": w, "kwargs": {...}}`` (``kwargs`` optional)."""

_SPEC_KEYS = ("name", "weight", "kwargs")


def parse_reward_specs(specs: RewardSpecs | None) -> list[tuple[Any, float, dict[str, Any]]]:
    """Normalise any accepted form of reward specs to ``[(spec, weight, kwargs), ...]``.

    Args:
        specs: See :data:`RewardSpecs`; ``None`` means :data:`DEFAULT_WEIGHTS`.

    Raises:
        ValueError: A malformed entry; the message names it (``[2].kwargs``, ``'discovery'.weight``)
            and what is allowed.
    """
    if specs is None:
        specs = DEFAULT_WEIGHTS
    entries: list[tuple[str, Any, Any, Any]] = []  # (where, spec, weight, kwargs)
    if isinstance(specs, Mapping):
        for spec, value in specs.items():
            where = repr(spec) if isinstance(spec, str) else reward_name(spec)
            if isinstance(value, Mapping):
                unknown = sorted(set(value) - {"weight", "kwargs"})
                if unknown:
                    raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: ['weight', 'kwargs']")
                if "weight" not in value:
                    raise ValueError(f"{where}: missing 'weight'")
                entries.append((where, spec, value["weight"], value.get("kwargs")))
            else:
                entries.append((where, spec, value, None))
    elif isinstance(specs, Sequence) and not isinstance(specs, str | bytes):
        for i, entry in enumerate(specs):
            where = f"[{i}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected a mapping with keys {list(_SPEC_KEYS)}, got {entry!r}")
            unknown = sorted(set(entry) - set(_SPEC_KEYS))
            missing = [k for k in ("name", "weight") if k not in entry]
            if unknown or missing:
                raise ValueError(f"{where}: unknown key(s) {unknown}, missing {missing}; allowed: {list(_SPEC_KEYS)}")
            entries.append((where, entry["name"], entry["weight"], entry.get("kwargs")))
    else:
        raise ValueError(f"expected a mapping of reward -> weight or a list of {{name, weight, kwargs}}, got {specs!r}")
    out = []
    for where, spec, w, kwargs in entries:
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise ValueError(f"{where}.weight: reward weight for {spec!r} must be a finite number, got {w!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ValueError(f"{where}.kwargs: expected a mapping of parameter -> value, got {kwargs!r}")
        out.append((spec, float(w), dict(kwargs or {})))
    return out


class WeightedReward:
    """``reward = sum_i w_i * term_i``; every term is reported, weighted or not.

    Args:
        weights: Reward specs (see :data:`RewardSpecs`): each a name, entry point, ``"module:attr"``
            path or callable, with a weight and optional ``kwargs`` (a built-in's parameters, a
            class's arguments, a ``get_*`` factory's arguments). ``None`` means
            :data:`DEFAULT_WEIGHTS`. A weight of 0 keeps a term reported but out of the sum.

    Raises:
        ValueError: An unknown reward spec, a malformed entry, or a weight that is not a finite number.
    """

    def __init__(self, weights: RewardSpecs | None = None) -> None:
        self.terms: list[tuple[str, Callable, float]] = []
        for spec, w, kwargs in parse_reward_specs(weights):
            name, fn = get_reward(spec, kwargs)
            if any(n == name for n, _, _ in self.terms):
                raise ValueError(f"reward {name!r} appears twice in the weights")
            self.terms.append((name, fn, w))
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
        if len(contexts) == 1:  # one env's step (the hot path): no per-term list comprehensions
            total, terms = self.score_one(contexts[0])
            return [total], {k: [v] for k, v in terms.items()}
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

    def score_one(self, ctx: TurnContext) -> tuple[float, dict[str, float]]:
        """Score one turn: returns ``(total, {term: value})``, the same numbers as a batch of one.

        Raises:
            rewards.RewardError: A term raised or returned NaN (the message names it).
        """
        total = 0.0
        terms: dict[str, float] = {}
        for name, fn, w in self.terms:
            v = fn.score(ctx) if type(fn) is BuiltinTerm else call_reward(name, fn, [ctx])[0]
            terms[name] = v
            if w:
                total += w * v
        return total, terms


def reward_specs_from_config(
    value: Any, field: str = "reward_weights", error: type[Exception] = ValueError
) -> list[dict[str, Any]] | None:
    """A config field's reward specs, checked and normalised for env kwargs (JSON-serialisable).

    Args:
        value: ``None`` or ``""`` (the defaults), a mapping or list (:data:`RewardSpecs`, from a YAML
            config), or a YAML/JSON string of one (from a command-line flag).
        field: The config field's name, for messages.
        error: The exception class to raise (a config's own error type).

    Returns:
        ``[{"name", "weight", "kwargs"}, ...]``, or ``None`` for the defaults.

    Raises:
        error: Unparsable, malformed or unknown specs; the message starts with ``field``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise error(f"{field}: not YAML/JSON: {e}") from e
    try:
        specs = parse_reward_specs(value)
        for spec, _, _ in specs:
            if not isinstance(spec, str):
                raise ValueError(f"reward specs in a config are names or import paths, got {spec!r}")
        WeightedReward(value)  # resolves every name and parameter now, not at the first env step
    except ValueError as e:
        raise error(f"{field}: {e}") from e
    return [{"name": spec, "weight": w, "kwargs": kw} for spec, w, kw in specs]
