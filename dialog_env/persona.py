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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from dialog_env.io import atomic_write_jsonl
from dialog_env.world import TRAIT_NAMES, World

T = TypeVar("T")

SPLITS = ("train", "valid", "test", "test_unseen")
_SPLIT_BUCKETS = {"train": range(0, 8), "valid": range(8, 9), "test": range(9, 10)}


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
            if not isinstance(values[s], str) or values[s] not in world.slot[s].by_id:
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


class PersonaDraw(NamedTuple):
    """A sampled persona with its flat value indices and its acceptable-item mask."""

    persona: Persona
    value_idx: np.ndarray
    acceptable: np.ndarray


def _buckets(codes: np.ndarray) -> np.ndarray:
    """Stable hash buckets 0..9 of value-combination codes (SplitMix64 finaliser, wrapping uint64)."""
    x = codes.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((x ^ (x >> np.uint64(31))) % np.uint64(10)).astype(np.int64)


class PersonaSampler:
    """Seeded persona sampling restricted to one split.

    Candidates are drawn in vectorised blocks; those in the split that can be satisfied are
    queued and handed out one per draw. The queue belongs to one generator: a new generator
    object (as ``reset(seed=...)`` creates) starts a fresh block, so a seed fixes the sequence.

    Args:
        world: The world to sample from.
        split: One of ``train``, ``valid``, ``test``, ``test_unseen``, or ``all``.
    """

    BLOCK = 128

    def __init__(self, world: World, split: str = "train") -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
        self.world = world
        self.split = split
        sizes = [len(s.values) for s in world.slots]
        self._offsets = np.array([s.offset for s in world.slots], dtype=np.int64)
        # Mixed-radix code of a combination: sum_k local_k * prod_{j<k} size_j (exact in int64
        # for worlds up to ~10^18 combinations).
        self._radix = np.cumprod([1, *sizes[:-1]]).astype(np.int64)
        self._held = np.array([v.id in world.slot[v.slot].held_out for v in world.values], dtype=bool)
        # Slots draw from all values for test_unseen/all, from the seen values otherwise.
        seen_only = split in _SPLIT_BUCKETS
        choices = [
            [v.index - s.offset for v in s.values if not (seen_only and v.id in s.held_out)] for s in world.slots
        ]
        self._n_choices = np.array([len(c) for c in choices], dtype=np.float64)
        self._choice_table = np.zeros((len(choices), max(len(c) for c in choices)), dtype=np.int64)
        for k, c in enumerate(choices):
            self._choice_table[k, : len(c)] = c
        self._slot_rows = np.arange(len(choices))
        self._trait_levels = [world.traits[t] for t in TRAIT_NAMES]
        self._n_levels = np.array([len(x) for x in self._trait_levels], dtype=np.float64)
        self._queue: list[tuple[np.ndarray, np.ndarray, list[int]]] = []
        self._queue_rng: np.random.Generator | None = None

    def _split_mask(self, idx: np.ndarray) -> np.ndarray:
        """Which rows of flat value indices lie in this sampler's split."""
        held = self._held[idx].any(axis=1)
        if self.split == "all":
            return np.ones(len(idx), dtype=bool)
        if self.split == "test_unseen":
            return held
        b = _buckets((idx - self._offsets) @ self._radix)
        r = _SPLIT_BUCKETS[self.split]
        return ~held & (b >= r.start) & (b < r.stop)

    def split_of(self, value_idx: np.ndarray) -> list[str]:
        """Split names of rows of flat value indices (shape ``(n, n_slots)`` or ``(n_slots,)``)."""
        idx = np.atleast_2d(value_idx)
        b = _buckets((idx - self._offsets) @ self._radix).tolist()
        held = self._held[idx].any(axis=1).tolist()
        return [
            "test_unseen" if h else "train" if k < 8 else "valid" if k < 9 else "test"
            for k, h in zip(b, held, strict=True)
        ]

    def _refill(self, rng: np.random.Generator) -> None:
        world, n_slots = self.world, len(self._slot_rows)
        u = rng.random((self.BLOCK, n_slots + len(self._n_levels)))
        local = self._choice_table[self._slot_rows, (u[:, :n_slots] * self._n_choices).astype(np.int64)]
        idx = local + self._offsets
        rows = np.flatnonzero(self._split_mask(idx))
        if not len(rows):
            return
        cand = idx[rows]
        ok = world.acceptable_matrix(cand)  # (items, rows)
        levels = (u[rows, n_slots:] * self._n_levels).astype(np.int64).tolist()
        self._queue = [(cand[k], ok[:, k], levels[k]) for k in np.flatnonzero(ok.any(axis=0)).tolist()]
        self._queue.reverse()  # pop() from the end hands them out in draw order

    def sample(self, rng: np.random.Generator) -> Persona:
        """Draw one satisfiable persona of this sampler's split."""
        return self.sample_indexed(rng)[0]

    def sample_indexed(self, rng: np.random.Generator) -> PersonaDraw:
        """Like :meth:`sample`, also returning the flat value indices and acceptable-item mask."""
        if rng is not self._queue_rng:
            self._queue, self._queue_rng = [], rng
        while not self._queue:
            self._refill(rng)
        vi, ok, levels = self._queue.pop()
        world = self.world
        traits = {t: lv[k] for t, lv, k in zip(TRAIT_NAMES, self._trait_levels, levels, strict=True)}
        values = {s.name: world.values[i].id for s, i in zip(world.slots, vi.tolist(), strict=True)}
        return PersonaDraw(Persona(values=values, traits=traits), vi, ok)

    def sample_many(self, n: int, seed: int) -> list[Persona]:
        """Draw ``n`` personas with a fresh generator seeded by ``seed`` (a reproducible set)."""
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(n)]


def persona_split(world: World, persona: Persona) -> str:
    """The split a persona's value combination belongs to."""
    return PersonaSampler(world, "all").split_of(world.value_indices(persona.values))[0]


def save_personas(path: str | Path, personas: Iterable[Persona]) -> Path:
    """Write personas as JSONL (one ``{"values": ..., "traits": ...}`` a line), atomically."""
    return atomic_write_jsonl(path, (p.to_dict() for p in personas))


def load_personas(path: str | Path, world: World) -> list[Persona]:
    """Read and validate a JSONL persona file.

    Raises:
        PersonaError: The file is missing, a line is not JSON, or a persona is invalid; the
            message names the file, the line and the field.
    """
    return load_rows(path, lambda row: Persona.from_dict(row, world), "personas")


def load_rows(path: str | Path, parse: Callable[[Any], T], what: str) -> list[T]:
    """Read a JSONL file, one ``parse(row)`` a line (blank lines skipped).

    Raises:
        PersonaError: The file cannot be read, a line is not JSON, ``parse`` raises ``PersonaError``
            (the message gains the file and line), or the file holds no rows.
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
            out.append(parse(row))
        except PersonaError as e:
            raise PersonaError(f"{path}:{n}: {e}") from e
    if not out:
        raise PersonaError(f"{path}: no {what} in file")
    return out


def coerce_persona(p: Persona | Mapping[str, Any], world: World) -> Persona:
    """Accept a :class:`Persona` or its dict form (validated)."""
    return p if isinstance(p, Persona) else Persona.from_dict(p, world)
