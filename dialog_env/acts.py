"""Dialogue acts and the agent's discrete act table."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from dialog_env.world import World

# Agent intents.
ASK = "ask"  # ask(slot)
CONFIRM = "confirm"  # confirm(slot, value): "So you're vegetarian, right?"
INFORM = "inform"  # inform(slot, value): a statement that references a persona fact
RECOMMEND = "recommend"  # recommend(value=item id)
CHITCHAT = "chitchat"
BYE = "bye"
NONE = "none"  # an empty utterance

# User intents (INFORM, CHITCHAT, BYE shared with the agent).
REQUEST = "request"  # request(value=category): what the user is looking for
DECLINE = "decline"  # decline(slot): does not want to say
AFFIRM = "affirm"  # affirm(slot, value)
NEGATE = "negate"  # negate(slot, value): followed by the correcting inform
REJECT = "reject"  # reject(value=item id): followed by the reason (inform or request), if any
ACCEPT = "accept"  # accept(value=item id)
REPEAT = "repeat"  # repeat(slot) + inform: "I already told you"; repeat(value=item): "I already said no"
CHALLENGE = "challenge"  # challenge(slot): "Do you remember what I told you about my diet?"

USER_INTENTS = (REQUEST, INFORM, DECLINE, AFFIRM, NEGATE, REJECT, ACCEPT, REPEAT, CHITCHAT, BYE, CHALLENGE)
AGENT_INTENTS = (ASK, CONFIRM, INFORM, RECOMMEND, CHITCHAT, BYE, NONE)


class DialogueAct(NamedTuple):
    """One dialogue act: ``intent(slot=value)``; slot and value are optional.

    A ``NamedTuple`` keeps acts hashable, cheap and comparable.
    """

    intent: str
    slot: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        args = ", ".join(x for x in (self.slot, self.value) if x is not None)
        return f"{self.intent}({args})"


@dataclass(frozen=True)
class ActTable:
    """The agent's discrete action set in act mode.

    Layout (``n_slots = S``, ``n_items = I``):

    | Range            | Act                                                   |
    |------------------|-------------------------------------------------------|
    | 0 .. S-1         | ``ask(slot k)``                                       |
    | S .. 2S-1        | ``confirm(slot k, the tracker's best value)``         |
    | 2S .. 2S+I-1     | ``recommend(item j)``                                 |
    | 2S+I             | ``chitchat``                                          |
    | 2S+I+1           | ``bye``                                               |
    """

    world: World

    @functools.cached_property
    def n_slots(self) -> int:
        """Number of persona slots."""
        return len(self.world.slots)

    @functools.cached_property
    def n_items(self) -> int:
        """Number of catalog items."""
        return len(self.world.items)

    @functools.cached_property
    def ask_start(self) -> int:
        """First ``ask`` action id."""
        return 0

    @functools.cached_property
    def confirm_start(self) -> int:
        """First ``confirm`` action id."""
        return self.n_slots

    @functools.cached_property
    def recommend_start(self) -> int:
        """First ``recommend`` action id."""
        return 2 * self.n_slots

    @functools.cached_property
    def chitchat(self) -> int:
        """The ``chitchat`` action id."""
        return 2 * self.n_slots + self.n_items

    @functools.cached_property
    def bye(self) -> int:
        """The ``bye`` action id."""
        return self.chitchat + 1

    @functools.cached_property
    def size(self) -> int:
        """Number of actions."""
        return self.bye + 1

    def __len__(self) -> int:
        return self.size

    def ask(self, slot: str) -> int:
        """Action id of ``ask(slot)``."""
        return self.world.slot[slot].index

    def confirm(self, slot: str) -> int:
        """Action id of ``confirm(slot)``."""
        return self.confirm_start + self.world.slot[slot].index

    def recommend(self, item: str) -> int:
        """Action id of ``recommend(item)``."""
        return self.recommend_start + self.world.item[item].index

    def describe(self, action: int) -> str:
        """Human-readable name of an action id (``"ask(diet)"``)."""
        kind, arg = self.decode(action)
        return f"{kind}({arg})" if arg else kind

    def decode(self, action: int) -> tuple[str, str | None]:
        """Return ``(intent, slot-or-item)`` for an action id.

        Raises:
            ValueError: ``action`` is not an integer in ``[0, len(self))``.
        """
        n = self.size
        if isinstance(action, bool) or not isinstance(action, int | np.integer):
            raise ValueError(f"action must be an integer in [0, {n}), got {action!r}")
        a = int(action)
        if not 0 <= a < n:
            raise ValueError(f"action must be an integer in [0, {n}), got {a}")
        if a < self.confirm_start:
            return ASK, self.world.slots[a].name
        if a < self.recommend_start:
            return CONFIRM, self.world.slots[a - self.confirm_start].name
        if a < self.chitchat:
            return RECOMMEND, self.world.items[a - self.recommend_start].id
        return (CHITCHAT, None) if a == self.chitchat else (BYE, None)
