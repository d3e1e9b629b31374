"""The record a reward scores: one agent turn and the user's answer, with privileged facts."""

from __future__ import annotations

from dataclasses import dataclass, field

from dialog_env.acts import DialogueAct
from dialog_env.persona import Persona
from dialog_env.tracker import TrackerView
from dialog_env.world import World


@dataclass(slots=True)
class TurnContext:
    """Everything about one turn that a reward may look at.

    Treat it as read-only. Fields marked *privileged* are hidden from the agent (never in observations or ``info``);
    rewards are computed by the environment and may use them.

    Attributes:
        world: The world (items, slots, surface forms).
        turn: Index of the agent turn in the episode, from 0.
        agent_text: The agent's utterance.
        agent_acts: The agent's acts (parsed from the utterance in text mode).
        user_text: The user's answer as the agent heard it.
        user_acts: The user's true acts (*privileged*).
        history: ``(role, text)`` pairs of the dialogue before this turn, ``role`` in
            ``{"user", "assistant"}``.
        before: The tracker's (agent-side) state before the user's answer.
        after: The tracker's state after it.
        persona: The hidden persona (*privileged*).
        goal: The category the user wants (*privileged* until stated).
        revealed_before: Facts the user truly revealed before this turn (*privileged*: under a
            noisy channel the agent may have heard them wrong).
        revealed: Facts revealed up to and including this turn (*privileged*).
        outcome: ``accepted``, ``left``, ``bye`` or ``None``.
        earlier: Facts the user gave in earlier sessions with this agent (a returning user, *privileged*;
            they are in ``revealed_before`` and ``revealed`` too). Empty in a single dialogue.
        safety_flags: Terms of the safety check the agent's utterance hit (text env); the user heard
            :data:`dialog_env.safety.BLOCKED_REPLY` instead. Empty when the utterance was safe.
    """

    world: World
    turn: int
    agent_text: str
    agent_acts: tuple[DialogueAct, ...]
    user_text: str
    user_acts: tuple[DialogueAct, ...]
    history: tuple[tuple[str, str], ...]
    before: TrackerView
    after: TrackerView
    persona: Persona
    goal: str
    revealed_before: dict[str, str]
    revealed: dict[str, str]
    outcome: str | None
    earlier: dict[str, str] = field(default_factory=dict)
    safety_flags: tuple[str, ...] = ()
