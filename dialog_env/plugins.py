"""Plug-in lookup shared by rewards, users and agents: registries, import paths, entry points."""

from __future__ import annotations

import importlib
from collections.abc import Callable, MutableMapping
from importlib.metadata import entry_points
from typing import Any


def register(registry: MutableMapping[str, Any], kind: str, name: str, obj: Any | None = None) -> Any:
    """Add ``obj`` to ``registry`` under ``name``; with ``obj`` omitted, a decorator that does.

    Raises:
        ValueError: ``name`` is already registered to a different object (a typo cannot silently
            replace a built-in).
    """

    def add(o: Any) -> Any:
        if name in registry and registry[name] is not o:
            raise ValueError(f"{kind} name {name!r} is already registered to {registry[name]!r}")
        registry[name] = o
        return o

    return add(obj) if obj is not None else add


def entry_point_names(group: str) -> dict[str, Any]:
    """Installed entry points of ``group``, by name."""
    return {ep.name: ep for ep in entry_points(group=group)}


def import_path(spec: str, kind: str) -> Any:
    """The object ``"package.module:attr"`` names (``attr`` may be dotted).

    Raises:
        ValueError: The module cannot be imported or has no such attribute; the message names the
            ``kind`` of plug-in and the spec.
    """
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{kind} {spec!r}: cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{kind} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def resolve(
    spec: str, registry: MutableMapping[str, Any], kind: str, group: str, unknown: Callable[[list[str]], str]
) -> Any:
    """A registered name, else an entry point of ``group``, else an import path ``"package.module:attr"``.

    Args:
        spec: What to look up.
        registry: Name -> object.
        kind: ``"reward"``, ``"user"``, ...: the start of error messages.
        group: The entry-point group.
        unknown: Builds the message for a spec that matches nothing, from the entry-point names found.

    Raises:
        ValueError: Nothing matches, or the import path does not resolve.
    """
    if spec in registry:
        return registry[spec]
    eps = entry_point_names(group)
    if spec in eps:
        return eps[spec].load()
    if ":" in spec:
        return import_path(spec, kind)
    raise ValueError(unknown(sorted(eps)))
