"""What the environment calls on a simulated user: the :class:`UserSimulator` protocol.

A simulator decides what the user does and says; it never decides the dialogue's outcome or which
facts count as revealed: the world's :class:`~dialog_env.judge.Judge` does, from the simulator's
grounded acts. Any object with these three methods plugs into every env as ``user=``
(see :mod:`dialog_env.users.registry`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dialog_env.acts import DialogueAct
from dialog_env.persona import Persona

if TYPE_CHECKING:
    from dialog_env.judge import Judge

OUTCOMES = ("accepted", "left", "bye")
"""Outcomes a simulator may claim for a turn that ends the dialogue (``None``: it goes on)."""


@dataclass(frozen=True, slots=True)
class UserTurn:
    """What the user says: its true acts (private to the environment) and its text.

    Attributes:
        acts: The user's grounded dialogue acts (what it means).
        text: The rendered utterance (how it says it).
        outcome: The simulator's claim: ``"accepted"`` (took a recommendation), ``"left"`` (ran out
            of patience), ``"bye"`` (answered the agent's farewell) or ``None`` (the dialogue goes
            on). The judge confirms an acceptance or turns it into a failure.
    """

    acts: tuple[DialogueAct, ...]
    text: str
    outcome: str | None = None


@runtime_checkable
class UserSimulator(Protocol):
    """A simulated user: exactly the calls the environment makes, nothing more.

    The env calls :meth:`reset` once per episode, :meth:`respond` once per agent turn, and
    :meth:`render` only when the noisy channel changed the acts the agent hears.
    """

    def reset(self, persona: Persona, goal: str, rng: random.Random, judge: Judge) -> UserTurn:
        """Start a dialogue and return the user's opening turn.

        Args:
            persona: The hidden persona the user plays.
            goal: The wanted item category.
            rng: The user's own random stream (seeded by the env).
            judge: The world's judge of this dialogue (``judge.acceptable(item_id)``).
        """
        ...

    def respond(self, agent_acts: Sequence[DialogueAct], agent_text: str) -> UserTurn:
        """Answer one agent turn (its acts as the env parsed them, and its text)."""
        ...

    def render(self, acts: Sequence[DialogueAct], rng: random.Random) -> str:
        """Phrase ``acts`` as this user would, drawing on ``rng`` (the channel's stream)."""
        ...
