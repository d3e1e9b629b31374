"""Degenerate policies that try to game the reward; the benchmark shows they score below ``rule``.

Each does something a reward-hacking learner might find: never asking, asking the same thing,
leaving at once, small talk, saying nothing, naming every item, asking everything at once, or
restating what the user said. Text-only ones declare ``mode = "text"`` (evaluation then plays the
text environment); the others work in both modes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agents.base import register_agent
from agents.baselines import ActAgent, RuleAgent
from dialog_env.view import AgentView, agent_view


@register_agent("always_recommend")
class AlwaysRecommendAgent(ActAgent):
    """Never asks: recommends the next not-yet-rejected item of the wanted category, in catalog order."""

    name = "always_recommend"

    def choose(self) -> int:
        """Next unrejected item in the goal category, else ``bye``."""
        t, tab = self.core.tracker, self.core.act_table
        for item in self.core.world.items:
            if (t.goal is None or item.category == t.goal) and not t.rejected[item.index]:
                return tab.recommend(item.id)
        return tab.bye


@register_agent("ask_same_slot")
class AskSameSlotAgent(ActAgent):
    """Asks about the first slot, over and over."""

    name = "ask_same_slot"

    def choose(self) -> int:
        """Always ``ask(slot 0)``."""
        return self.core.act_table.ask(self.core.world.slots[0].name)


@register_agent("bye")
class ByeAgent(ActAgent):
    """Says goodbye at once."""

    name = "bye"

    def choose(self) -> int:
        """Always ``bye``."""
        return self.core.act_table.bye


@register_agent("greet")
class GreetAgent(ActAgent):
    """Small talk only ("How is your day going?"): friendly, never on task."""

    name = "greet"

    def choose(self) -> int:
        """Always ``chitchat``."""
        return self.core.act_table.chitchat


@register_agent("rule_restate")
class RuleRestateAgent(RuleAgent):
    """The rule agent, restating a fact the user gave at every turn.

    Text mode: the rule agent's utterance plus "I understand that you're vegan." (the known facts in
    turn). Act mode: every other turn confirms a known, unconfirmed fact instead of progressing.
    Under a reward that paid for agreeing references this played rule's dialogues for a higher
    return; now restating earns nothing and costs ``redundancy``.
    """

    name = "rule_restate"

    def act(self, observation: Any, info: dict[str, Any]) -> int | str:
        """Rule's act, with a restated fact."""
        core, t = self.core, self.core.tracker
        known = sorted(t.known().items())
        if not self.text_mode:
            unconfirmed = [s for s, _ in known if not t.confirmed[core.world.slot[s].index]]
            if core.turn % 2 and unconfirmed:
                return core.act_table.confirm(unconfirmed[0])
            return self.choose()
        text = core.act_to_text(self.choose())  # type: ignore[attr-defined]
        if known:
            slot, value = known[core.turn % len(known)]
            text += f" I understand that {core.world.value(slot, value).you}."
        return text


class TextAgent:
    """Base of text-only degenerate agents: they play ``PersonaRecText-v0``."""

    name = "text"
    mode = "text"

    def reset(self, env: gym.Env | AgentView, seed: int | None = None) -> None:
        """Take the agent's view of the text env."""
        view = agent_view(env)
        if not view.text_actions:
            raise TypeError(f"{type(self).__name__} plays the text environment (dialog_env/PersonaRecText-v0)")
        self.core = view

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """The next utterance."""
        raise NotImplementedError


@register_agent("silent")
class SilentAgent(TextAgent):
    """Says nothing (an empty utterance) every turn."""

    name = "silent"

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """The empty string."""
        return ""


@register_agent("name_all")
class NameAllAgent(TextAgent):
    """Names every item of the wanted category in one utterance, every turn."""

    name = "name_all"

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """One question naming the category's items (every item before the goal is heard)."""
        goal = self.core.tracker.goal
        names = [it.name for it in self.core.world.items if goal is None or it.category == goal]
        return "How about " + ", ".join(names) + "?"


@register_agent("ask_all")
class AskAllAgent(TextAgent):
    """Asks about every persona slot in one utterance, every turn."""

    name = "ask_all"

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """One question per slot, joined."""
        return " ".join(s.questions[0] for s in self.core.world.slots)
