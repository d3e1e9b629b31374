"""The rule-based agenda user (the default simulator, registered as ``agenda``)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.nlg import UserNLG
from dialog_env.persona import Persona
from dialog_env.users.base import UserTurn
from dialog_env.world import Item, World

if TYPE_CHECKING:
    from dialog_env.judge import Judge


@dataclass(frozen=True)
class AgendaUserConfig:
    """Behaviour knobs of :class:`AgendaUser`, keyed by trait level.

    Attributes:
        patience_budget: Patience points at the start; every turn costs one, a useless turn
            (chitchat, a repeated question, a rejected or repeated recommendation, asking about a
            declined slot) one more. At zero the user leaves.
        max_rejections: The user leaves after this many rejected recommendations.
        decline_prob: Chance of declining to answer a question, by openness.
        volunteer_prob: Chance a chatty answer volunteers one more fact, by verbosity.
        max_answers: Most questions answered in one turn.
    """

    patience_budget: Mapping[str, int] = field(default_factory=lambda: {"low": 9, "medium": 12, "high": 15})
    max_rejections: Mapping[str, int] = field(default_factory=lambda: {"low": 2, "medium": 3, "high": 3})
    decline_prob: Mapping[str, float] = field(default_factory=lambda: {"low": 0.4, "medium": 0.15, "high": 0.0})
    volunteer_prob: Mapping[str, float] = field(default_factory=lambda: {"terse": 0.0, "normal": 0.0, "chatty": 0.35})
    max_answers: int = 2


class AgendaUser:
    """A rule-based user with a hidden persona and a recommendation goal.

    It states its goal, answers questions (or declines, by openness), confirms or corrects what
    the agent says about it, rejects a recommendation with a reason that reveals a fact (the
    violated one for an unfit item; none for a fitting item that is not among the best), accepts
    one of the best fits for its persona in the wanted category (the judge's
    :meth:`~dialog_env.judge.Judge.acceptable`), and leaves when patience runs out. It implements
    :class:`~dialog_env.users.base.UserSimulator`.

    Args:
        world: The world.
        config: Behaviour knobs.
    """

    def __init__(self, world: World, config: AgendaUserConfig | None = None) -> None:
        self.world = world
        self.config = config or AgendaUserConfig()
        self.nlg = UserNLG(world)
        self.revealed: dict[str, str] = {}

    def reset(self, persona: Persona, goal: str, rng: random.Random, judge: Judge | None = None) -> UserTurn:
        """Start a dialogue with ``persona`` wanting a ``goal`` category; return the opening.

        Args:
            persona: The hidden persona.
            goal: The wanted category.
            rng: The user's random source.
            judge: The world's judge of this dialogue (the env's); a fresh one when used standalone.
        """
        if goal not in self.world.category:
            raise ValueError(f"goal must be one of {list(self.world.category)}, got {goal!r}")
        if judge is None:
            from dialog_env.judge import Judge

            judge = Judge(self.world)
            judge.start(persona, goal)
        cfg, traits = self.config, persona.traits
        self.persona, self.goal, self.rng = persona, goal, rng
        self.budget = cfg.patience_budget[traits["patience"]]
        self.max_rejections = cfg.max_rejections[traits["patience"]]
        self.decline_prob = cfg.decline_prob[traits["openness"]]
        self.volunteer_prob = cfg.volunteer_prob[traits["verbosity"]]
        self.acceptable = judge.acceptable_items
        # A returning user remembers what it told the agent before: asked again, it repeats itself and
        # loses patience as it does over a question repeated within a dialogue.
        self.told_before: dict[str, str] = dict(getattr(judge, "earlier", {}))
        self.revealed = {}
        self.declined: set[str] = set()
        self.rejected: set[str] = set()
        self.n_rejections = 0
        self.done = False
        return self._turn((DialogueAct(A.REQUEST, None, goal),), None)

    def render(self, acts: Sequence[DialogueAct], rng: random.Random | None = None) -> str:
        """Render ``acts`` in this user's style, drawing on ``rng`` (default: the user's stream)."""
        return self.nlg.render(acts, self.persona.traits["verbosity"], rng or self.rng)

    def _turn(self, acts: tuple[DialogueAct, ...], outcome: str | None) -> UserTurn:
        for a in acts:
            if a.intent in (A.INFORM, A.AFFIRM):
                self.revealed[a.slot] = a.value
        return UserTurn(acts, self.render(acts), outcome)

    def _fact(self, slot: str) -> DialogueAct:
        return DialogueAct(A.INFORM, slot, self.persona.values[slot])

    def respond(self, agent_acts: Sequence[DialogueAct], agent_text: str = "") -> UserTurn:
        """Answer one agent turn (acts as parsed from the agent's utterance)."""
        if self.done:
            raise RuntimeError("the dialogue is over; call reset() first")
        values = self.persona.values
        out: list[DialogueAct] = []
        cost = 1
        outcome: str | None = None
        recs: list[DialogueAct] = []
        refs: list[DialogueAct] = []
        asks: list[DialogueAct] = []
        said_bye = False
        for a in agent_acts:  # one pass: this runs every step
            t = a.intent
            if t == A.RECOMMEND:
                recs.append(a)
            elif t == A.ASK:
                asks.append(a)
            elif t == A.CONFIRM or t == A.INFORM:
                refs.append(a)
            elif t == A.BYE:
                said_bye = True
        if recs:
            item = self.world.item[recs[0].value]
            if item.id in self.rejected:
                out.append(DialogueAct(A.REPEAT, None, item.id))
                cost += 1
            elif item.category != self.goal:
                out += [DialogueAct(A.REJECT, None, item.id), DialogueAct(A.REQUEST, None, self.goal)]
            else:
                if self.acceptable[item.index]:
                    outcome = "accepted"
                    out.append(DialogueAct(A.ACCEPT, None, item.id))
                else:
                    reason = self._rejection_reason(item)
                    out.append(DialogueAct(A.REJECT, None, item.id))
                    if reason is not None:
                        out.append(self._fact(reason))
            if outcome is None:
                self.rejected.add(item.id)
                self.n_rejections += 1
                cost += 1
        if outcome is None:
            for ref in refs:
                if values[ref.slot] == ref.value:
                    if ref.intent == A.CONFIRM:
                        cost += self.revealed.get(ref.slot) == ref.value or self.told_before.get(ref.slot) == ref.value
                        out.append(DialogueAct(A.AFFIRM, ref.slot, ref.value))
                else:
                    out += [DialogueAct(A.NEGATE, ref.slot, ref.value), self._fact(ref.slot)]
            if not recs:
                for ask in asks[: self.config.max_answers]:
                    out += self._answer(ask.slot)
                    cost += ask.slot in self.revealed or ask.slot in self.declined or ask.slot in self.told_before
                if out and out[-1].intent == A.INFORM and self.rng.random() < self.volunteer_prob:
                    hidden = [
                        s
                        for s in self.world.slot_names
                        if s not in self.revealed and s not in self.declined and s not in self.told_before
                    ]
                    hidden = [s for s in hidden if all(a.slot != s for a in out)]
                    if hidden:
                        out.append(self._fact(self.rng.choice(hidden)))
            if said_bye:
                outcome = "bye"
                out.append(DialogueAct(A.BYE))
            elif not out:
                cost += 1
                out.append(DialogueAct(A.CHITCHAT, None, self.goal))
        self.budget -= cost
        if outcome is None and (self.budget <= 0 or self.n_rejections >= self.max_rejections):
            outcome = "left"
            out.append(DialogueAct(A.BYE, None, "left"))
        self.done = outcome is not None
        return self._turn(tuple(out), outcome)

    def _rejection_reason(self, item: Item) -> str | None:
        return rejection_reason(item, self.persona.values)

    def _answer(self, slot: str) -> list[DialogueAct]:
        if slot in self.revealed or slot in self.told_before:
            return [DialogueAct(A.REPEAT, slot), self._fact(slot)]
        # A declined slot stays declined: asking again only costs patience.
        if slot in self.declined or self.rng.random() < self.decline_prob:
            self.declined.add(slot)
            return [DialogueAct(A.DECLINE, slot)]
        return [self._fact(slot)]


def rejection_reason(item: Item, values: Mapping[str, str]) -> str | None:
    """The slot whose fact explains a rejection of ``item`` by a persona with ``values``, if any.

    A violated constraint, else a slot the item hoped to appeal to; ``None`` when it fits and
    appeals but a better item exists (the user only says it is not quite right: the agent has
    to find out why).
    """
    bad = item.violated_slots(values)
    if bad:
        return bad[0]
    if not item.appealing_slots(values):
        return next(iter(item.appeals))
    return None
