"""The planner: a strong non-privileged baseline that asks only what decides the best fit.

Every turn it reasons over the public catalog with what it has heard (:mod:`dialog_env.fit`):
which items could still be accepted, and how likely each is under the world's prior over the facts
it has not heard. It recommends once an item is certainly a best fit, or likely enough for the
time spent; otherwise it asks the open slots whose answers most raise the chance of a right
recommendation (two per utterance in text mode, one act a turn in act mode). It reads only the
tracker, never the persona, which makes it the default teacher of LM policies (``dialog-env collect``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import register_agent
from agents.baselines import ActAgent
from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.fit import candidates, certain_best, persona_samples, ranked, value_of_asking


@register_agent("planner")
class PlannerAgent(ActAgent):
    """Asks the slots that decide the best fit for the wanted category, then recommends it.

    Args:
        asks_per_turn: Most questions in one utterance (text mode; act mode takes one act a turn).
        confidence: Recommend the likeliest item once its chance of being accepted reaches this.
        patience: Lower the bar by ``confidence / patience`` per turn taken, so a long dialogue ends in a
            recommendation before the user runs out of patience.
        samples: Persona draws per decision.
    """

    name = "planner"

    def __init__(
        self, asks_per_turn: int = 2, confidence: float = 0.8, patience: float = 12.0, samples: int = 512
    ) -> None:
        if isinstance(asks_per_turn, bool) or not isinstance(asks_per_turn, int) or asks_per_turn < 1:
            raise ValueError(f"asks_per_turn must be a positive integer, got {asks_per_turn!r}")
        if not 0.0 < confidence <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence!r}")
        if not patience > 0:
            raise ValueError(f"patience must be positive, got {patience!r}")
        self.asks_per_turn, self.confidence, self.patience, self.samples = asks_per_turn, confidence, patience, samples

    def plan(self) -> list[DialogueAct]:
        """The acts of the next turn: a recommendation, or the most useful questions."""
        core, t = self.core, self.core.tracker
        world = core.world
        known = self.known()
        rejected = {it.id for it in world.items if t.rejected[it.index]}
        cands = candidates(world, t.goal, known, rejected)
        if not cands:
            return [DialogueAct(A.BYE)]
        best = certain_best(cands)
        if best is not None:
            return [DialogueAct(A.RECOMMEND, None, best.item.id)]
        value_idx, acceptable, items = persona_samples(world, t.goal, known, rejected, self.rng, self.samples)
        if acceptable.shape[1] == 0:  # nothing the prior allows: go by known appeal
            return [DialogueAct(A.RECOMMEND, None, ranked(cands)[0].item.id)]
        chance = acceptable.mean(axis=1)
        likeliest = items[int(np.argmax(chance))].id
        bar = self.confidence * (1.0 - core.turn / self.patience)
        askable = [s.name for s in world.slots if not (t.informed[s.index] or t.declined[s.index] or s.name in known)]
        gain = value_of_asking(world, value_idx, acceptable, askable)
        useful = sorted(
            (s for s in gain if gain[s] > chance.max() + 1e-9), key=lambda s: (-gain[s], world.slot[s].index)
        )
        if chance.max() >= bar or not useful:
            return [DialogueAct(A.RECOMMEND, None, likeliest)]
        return [DialogueAct(A.ASK, s) for s in useful[: self.asks_per_turn]]

    def choose(self) -> int:
        """The act id of the plan's first act."""
        act = self.plan()[0]
        tab = self.core.act_table
        if act.intent == A.ASK:
            return tab.ask(act.slot)  # type: ignore[arg-type]
        if act.intent == A.RECOMMEND:
            return tab.recommend(act.value)  # type: ignore[arg-type]
        return tab.bye

    def act(self, observation: Any, info: dict[str, Any]) -> int | str:
        """An act id, or in text mode the whole plan as one utterance."""
        self.note_session(info)
        if self.text_mode:
            return self.core.acts_to_text(self.plan())  # type: ignore[attr-defined]
        return self.choose()


@register_agent("planner_memory")
class PlannerMemoryAgent(PlannerAgent):
    """The planner with a memory across sessions: it plans with what a returning user told it before."""

    name = "planner_memory"
    remembers = True
