"""Degenerate policies that try to game the reward; the benchmark shows they score below ``rule``."""

from __future__ import annotations

from agents.base import register_agent
from agents.baselines import ActAgent


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
