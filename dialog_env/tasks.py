"""Persona tasks for meta-learning: a task is a persona with the goals of its sessions.

Task sets come from the persona splits, so meta-train and meta-test tasks never share a value
combination (``meta_train`` from ``train``, ``meta_valid`` from ``valid``, ``meta_test`` from
``test``), and ``meta_test_unseen`` holds values no training persona has (``test_unseen``). A task
plays in ``PersonaRecSessions-v0`` with ``reset(options={"task": task})``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialog_env.io import atomic_write_jsonl
from dialog_env.persona import Persona, PersonaError, PersonaSampler, coerce_persona, load_rows
from dialog_env.world import World

TASK_SETS = {"meta_train": "train", "meta_valid": "valid", "meta_test": "test", "meta_test_unseen": "test_unseen"}
"""Task set -> the persona split its personas come from."""


@dataclass(frozen=True)
class Task:
    """A returning user: its persona and the goal of each session."""

    persona: Persona
    goals: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the JSONL row format)."""
        return {**self.persona.to_dict(), "goals": list(self.goals)}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any], world: World) -> Task:
        """Validate a task row.

        Raises:
            PersonaError: A bad persona, or ``goals`` missing, empty or naming an unknown category.
        """
        goals = row.get("goals")
        if not isinstance(goals, list | tuple) or not goals:
            raise PersonaError(f"goals: expected a non-empty list of categories, got {goals!r}")
        for g in goals:
            if g not in world.category:
                raise PersonaError(f"goals: unknown category {g!r}; expected one of {list(world.category)}")
        persona = coerce_persona({"values": row.get("values"), "traits": row.get("traits")}, world)
        return cls(persona, tuple(goals))


def satisfiable_goals(world: World, persona: Persona) -> list[str]:
    """Categories with an item the persona can accept (every category if none has one), in world order."""
    ok = world.acceptable_mask(world.value_indices(persona.values))
    cats = [world.categories[i].id for i in sorted(set(world.item_category[ok].tolist()))]
    return cats or [c.id for c in world.categories]


def task_goals(world: World, persona: Persona, sessions: int, rng: np.random.Generator) -> tuple[str, ...]:
    """Goals for ``sessions`` sessions: categories the persona can be satisfied in, distinct while they last."""
    cats = satisfiable_goals(world, persona)
    goals: list[str] = []
    while len(goals) < sessions:
        goals += [cats[i] for i in rng.permutation(len(cats))]
    return tuple(goals[:sessions])


def make_tasks(world: World, task_set: str, n: int, sessions: int = 3, seed: int = 0) -> list[Task]:
    """``n`` tasks of a task set, reproducible from ``seed``.

    Raises:
        ValueError: Unknown task set, or ``n`` / ``sessions`` not positive.
    """
    if task_set not in TASK_SETS:
        raise ValueError(f"task_set: expected one of {list(TASK_SETS)}, got {task_set!r}")
    for name, v in (("n", n), ("sessions", sessions)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    rng = np.random.default_rng(seed)
    sampler = PersonaSampler(world, TASK_SETS[task_set])
    out = []
    for _ in range(n):
        persona = sampler.sample(rng)
        out.append(Task(persona, task_goals(world, persona, sessions, rng)))
    return out


def save_tasks(path: str | Path, tasks: Iterable[Task]) -> Path:
    """Write tasks as JSONL (``{"values", "traits", "goals"}`` a line), atomically."""
    return atomic_write_jsonl(path, (t.to_dict() for t in tasks))


def load_tasks(path: str | Path, world: World) -> list[Task]:
    """Read and validate a JSONL task file.

    Raises:
        PersonaError: Unreadable file, a line that is not JSON, or an invalid task (file and line named).
    """
    return load_rows(path, lambda row: Task.from_dict(row, world), "tasks")
