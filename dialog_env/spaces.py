"""A Text space whose observations survive Gymnasium's shared-memory vector envs.

``gymnasium.vector.AsyncVectorEnv`` (and ``gym.make_vec(..., vectorization_mode="async")``) passes
observations through shared memory by default. For a plain ``Text`` space Gymnasium decodes that
memory into a tuple of strings once, when the vector env is built, and hands the same tuple back at
every step (Gymnasium issue #1164): every observation would be the empty memory's decoding, 20,000
newlines, while rewards look right. :class:`TranscriptSpace` registers its own shared-memory
functions (Gymnasium's documented extension point for custom spaces): the vector env's observations
are a live view of the memory, decoded each time they are read, so ``copy=True`` (the default)
returns the current transcripts and ``copy=False`` a view that follows the memory, as it does for
array spaces.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils.shared_memory import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)


class TranscriptSpace(spaces.Text):
    """``gymnasium.spaces.Text`` that vectorises correctly under ``AsyncVectorEnv``'s shared memory."""

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        tables = self.__dict__.get("_code_tables")
        if tables is None:
            chars = self.character_list
            codes = np.array([ord(c) for c in chars] + [0], dtype=np.uint32)  # the last: padding
            index = np.full(max(ord(c) for c in chars) + 1, -1, dtype=np.int32)
            index[codes[:-1]] = np.arange(len(chars), dtype=np.int32)
            tables = self.__dict__["_code_tables"] = (codes, index)
        return tables

    def encode(self, text: str) -> np.ndarray:
        """Character indices of ``text`` padded to ``max_length`` with ``len(charset)`` (Gymnasium's flattening).

        Raises:
            ValueError: ``text`` is longer than ``max_length`` or has a character outside the charset.
        """
        codes, index = self._tables()
        if len(text) > self.max_length:
            raise ValueError(f"observation: {len(text)} characters, more than max_length {self.max_length}")
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        bad = points >= len(index)
        ids = np.where(bad, -1, index[np.minimum(points, len(index) - 1)])
        if (ids < 0).any():
            c = text[int(np.flatnonzero(ids < 0)[0])]
            raise ValueError(f"observation: character {c!r} is not in the space's charset")
        out = np.full(self.max_length, len(codes) - 1, dtype=np.int32)
        out[: len(ids)] = ids
        return out

    def decode(self, row: np.ndarray) -> str:
        """The text of one row of character indices (up to the first padding)."""
        codes, _ = self._tables()
        pad = np.flatnonzero(row >= len(codes) - 1)
        k = int(pad[0]) if len(pad) else len(row)
        return codes[row[:k]].tobytes().decode("utf-32-le")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_code_tables", None)  # derived; rebuilt on first use
        return state


class SharedTexts(Sequence):
    """The observations of ``n`` envs in shared memory, decoded on each read; a deep copy is a tuple of str."""

    def __init__(self, space: TranscriptSpace, memory: Any, n: int) -> None:
        self.space, self.memory, self.n = space, memory, n

    def _rows(self) -> np.ndarray:
        return np.frombuffer(self.memory.get_obj(), dtype=np.int32).reshape(self.n, self.space.max_length)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return tuple(self)[i]
        return self.space.decode(self._rows()[i])

    def __iter__(self) -> Iterator[str]:
        rows = self._rows()
        return iter([self.space.decode(r) for r in rows])

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, SharedTexts)) else other)

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


@create_shared_memory.register(TranscriptSpace)
def _create(space: TranscriptSpace, n: int = 1, ctx: ModuleType = mp) -> Any:
    memory = ctx.Array(np.dtype(np.int32).char, n * space.max_length)
    np.frombuffer(memory.get_obj(), dtype=np.int32)[:] = len(space.character_set)  # every row empty
    return memory


@read_from_shared_memory.register(TranscriptSpace)
def _read(space: TranscriptSpace, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(space, shared_memory, n)


@write_to_shared_memory.register(TranscriptSpace)
def _write(space: TranscriptSpace, index: int, values: str, shared_memory: Any) -> None:
    size = space.max_length
    np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[index * size : (index + 1) * size] = space.encode(values)
