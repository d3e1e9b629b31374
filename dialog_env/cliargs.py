"""Command-line arguments from dataclasses (CleanRL-style ``Args``: one field, one docstring)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str, "float | None": float}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (fields inherited from dataclass bases included)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value)  # type: ignore[union-attr]
    return docs


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: Iterable[str] = ()) -> None:
    """One ``--flag`` per field of ``cls`` (booleans as ``--x/--no-x``).

    Defaults stay ``None`` so that only the flags given override a ``--config`` file.
    """
    docs, skip = field_docs(cls), set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{docs.get(f.name, '')} (default: {f.default})"
        if str(f.type) in ("bool", "<class 'bool'>"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_TYPES.get(str(f.type), str), default=None, help=help_text)


def dataclass_values(
    cls: type, args: argparse.Namespace, error: type[Exception], skip: Iterable[str] = ()
) -> dict[str, Any]:
    """Field values from ``args.config`` (a YAML file, if given) overridden by the flags given.

    Raises:
        error: The YAML file has unknown fields (the message lists the allowed ones).
    """
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise error(f"{path}: cannot read the config: {e}") from e
        if not isinstance(data, dict):
            raise error(f"{path}: expected a mapping of field -> value")
        unknown = sorted(set(data) - names)
        if unknown:
            raise error(f"{path}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        values.update(data)
    for name in names - set(skip):
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return values
