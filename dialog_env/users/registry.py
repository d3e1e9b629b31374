"""Finding user simulators: a registered name, an import path, or an entry point.

``user=`` in every env takes a spec resolved here. A simulator is built by a factory called with
the world, ``factory(world)``; a class whose constructor takes the world is such a factory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dialog_env.plugins import register, resolve
from dialog_env.users.agenda import AgendaUser
from dialog_env.users.base import UserSimulator
from dialog_env.world import World

ENTRY_POINT_GROUP = "dialog_env.users"
DEFAULT_USER = "agenda"

UserFactory = Callable[[World], Any]
USERS: dict[str, UserFactory] = {"agenda": AgendaUser}
"""Registered simulators: name -> factory taking the world."""

_PROTOCOL = ("reset", "respond", "render")


def register_user(name: str, factory: UserFactory | None = None) -> Any:
    """Register a simulator factory under ``name``; usable as ``register_user("x", cls)`` or a decorator.

    Raises:
        ValueError: ``name`` is already registered to a different factory.
    """
    return register(USERS, "user", name, factory)


LM_PREFIX = "lm:"
"""``lm:<model>``: the LM-backed user (:class:`dialog_env.users.lm.LMUser`) on ``<model>``."""


ADV_PREFIX = "adv:"
"""``adv:<run>``: a MaskablePPO user trained on ``PersonaRecDuel-v0`` (``users.adversarial.AdversarialUser``)."""


def _resolve(spec: str) -> UserFactory:
    if spec in USERS:
        return USERS[spec]
    if spec.startswith(ADV_PREFIX):
        from dialog_env.users.adversarial import AdversarialUser, load_user_policy

        policy = load_user_policy(spec[len(ADV_PREFIX) :])  # a clear error now, not at the first turn
        return functools.partial(AdversarialUser, policy=policy)
    if spec.startswith(LM_PREFIX):
        from dialog_env.lm import model_spec_problem
        from dialog_env.users.lm import LMUser

        model = spec[len(LM_PREFIX) :]
        problem = model_spec_problem(model)
        if problem:
            raise ValueError(f"user {spec!r}: {problem}")
        return functools.partial(LMUser, model=model)

    def unknown(eps: list[str]) -> str:
        return (
            f"user: unknown user {spec!r}; expected one of {sorted(USERS)}, 'lm:<model>' (an LM-backed user), "
            "'adv:<run>' (a trained adversarial user), an "
            f"entry point of group {ENTRY_POINT_GROUP!r} ({eps}), or an import path 'package.module:attr'"
        )

    return resolve(spec, USERS, "user", ENTRY_POINT_GROUP, unknown)


def make_user(spec: str, world: World) -> UserSimulator:
    """Build the simulator ``spec`` names for ``world``.

    Args:
        spec: A registered name (:data:`USERS`), ``"lm:<model>"`` (the LM-backed user on
            ``smollm2``, a Hugging Face id or a model folder), an entry point of the
            ``dialog_env.users`` group, or ``"package.module:attr"``; the target is a factory
            called with the world.
        world: The env's world.

    Raises:
        ValueError: The spec matches nothing (the message lists what is allowed).
        TypeError: What it builds lacks a method of :class:`UserSimulator`.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"user: expected a registered name or an import path, got {spec!r}")
    factory = _resolve(spec)
    if not callable(factory):
        raise TypeError(f"user {spec!r} resolved to {factory!r}, which is not a factory taking the world")
    user = factory(world)
    missing = [m for m in _PROTOCOL if not callable(getattr(user, m, None))]
    if missing:
        raise TypeError(f"user {spec!r} built {type(user).__name__}, which lacks UserSimulator method(s) {missing}")
    return user


def check_user_spec(spec: Any, error: type[Exception] = ValueError) -> str:
    """Resolve ``spec`` now (a config's ``user`` field), so a bad one fails before any training starts.

    An LM user's model is not loaded (it loads on its first turn).

    Raises:
        error: ``user: ...`` with what is allowed.
    """
    from dialog_env.world import load_world

    if not isinstance(spec, str) or not spec:
        raise error(f"user: expected a user spec (agenda, lm:<model>, adv:<run>, package.module:attr), got {spec!r}")
    try:
        make_user(spec, load_world())
    except (ValueError, TypeError, ImportError) as e:
        msg = str(e)
        raise error(msg if msg.startswith("user") else f"user: {msg}") from e
    return spec
