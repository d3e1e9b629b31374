"""What an agent may read: :class:`AgentView`, the agent's side of a PersonaRec env.

Agents are handed a view, not the env: the world (the public ontology and catalog), the act table,
the spaces, a read-only tracker (what the agent has heard and asked), the action mask, the turn
count and, in text mode, the dialogue and its state notes. The persona, the goal before the user
states it, the user simulator and the judge are not on it. An agent that needs them (the oracle, a
ceiling) declares ``privileged = True``; its view then has :attr:`AgentView.hidden`, and the
leaderboard marks its rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from dialog_env.acts import DialogueAct
from dialog_env.persona import Persona
from dialog_env.tracker import DialogueStateTracker


class HiddenState(NamedTuple):
    """The privileged state a declared-privileged agent may read."""

    persona: Persona
    goal: str


class ReadOnlyTracker:
    """The agent's read-only window on the env's dialogue-state tracker.

    Attribute reads are forwarded for the names in :data:`READABLE`; arrays come back as
    read-only views, so an agent cannot change what the env believes.
    """

    READABLE = frozenset(
        {
            "world", "mode", "belief", "known_belief", "slot_entropy", "slot_flags", "item_flags", "informed", "asked",
            "declined", "confirmed", "recommended", "rejected", "goal", "conflicts", "version", "last_asked",
            "last_confirm", "last_recommended", "last_user_acts", "entropy", "best", "known", "view",
        }
    )  # fmt: skip

    __slots__ = ("_tracker",)

    def __init__(self, tracker: DialogueStateTracker) -> None:
        object.__setattr__(self, "_tracker", tracker)

    def __getattr__(self, name: str) -> Any:
        if name not in ReadOnlyTracker.READABLE:
            raise AttributeError(f"the tracker view has no attribute {name!r}; agents read {sorted(self.READABLE)}")
        value = getattr(self._tracker, name)
        if isinstance(value, np.ndarray):
            value = value.view()
            value.flags.writeable = False
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the tracker view is read-only")


class AgentView:
    """An agent's view of one env (see the module docstring).

    Args:
        env: A PersonaRec env, possibly wrapped.
        privileged: Grant :attr:`hidden` (only for agents that declare ``privileged = True``).

    Raises:
        TypeError: ``env`` is not a PersonaRec env.
    """

    __slots__ = ("_core", "act_table", "action_space", "max_turns", "mode", "observation_space", "privileged",
                 "text_actions", "tracker", "world")  # fmt: skip

    def __init__(self, env: gym.Env, privileged: bool = False) -> None:
        from dialog_env.envs.core import PersonaRecCore  # the envs import this module's users

        core = env.unwrapped
        if not isinstance(core, PersonaRecCore):
            raise TypeError(f"an agent view needs a PersonaRec environment, got {type(core).__name__}")
        self._core = core
        self.world = core.world
        self.act_table = core.act_table
        self.mode = core.mode
        self.max_turns = core.max_turns
        self.action_space = env.action_space
        self.observation_space = env.observation_space
        # Text actions unless the env takes act ids (DiscreteActsWrapper around the text env).
        self.text_actions = core.mode == "text" and isinstance(env.action_space, gym.spaces.Text)
        self.tracker = ReadOnlyTracker(core.tracker)
        self.privileged = bool(privileged)

    @property
    def env_key(self) -> int:
        """Identifies the env this view reads (stable across its dialogues): batched agents key rows by it."""
        return id(self._core)

    @property
    def turn(self) -> int:
        """Agent turns taken in the current dialogue."""
        return self._core.turn

    def action_masks(self) -> np.ndarray:
        """The act-id mask of the current state (see ``PersonaRec-v0``)."""
        return self._core.action_masks()

    def act_to_text(self, action: int) -> str:
        """An act id as the env's template NLG would say it (text mode)."""
        return self._core.act_to_text(action)  # type: ignore[attr-defined]

    def acts_to_text(self, acts: Sequence[DialogueAct]) -> str:
        """Several agent acts as one utterance, in the world's varied phrasings (text mode)."""
        return self._core.acts_to_text(acts)  # type: ignore[attr-defined]

    def phrasing_stream(self, rng: random.Random) -> AbstractContextManager[None]:
        """Phrase agent acts from ``rng`` inside the block, leaving the env's phrasing stream as it was."""
        return self._core.phrasing_stream(rng)

    def messages(self, notes: bool | None = None) -> list[dict[str, str]]:
        """The dialogue so far in chat format (the agent is the ``assistant``).

        Args:
            notes: Text env: append each user turn's state note; ``None`` follows the env's ``state_notes``.
        """
        if self.mode == "text":
            return self._core.messages(notes=notes)  # type: ignore[call-arg]
        return self._core.messages()

    def note(self, k: int = -1) -> str:
        """The state note of user turn ``k`` (text env)."""
        return self._core.note(k)  # type: ignore[attr-defined]

    def transcript(self) -> str:
        """The dialogue so far, one ``Role: text`` line a turn."""
        return self._core.transcript()

    @property
    def hidden(self) -> HiddenState:
        """The persona and goal: only for a view made with ``privileged=True``.

        Raises:
            PermissionError: The agent did not declare ``privileged = True``.
        """
        if not self.privileged:
            raise PermissionError(
                "the persona is hidden from agents; an agent that needs it declares privileged = True "
                "(its leaderboard rows are marked, and demonstration collection refuses it)"
            )
        return HiddenState(self._core.persona, self._core.goal)


def declares_privileged(agent: Any) -> bool:
    """Whether an agent declares that it reads hidden state (class attribute ``privileged = True``)."""
    return bool(getattr(agent, "privileged", False))


def agent_view(env_or_view: gym.Env | AgentView, privileged: bool = False) -> AgentView:
    """``env_or_view`` as an :class:`AgentView` (a view is returned as is)."""
    if isinstance(env_or_view, AgentView):
        return env_or_view
    return AgentView(env_or_view, privileged=privileged)
