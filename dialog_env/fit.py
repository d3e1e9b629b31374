"""Agent-side catalog reasoning: which items still fit what the agent has heard, and how well.

Everything here reads only the public catalog and the agent's own state (the tracker's known
facts, declined slots, rejected items and heard goal), never the hidden persona. It is what a
modular dialogue system's database query returns; the planner agent decides with it and the
text environment's state note shows it to LM policies.

An item *could fit* when it is in the wanted category, was not rejected and breaks no known fact.
Its *appeal* is the number of known facts it appeals to; its *ceiling* adds every slot it appeals
along whose value is still unknown. It is *safe* when every slot its hard constraints name is
known (no unheard fact can rule it out). The user accepts only a best fit, so a safe item whose
appeal (at least 1) reaches every other candidate's ceiling is certainly acceptable.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from dialog_env.world import Item, World


@dataclass(frozen=True, slots=True)
class Candidate:
    """One catalog item that could still fit.

    Attributes:
        item: The item.
        appeal: Known facts it appeals to.
        ceiling: ``appeal`` plus the slots it appeals along whose value is unknown.
        safe: No unknown slot can rule it out.
        open_slots: Unknown slots that bear on it (its appeals and constraints).
    """

    item: Item
    appeal: int
    ceiling: int
    safe: bool
    open_slots: frozenset[str]


def candidates(
    world: World,
    goal: str | None,
    known: Mapping[str, str],
    rejected: Collection[str] = (),
) -> list[Candidate]:
    """Items of the wanted category (every item if ``goal`` is None) that could still fit, in catalog order.

    Args:
        world: The world (public catalog).
        goal: The category the agent heard the user ask for.
        known: Slot -> value the agent heard.
        rejected: Item ids the user rejected.
    """
    out = []
    for item in world.items:
        if (goal is not None and item.category != goal) or item.id in rejected or item.violated_slots(known):
            continue
        open_appeals = [s for s in item.appeals if s not in known]
        open_constraints = [s for s in (*item.requires, *item.excludes) if s not in known]
        appeal = len(item.appealing_slots(known))
        out.append(
            Candidate(
                item=item,
                appeal=appeal,
                ceiling=appeal + len(open_appeals),
                safe=not open_constraints,
                open_slots=frozenset(open_appeals + open_constraints),
            )
        )
    return out


def ranked(cands: list[Candidate]) -> list[Candidate]:
    """Candidates best first: known appeal, then safety, then ceiling, then catalog order."""
    return sorted(cands, key=lambda c: (-c.appeal, not c.safe, -c.ceiling, c.item.index))


def certain_best(cands: list[Candidate]) -> Candidate | None:
    """The candidate that is certainly a best fit from what was heard, if there is one.

    It must be safe, appeal to at least one known fact, and no other candidate may be able to
    appeal to more of the user's facts.
    """
    safe = [c for c in cands if c.safe and c.appeal >= 1]
    if not safe:
        return None
    top = max(safe, key=lambda c: (c.appeal, -c.item.index))
    if all(c is top or c.ceiling <= top.appeal for c in cands):
        return top
    return None


def contenders(cands: list[Candidate]) -> list[Candidate]:
    """Candidates that could still be a best fit: their ceiling reaches the best safe appeal."""
    floor = max((c.appeal for c in cands if c.safe and c.appeal >= 1), default=1)
    return [c for c in cands if c.ceiling >= floor]


def slot_relevance(cands: list[Candidate], askable: Collection[str]) -> dict[str, int]:
    """For each askable slot, how many contenders it bears on (slots bearing on none are left out)."""
    counts: dict[str, int] = {}
    for c in contenders(cands):
        for s in c.open_slots:
            if s in askable:
                counts[s] = counts.get(s, 0) + 1
    return counts


def persona_samples(
    world: World,
    goal: str | None,
    known: Mapping[str, str],
    rejected: Collection[str],
    rng: np.random.Generator,
    n: int = 512,
) -> tuple[np.ndarray, np.ndarray, list[Item]]:
    """Personas consistent with what the agent heard, and which items of the goal each would accept.

    Unheard slots are drawn uniformly (the world's prior); a draw is kept when some item of the goal
    category suits it (users want what they can get) and no rejected item would have been accepted.

    Args:
        world: The world.
        goal: The category the agent heard (every item if None).
        known: Slot -> value the agent heard.
        rejected: Item ids the user rejected.
        rng: Random source of the draws.
        n: Draws before filtering.

    Returns:
        ``(value_idx, acceptable, items)``: flat value indices of the kept draws ``(m, n_slots)``,
        ``acceptable[i, k]`` for item ``items[i]`` and draw ``k``, and the goal category's items.
    """
    cols = []
    for s in world.slots:
        if s.name in known:
            cols.append(np.full(n, world.value(s.name, known[s.name]).index, dtype=np.int64))
        else:
            cols.append(s.offset + rng.integers(len(s.values), size=n))
    idx = np.stack(cols, axis=1)
    items = [it for it in world.items if goal is None or it.category == goal]
    rows = np.array([it.index for it in items], dtype=np.int64)
    acc = world.acceptable_matrix(idx)[rows]
    keep = acc.any(axis=0)
    for i, it in enumerate(items):
        if it.id in rejected:
            keep &= ~acc[i]
    return idx[keep], acc[:, keep], items


def value_of_asking(
    world: World, value_idx: np.ndarray, acceptable: np.ndarray, slots: Collection[str]
) -> dict[str, float]:
    """Chance of a right recommendation after hearing each slot's value (then picking the likeliest item).

    Compare with ``acceptable.mean(axis=1).max()``, the chance of recommending now.
    """
    m = acceptable.shape[1]
    out = {}
    for name in slots:
        s = world.slot[name]
        col = value_idx[:, s.index]
        hits = 0
        for v in range(s.offset, s.offset + len(s.values)):
            group = col == v
            if group.any():
                hits += int(acceptable[:, group].sum(axis=1).max())
        out[name] = hits / m
    return out
