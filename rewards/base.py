"""The reward protocol and the checks every reward call goes through."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from dialog_env.context import TurnContext


class RewardError(RuntimeError):
    """A reward raised, returned the wrong number of values, or returned NaN / a non-number."""


@runtime_checkable
class Reward(Protocol):
    """A reward scores a batch of turns: ``reward(contexts) -> list[float]``, one per context.

    Plain functions, callable class instances and ``"package.module:attr"`` strings all work
    (see :func:`rewards.get_reward`). A reward may read privileged fields of the contexts.
    """

    def __call__(self, contexts: Sequence[TurnContext]) -> Sequence[float]:
        """Return one float per context."""
        ...


def reward_name(fn: Callable) -> str:
    """The display name of a reward: its ``__name__``, else its class name."""
    return getattr(fn, "__name__", None) or type(fn).__name__


_INF = math.inf


def call_reward(name: str, fn: Callable, contexts: Sequence[TurnContext]) -> list[float]:
    """Call a reward and validate what it returns.

    Raises:
        RewardError: The reward raised, returned a wrong count, a non-number, NaN or an infinity.
            The message names the reward.
    """
    try:
        out = fn(contexts)
    except Exception as e:
        raise RewardError(f"reward {name!r} raised {type(e).__name__}: {e}") from e
    # Fast path (the env calls this every step): a list of finite floats of the right length
    # (the chained comparison is False for NaN and both infinities).
    if type(out) is list and len(out) == len(contexts) and all(type(v) is float and -_INF < v < _INF for v in out):
        return out
    try:
        values = [float(x) for x in out]
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name!r} must return a sequence of floats, got {out!r}") from e
    if len(values) != len(contexts):
        raise RewardError(f"reward {name!r} returned {len(values)} values for {len(contexts)} contexts")
    for i, v in enumerate(values):
        if math.isnan(v):
            raise RewardError(f"reward {name!r} returned NaN for context {i}")
        if math.isinf(v):
            raise RewardError(f"reward {name!r} returned {v} for context {i}; rewards must be finite numbers")
    return values


class per_turn:  # noqa: N801 - used as a decorator, named like one
    """Lift a function of one :class:`TurnContext` to a batch reward.

    Example:
        >>> @per_turn
        ... def politeness(ctx):
        ...     return 0.1 if "please" in ctx.agent_text.lower() else 0.0
        >>> politeness.__name__
        'politeness'
    """

    def __init__(self, fn: Callable[[TurnContext], float]) -> None:
        self.fn = fn
        self.__name__ = reward_name(fn)
        self.__doc__ = fn.__doc__

    def __call__(self, contexts: Sequence[TurnContext]) -> list[float]:
        """Score each context with the wrapped function."""
        return [float(self.fn(c)) for c in contexts]
