"""State notes: the tracker's agent-side state and the catalog query, as a line of text for LM policies.

A modular dialogue system hands its policy the dialogue state and the database results; an LM
policy reads text, so the text environment can append a short note to every user turn::

    User: I have a cat. I'm a huge coffee lover.
    [heard: a cat, coffee | 9 fit: Whiskers Cat Cafe 2?, Daily Grind Coffee 1]

``heard`` lists what the tracker understood from this turn (a declined slot as ``declined <noun>``);
``N fit`` counts the wanted category's items that break no known fact and were not rejected, and
names the best of them (up to three) with how many known facts each appeals to; ``?`` marks an item
that an unheard fact could still rule out. The note reads only the tracker and the public catalog,
never the persona, and it is appended to a user turn, so a dialogue's token sequence only grows
(what GRPO rollouts and the KV cache rely on).
"""

from __future__ import annotations

from dialog_env.fit import candidates, ranked
from dialog_env.tracker import TrackerView
from dialog_env.world import World

#: Items named in a note at most.
NOTE_ITEMS = 3


def state_note(
    world: World,
    goal: str | None,
    after: TrackerView,
    before: TrackerView | None = None,
    items: int = NOTE_ITEMS,
) -> str:
    """The note for a user turn, from the tracker's state before and after reading it.

    Args:
        world: The world (public catalog).
        goal: The category the tracker heard the user ask for.
        after: The tracker's view after the turn.
        before: Its view before the turn (to say what was heard in it); ``None`` for the opening.
        items: Most items named.

    Returns:
        ``"[heard: ... | N fit: A 2, B 1?]"``; ``heard`` is left out when the turn added nothing.
    """
    known = after.known
    known_before = before.known if before is not None else {}
    declined_before = before.declined if before is not None else frozenset()
    heard = [world.value(s, v).short for s, v in known.items() if known_before.get(s) != v]
    heard += [f"declined {s.noun}" for s in world.slots if s.name in after.declined and s.name not in declined_before]
    cands = ranked(candidates(world, goal, known, after.rejected))
    shown = [f"{c.item.name} {c.appeal}{'' if c.safe else '?'}" for c in cands[:items] if c.appeal >= 1]
    fit = f"{len(cands)} fit" + (": " + ", ".join(shown) if shown else "")
    return "[" + (f"heard: {', '.join(heard)} | " if heard else "") + fit + "]"
