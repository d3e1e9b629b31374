"""Personas: hidden slot values plus style traits; seeded sampling, splits and JSONL files.

Splits are defined on the *value combination*, so they are disjoint by construction:

* ``test_unseen`` -- personas holding at least one value listed in a slot's ``held_out``;
  those values never occur in ``train``.
* ``train`` / ``valid`` / ``test`` -- personas without held-out values, assigned 80/10/10 by a
  stable hash of the combination (the same combination is always in the same split, on any
  machine, in any process).

Only personas that can be satisfied -- at least one item they would accept exists -- are sampled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialog_env.io import atomic_write_jsonl
from dialog_env.world import TRAIT_NAMES, World

SPLITS = ("train", "valid", "test", "test_unseen")
_SPLIT_BUCKETS = {"train": range(0, 8), "valid": range(8, 9), "test": range(9, 10)}
_MASK64 = (1 << 64) - 1


class PersonaError(ValueError):
    """A persona (or a persona file) is malformed; the message names the field."""


@dataclass(frozen=True)
class Persona:
    """A user's hidden persona.

    Attributes:
        values: Slot -> value id, one entry per world slot, in world order.
        traits: ``verbosity``, ``openness`` and ``patience`` levels.
    """

    values: Mapping[str, str]
    traits: Mapping[str, str]

    @property
    def key(self) -> str:
        """A stable id of the value combination and traits (``"diet=vegan|pet=cat|..."``)."""
        return "|".join(f"{k}={v}" for k, v in {**self.values, **self.traits}.items())

    def facts(self, world: World) -> list[str]:
        """The persona as natural-language first-person facts (``"I'm vegetarian."``)."""
        return [world.value(s, v).fact + "." for s, v in self.values.items()]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the JSONL row format)."""
        return {"values": dict(self.values), "traits": dict(self.traits)}

    @classmethod
    def from_dict(cls, data: Any, world: World) -> Persona:
        """Build a persona from a dict and validate it against ``world``.

        Raises:
            PersonaError: A field is missing, unknown, or holds a value the world does not allow.
        """
        if not isinstance(data, Mapping):
            raise PersonaError(f"expected an object with 'values' and 'traits', got {type(data).__name__}")
        extra = set(data) - {"values", "traits", "split"}
        if extra:
            raise PersonaError(f"unknown field(s) {sorted(extra)}; allowed: ['values', 'traits', 'split']")
        for f in ("values", "traits"):
            if not isinstance(data.get(f), Mapping):
                raise PersonaError(f"field {f!r}: expected an object, got {data.get(f)!r}")
        values, traits = data["values"], data["traits"]
        for s in world.slot_names:
            if s not in values:
                raise PersonaError(f"field 'values.{s}': missing; every slot needs a value")
            if values[s] not in world.slot[s].by_id:
                raise PersonaError(
                    f"field 'values.{s}': unknown value {values[s]!r}; allowed: {list(world.slot[s].value_ids)}"
                )
        unknown = set(values) - set(world.slot_names)
        if unknown:
            raise PersonaError(f"field 'values': unknown slot(s) {sorted(unknown)}; allowed: {list(world.slot_names)}")
        for t in TRAIT_NAMES:
            if traits.get(t) not in world.traits[t]:
                raise PersonaError(f"field 'traits.{t}': got {traits.get(t)!r}; allowed: {list(world.traits[t])}")
        unknown = set(traits) - set(TRAIT_NAMES)
        if unknown:
            raise PersonaError(f"field 'traits': unknown trait(s) {sorted(unknown)}; allowed: {list(TRAIT_NAMES)}")
        return cls(
            values={s: values[s] for s in world.slot_names},
            traits={t: traits[t] for t in TRAIT_NAMES},
        )


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a stable, well-spread hash of 64-bit integers."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class PersonaSampler:
    """Seeded persona sampling restricted to one split.

    Sampling is vectorised: candidates are drawn in blocks and the first one in the split that
    can be satisfied is kept, so a draw costs a few numpy calls whatever the split's share.

    Args:
        world: The world to sample from.
        split: One of ``train``, ``valid``, ``test``, ``test_unseen``, or ``all``.
    """

    def __init__(self, world: World, split: str = "train") -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
        self.world = world
        self.split = split
        sizes = np.array([len(s.values) for s in world.slots], dtype=np.int64)
        self._sizes = sizes
        self._offsets = np.array([s.offset for s in world.slots], dtype=np.int64)
        radix = np.ones_like(sizes)
        radix[1:] = np.cumprod(sizes[:-1])
        self._radix = radix.astype(np.uint64)
        held = np.zeros(world.n_values, dtype=bool)
        for s in world.slots:
            for v in s.values:
                held[v.index] = v.id in s.held_out
        self._held = held
        # Slots draw from all values for test_unseen/all, from the seen values otherwise.
        seen_only = split in _SPLIT_BUCKETS
        self._choices = [
            np.array([v.index - s.offset for v in s.values if not (seen_only and v.id in s.held_out)])
            for s in world.slots
        ]
        self._trait_levels = [world.traits[t] for t in TRAIT_NAMES]

    def split_of(self, value_idx: np.ndarray) -> np.ndarray:
        """Split names (as an array of str) of rows of flat value indices, shape ``(n, n_slots)``."""
        value_idx = np.atleast_2d(value_idx)
        local = (value_idx - self._offsets).astype(np.uint64)
        code = (local * self._radix).sum(axis=1, dtype=np.uint64)
        bucket = (_mix64(code + np.uint64(0x9E3779B97F4A7C15)) % np.uint64(10)).astype(np.int64)
        out = np.where(bucket < 8, "train", np.where(bucket < 9, "valid", "test")).astype(object)
        out[self._held[value_idx].any(axis=1)] = "test_unseen"
        return out

    def sample(self, rng: np.random.Generator) -> Persona:
        """Draw one satisfiable persona of this sampler's split."""
        world = self.world
        while True:
            cols = [c[rng.integers(0, len(c), size=64)] for c in self._choices]
            idx = np.stack(cols, axis=1) + self._offsets
            ok = np.ones(len(idx), dtype=bool)
            if self.split != "all":
                ok &= self.split_of(idx) == self.split
            cand = np.flatnonzero(ok)
            for row in cand:
                vi = idx[row]
                if world.acceptable_mask(vi).any():
                    traits = {
                        t: levels[int(rng.integers(len(levels)))]
                        for t, levels in zip(TRAIT_NAMES, self._trait_levels, strict=True)
                    }
                    values = {s.name: world.values[i].id for s, i in zip(world.slots, vi, strict=True)}
                    return Persona(values=values, traits=traits)

    def sample_many(self, n: int, seed: int) -> list[Persona]:
        """Draw ``n`` personas with a fresh generator seeded by ``seed`` (a reproducible set)."""
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(n)]


