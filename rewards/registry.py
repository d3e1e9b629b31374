"""Finding rewards by name, by ``"package.module:attr"`` path, or by entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dialog_env.nli import NLIConsistency
from dialog_env.plugins import register, resolve
from rewards import builtin
from rewards.base import reward_name
from rewards.builtin import BuiltinTerm

ENTRY_POINT_GROUP = "dialog_env.rewards"

REWARDS: dict[str, Callable] = {
    "persona_consistency": builtin.persona_consistency,
    "task_success": builtin.task_success,
    "task_failure": builtin.task_failure,
    "turn_cost": builtin.turn_cost,
    "redundancy": builtin.redundancy,
    "rejection": builtin.rejection,
    "discovery": builtin.discovery,
    "privacy": builtin.privacy,
    "harmful_content": builtin.harmful_content,
    "nli_consistency": NLIConsistency,
}


def register_reward(name: str, fn: Callable | None = None) -> Callable:
    """Register a reward under ``name``; usable as ``register_reward("x", fn)`` or a decorator.

    Raises:
        ValueError: ``name`` is already registered to a different object.
    """
    return register(REWARDS, "reward", name, fn)


def _is_factory(obj: object) -> bool:
    """A ``get_*`` function returns the reward (TRL's pattern, e.g. ``get_soft_overlong_punishment``)."""
    return callable(obj) and not isinstance(obj, type) and getattr(obj, "__name__", "").startswith("get_")


def _instantiate(obj: object, spec: str, kwargs: Mapping[str, Any] | None = None) -> Callable:
    """The reward ``obj`` stands for: a class is instantiated, a ``get_*`` factory called (with ``kwargs``)."""
    if kwargs:
        if isinstance(obj, BuiltinTerm):
            return obj.with_params(**kwargs)
        if not (isinstance(obj, type) or _is_factory(obj)):
            raise ValueError(
                f"reward {spec!r} takes no parameters (got kwargs {sorted(kwargs)}); give a built-in with parameters, "
                "a class, or a get_* factory"
            )
    if isinstance(obj, type) or _is_factory(obj):
        try:
            obj = obj(**dict(kwargs or {}))  # type: ignore[operator]
        except TypeError as e:
            raise ValueError(f"reward {spec!r}: cannot build it with kwargs {dict(kwargs or {})}: {e}") from e
    if not callable(obj):
        raise ValueError(f"reward {spec!r} resolved to {obj!r}, which is not callable")
    return obj


def get_reward(spec: str | Callable, kwargs: Mapping[str, Any] | None = None) -> tuple[str, Callable]:
    """Resolve a reward spec to ``(name, callable)``.

    Args:
        spec: A callable (used as is); a registered name; the name of an entry point in the
            ``dialog_env.rewards`` group; or an import path ``"package.module:attr"``. A class is
            instantiated and a ``get_*`` function called (a factory, TRL's pattern), with ``kwargs``.
        kwargs: Parameters: a built-in's (``persona_consistency``: ``penalty``, ``floor``), a class's
            constructor arguments, or a ``get_*`` factory's arguments.

    Raises:
        ValueError: The spec matches nothing, or takes no such parameters; the message says what is allowed.
    """
    if callable(spec):
        if kwargs:
            return reward_name(spec), _instantiate(spec, reward_name(spec), kwargs)
        return reward_name(spec), spec
    if not isinstance(spec, str):
        raise ValueError(f"reward spec must be a name, an import path or a callable, got {spec!r}")
    if spec in REWARDS:
        obj = REWARDS[spec]
        return spec, _instantiate(obj, spec, kwargs) if kwargs or isinstance(obj, type) else obj

    def unknown(eps: list[str]) -> str:
        return (
            f"unknown reward {spec!r}; expected one of {list(REWARDS)}, an entry point of group "
            f"{ENTRY_POINT_GROUP!r} ({eps}), or an import path 'package.module:attr'"
        )

    return spec, _instantiate(resolve(spec, REWARDS, "reward", ENTRY_POINT_GROUP, unknown), spec, kwargs)


def _register_learned() -> None:
    from rewards.learned import DiscriminatorReward

    REWARDS.setdefault("discriminator", DiscriminatorReward)


_register_learned()
