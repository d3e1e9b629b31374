"""The world's judge: what a recommendation is worth and what a user truly revealed.

The judge, not the user simulator, decides whether the dialogue succeeded and which persona facts
the agent has been told, so a plug-in simulator (an LM user, an adversary) can shape how the user
behaves but cannot declare success or put a false fact on the record.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.persona import Persona
from dialog_env.users.base import OUTCOMES, UserTurn
from dialog_env.world import World

FALSE_ACCEPT = "false_accept"
"""Judged outcome of a turn whose simulator claimed an acceptance the world does not grant."""


class Judge:
    """Owned by the env, one per dialogue at a time; reads each user turn's grounded acts.

    Args:
        world: The world whose acceptability rule (:meth:`World.acceptable_mask`) it applies.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.persona: Persona | None = None
        self.goal: str | None = None
        self._acceptable = np.zeros(len(world.items), dtype=bool)
        self.revealed: dict[str, str] = {}
        self.earlier: dict[str, str] = {}

    def start(
        self,
        persona: Persona,
        goal: str,
        acceptable: np.ndarray | None = None,
        earlier: dict[str, str] | None = None,
    ) -> None:
        """Judge a new dialogue of ``persona`` wanting ``goal``.

        Args:
            persona: The hidden persona.
            goal: The wanted category.
            acceptable: The persona's acceptable-item mask over all categories, when the caller has
                it already; computed otherwise.
            earlier: Facts this user revealed to the agent in earlier sessions (a returning user);
                the agent is held to them too.

        Raises:
            ValueError: ``goal`` is not a category of the world, or an earlier fact is not the persona's.
        """
        if goal not in self.world.category:
            raise ValueError(f"goal must be one of {list(self.world.category)}, got {goal!r}")
        for slot, value in (earlier or {}).items():
            if persona.values.get(slot) != value:
                raise ValueError(f"earlier: {slot}={value!r} is not a fact of this persona")
        self.earlier = dict(earlier or {})
        if acceptable is None:
            acceptable = self.world.acceptable_mask(self.world.value_indices(persona.values))
        self.persona, self.goal = persona, goal
        self._acceptable = acceptable & (self.world.item_category == self.world.category[goal].index)
        self.revealed = {}

    def shared(self) -> dict[str, str]:
        """Every fact the agent has been told: earlier sessions' and this dialogue's (a new dict)."""
        return {**self.earlier, **self.revealed} if self.earlier else dict(self.revealed)

    def acceptable(self, item_id: str) -> bool:
        """Whether the user would be right to accept ``item_id`` (one of the best fits of the goal)."""
        item = self.world.item.get(item_id)
        return item is not None and bool(self._acceptable[item.index])

    @property
    def acceptable_items(self) -> np.ndarray:
        """Read-only mask over the world's items: the acceptable ones of the goal category."""
        view = self._acceptable.view()
        view.flags.writeable = False
        return view

    def read(self, agent_acts: Sequence[DialogueAct], turn: UserTurn) -> str | None:
        """Record the facts ``turn`` truly reveals and return the judged outcome.

        A fact is revealed when the user informs or affirms the value its persona holds (a false
        statement reveals nothing). A claimed acceptance stands only when the user accepts an item
        the agent recommended this turn and the item is acceptable; otherwise the dialogue ends as
        :data:`FALSE_ACCEPT`, a failure.

        Args:
            agent_acts: The agent turn being answered (empty for the opening).
            turn: The simulator's turn.

        Raises:
            ValueError: The turn claims an outcome outside :data:`OUTCOMES`.
        """
        if self.persona is None:
            raise RuntimeError("Judge.read() before start()")
        values = self.persona.values
        for a in turn.acts:
            if (a.intent == A.INFORM or a.intent == A.AFFIRM) and values.get(a.slot) == a.value:  # type: ignore[arg-type]
                self.revealed[a.slot] = a.value  # type: ignore[index]
        outcome = turn.outcome
        if outcome is None:
            return None
        if outcome not in OUTCOMES:
            raise ValueError(f"user turn outcome must be one of {[*OUTCOMES, None]}, got {outcome!r}")
        if outcome == "accepted":
            recommended = {a.value for a in agent_acts if a.intent == A.RECOMMEND}
            taken = [a.value for a in turn.acts if a.intent == A.ACCEPT]
            if not any(v in recommended and self.acceptable(v) for v in taken):  # type: ignore[arg-type]
                return FALSE_ACCEPT
        return outcome