def persona_split(world: World, persona: Persona) -> str:
    """The split a persona's value combination belongs to."""
    return str(PersonaSampler(world, "all").split_of(world.value_indices(persona.values))[0])


def save_personas(path: str | Path, personas: Iterable[Persona]) -> Path:
    """Write personas as JSONL (one ``{"values": ..., "traits": ...}`` a line), atomically."""
    return atomic_write_jsonl(path, (p.to_dict() for p in personas))


def load_personas(path: str | Path, world: World) -> list[Persona]:
    """Read and validate a JSONL persona file.

    Raises:
        PersonaError: The file is missing, a line is not JSON, or a persona is invalid; the
            message names the file, the line and the field.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PersonaError(f"{path}: cannot read: {e.strerror or e}") from e
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PersonaError(f"{path}:{n}: not valid JSON: {e.msg}") from e
        try:
            out.append(Persona.from_dict(row, world))
        except PersonaError as e:
            raise PersonaError(f"{path}:{n}: {e}") from e
    if not out:
        raise PersonaError(f"{path}: no personas in file")
    return out


def coerce_persona(p: Persona | Mapping[str, Any], world: World) -> Persona:
    """Accept a :class:`Persona` or its dict form (validated)."""
    return p if isinstance(p, Persona) else Persona.from_dict(p, world)

