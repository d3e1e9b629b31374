"""Baseline agents: random (floor), rule (fixed question order), oracle (knows the persona: ceiling).

They choose act-table ids and work in both modes: in ``PersonaRecText-v0`` the act is rendered
as an utterance by the env's agent NLG.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agents.base import is_privileged, register_agent
from dialog_env.view import AgentView, agent_view


class ActAgent:
    """Base for agents that pick act-table ids; renders them as text in text mode."""

    name = "act"
    remembers = False
    """With a returning user (``PersonaRecSessions-v0``), keep what earlier sessions' trackers heard."""

    def reset(self, env: gym.Env | AgentView, seed: int | None = None) -> None:
        """Take the agent's view of the env (read-only tracker, act table, world)."""
        self.core = agent_view(env, privileged=is_privileged(self))
        # Text actions unless the env takes act ids (DiscreteActsWrapper around the text env).
        self.text_mode = self.core.text_actions
        self.rng = np.random.default_rng(seed)
        self.memory: dict[str, str] = {}

    def act(self, observation: Any, info: dict[str, Any]) -> int | str:
        """Choose an act id (or its utterance in text mode)."""
        self.note_session(info)
        a = self.choose()
        return self.core.act_to_text(a) if self.text_mode else a

    def note_session(self, info: dict[str, Any]) -> None:
        """At a new session's first turn, remember what the last session's tracker heard (if the agent remembers)."""
        if self.remembers and "session_heard" in info:
            self.memory.update(info["session_heard"])

    def known(self) -> dict[str, str]:
        """Facts the agent holds: remembered from earlier sessions, then heard in this one."""
        heard = self.core.tracker.known()
        return {**self.memory, **heard} if self.memory else heard

    def choose(self) -> int:
        """The act id to take; subclasses implement it."""
        raise NotImplementedError

    def best_item(self, known: dict[str, str]) -> str | None:
        """Best unrejected item in the goal category given ``known`` facts.

        Items breaking a known fact are skipped; the most appealing wins, then catalog order.
        """
        core = self.core
        goal = core.tracker.goal
        best, best_score = None, -1
        for item in core.world.items:
            if (goal is not None and item.category != goal) or core.tracker.rejected[item.index]:
                continue
            if item.violated_slots(known):
                continue
            score = len(item.appealing_slots(known))
            if score > best_score:
                best, best_score = item.id, score
        return best


@register_agent("random")
class RandomAgent(ActAgent):
    """Uniform over the acts allowed by the action mask."""

    name = "random"

    def choose(self) -> int:
        """A uniformly random allowed act."""
        return int(self.rng.choice(np.flatnonzero(self.core.action_masks())))


@register_agent("rule")
class RuleAgent(ActAgent):
    """Asks every slot in world order, then recommends the best fit for what it learned.

    Slots already known or declined are skipped; after a rejection it recommends the next best.
    """

    name = "rule"

    def choose(self) -> int:
        """Next unasked slot, else the best-fitting item, else ``bye``."""
        core, t = self.core, self.core.tracker
        for s in core.world.slots:
            if not (t.informed[s.index] or t.declined[s.index] or t.asked[s.index] or s.name in self.memory):
                return core.act_table.ask(s.name)
        item = self.best_item(self.known())
        return core.act_table.recommend(item) if item else core.act_table.bye


@register_agent("rule_memory")
class RuleMemoryAgent(RuleAgent):
    """The rule agent with a memory across sessions: it never re-asks what a returning user told it."""

    name = "rule_memory"
    remembers = True


@register_agent("oracle")
class OracleAgent(ActAgent):
    """Reads the hidden persona and goal (privileged): the ceiling.

    Recommends the most appealing acceptable item at once.
    """

    name = "oracle"
    privileged = True

    def choose(self) -> int:
        """The best acceptable item for the true persona, else ``bye``."""
        core = self.core
        item = self.best_item(dict(core.hidden.persona.values))
        return core.act_table.recommend(item) if item else core.act_table.bye

    def best_item(self, known: dict[str, str]) -> str | None:
        """Like :meth:`ActAgent.best_item` but in the true goal category."""
        core = self.core
        persona, goal = core.hidden
        ok = core.world.acceptable_mask(core.world.value_indices(persona.values), goal) & ~core.tracker.rejected
        cands = [core.world.items[i] for i in np.flatnonzero(ok)]
        if not cands:
            return None
        return max(cands, key=lambda it: (len(it.appealing_slots(known)), -it.index)).id
