"""Finding rewards by name, by ``"package.module:attr"`` path, or by entry point."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from rewards import builtin
from rewards.base import reward_name

ENTRY_POINT_GROUP = "dialog_env.rewards"

REWARDS: dict[str, Callable] = {
    "persona_consistency": builtin.persona_consistency,
    "task_success": builtin.task_success,
    "task_failure": builtin.task_failure,
    "turn_cost": builtin.turn_cost,
    "redundancy": builtin.redundancy,
    "rejection": builtin.rejection,
    "discovery": builtin.discovery,
}


def register_reward(name: str, fn: Callable | None = None) -> Callable:
    """Register a reward under ``name``; usable as ``register_reward("x", fn)`` or a decorator.

    Raises:
        ValueError: ``name`` is already registered to a different object.
    """

    def add(f: Callable) -> Callable:
        if name in REWARDS and REWARDS[name] is not f:
            raise ValueError(f"reward name {name!r} is already registered to {REWARDS[name]!r}")
        REWARDS[name] = f
        return f

    return add(fn) if fn is not None else add


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _instantiate(obj: object, spec: str) -> Callable:
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"reward {spec!r} resolved to {obj!r}, which is not callable")
    return obj


def get_reward(spec: str | Callable) -> tuple[str, Callable]:
    """Resolve a reward spec to ``(name, callable)``.

    Args:
        spec: A callable (used as is); a registered name; the name of an entry point in the
            ``dialog_env.rewards`` group; or an import path ``"package.module:attr"`` (a class is
            instantiated with no arguments).

    Raises:
        ValueError: The spec matches nothing; the message lists what is allowed.
    """
    if callable(spec):
        return reward_name(spec), spec
    if not isinstance(spec, str):
        raise ValueError(f"reward spec must be a name, an import path or a callable, got {spec!r}")
    if spec in REWARDS:
        return spec, REWARDS[spec]
    eps = _entry_points()
    if spec in eps:
        return spec, _instantiate(eps[spec].load(), spec)  # type: ignore[attr-defined]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"reward {spec!r}: cannot import module {module_name!r}: {e}") from e
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"reward {spec!r}: module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return spec, _instantiate(obj, spec)
    raise ValueError(
        f"unknown reward {spec!r}; expected one of {list(REWARDS)}, an entry point of group "
        f"{ENTRY_POINT_GROUP!r} ({sorted(eps)}), or an import path 'package.module:attr'"
    )
