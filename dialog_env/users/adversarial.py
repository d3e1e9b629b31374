"""A user that is played by a policy: its act table, the mask that keeps it true to its persona.

The adversarial variant lets a learned policy play the user (``PersonaRecDuel-v0``; ``user="adv:<run>"``
in every env). The policy chooses one *user act* a turn from :class:`UserActTable`; what it may
choose is limited by :meth:`PolicyUser.action_mask` so that everything it says is true of its hidden
persona. It may be evasive or tricky, never lie:

* a recommendation of an acceptable item must be accepted, one of any other item rejected (with the
  true reason, when the persona has one) — so the user cannot withhold a success the agent earned;
* answers, volunteered facts and corrections state the persona's true values;
* it may challenge the agent to restate a fact it already revealed, ask back, change the subject or
  volunteer a fact it was not asked — moves that tempt an agent into contradicting itself or
  wasting turns. When the agent asked a question, anything but an answer (declining included)
  spends one of the persona's evasions: low openness 3 a dialogue, medium 1, high 0. A user that
  evades every question would make the task unsolvable, not the agent's failure;
* it leaves when the agent says goodbye or its patience (the agenda user's budget, by the persona's
  patience trait) is spent, and may leave a turn early when one point of patience is left.

The world's judge still decides acceptance and what counts as revealed. :class:`PolicyUser`
implements :class:`~dialog_env.users.base.UserSimulator`; the act for the next turn is set with
:meth:`PolicyUser.set_action` (the duel env) or chosen by a policy (:class:`AdversarialUser`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.nlg import UserNLG
from dialog_env.persona import Persona
from dialog_env.users.agenda import AgendaUserConfig, rejection_reason
from dialog_env.users.base import UserTurn
from dialog_env.world import World

if TYPE_CHECKING:
    from dialog_env.judge import Judge

CHALLENGE = A.CHALLENGE
"""User intent ``challenge(slot)``: "Do you remember what I told you about my <slot>?" (the agent's
NLU reads it, so an agent sees when it is asked to restate a fact)."""
ASK_BACK = "ask_back"
"""User intent ``ask_back``: the user asks the agent a question instead of answering."""

CHALLENGE_TEMPLATES = (
    "Do you remember what I told you about my {noun}?",
    "Wait, what did I say about my {noun} again?",
    "So what do you know about my {noun}?",
)
ASK_BACK_TEMPLATES = (
    "What would you pick yourself?",
    "Why do you ask?",
    "What do you usually recommend?",
)
EVASIONS_BY_OPENNESS = {"low": 3, "medium": 1, "high": 0}
"""Most questions a user of each openness may leave unanswered in one dialogue (declining, or saying
something else instead: volunteering another fact, a challenge, a question back, another subject)."""


@dataclass(frozen=True)
class UserActTable:
    """The user's discrete acts (``S`` slots).

    | Id                 | Act                                                        |
    |--------------------|------------------------------------------------------------|
    | 0                  | ``wait`` (not the user's turn; the duel env's no-op)       |
    | 1                  | ``answer``: the asked slots (and any confirm) truthfully   |
    | 2 .. S+1           | ``decline(slot k)``                                        |
    | S+2 .. 2S+1        | ``volunteer(slot k)``: its true value, unasked             |
    | 2S+2 .. 3S+1       | ``challenge(slot k)``: restate a fact I told you           |
    | 3S+2               | ``ask_back``                                               |
    | 3S+3               | ``change_subject``                                         |
    | 3S+4               | ``accept`` the recommended item                            |
    | 3S+5               | ``reject`` the recommended item (true reason, if any)      |
    | 3S+6               | ``leave``                                                  |
    """

    world: World

    WAIT = 0
    ANSWER = 1

    @functools.cached_property
    def n_slots(self) -> int:
        """Number of persona slots."""
        return len(self.world.slots)

    @functools.cached_property
    def decline_start(self) -> int:
        """First ``decline`` id."""
        return 2

    @functools.cached_property
    def volunteer_start(self) -> int:
        """First ``volunteer`` id."""
        return 2 + self.n_slots

    @functools.cached_property
    def challenge_start(self) -> int:
        """First ``challenge`` id."""
        return 2 + 2 * self.n_slots

    @functools.cached_property
    def ask_back(self) -> int:
        """The ``ask_back`` id."""
        return 2 + 3 * self.n_slots

    @functools.cached_property
    def change_subject(self) -> int:
        """The ``change_subject`` id."""
        return self.ask_back + 1

    @functools.cached_property
    def accept(self) -> int:
        """The ``accept`` id."""
        return self.ask_back + 2

    @functools.cached_property
    def reject(self) -> int:
        """The ``reject`` id."""
        return self.ask_back + 3

    @functools.cached_property
    def leave(self) -> int:
        """The ``leave`` id."""
        return self.ask_back + 4

    @functools.cached_property
    def size(self) -> int:
        """Number of user acts."""
        return self.leave + 1

    def __len__(self) -> int:
        return self.size

    def name(self, action: int) -> str:
        """A readable name of a user act id, e.g. ``"volunteer(diet)"``.

        Raises:
            ValueError: ``action`` is not an id of the table.
        """
        if isinstance(action, bool) or not isinstance(action, int | np.integer) or not 0 <= action < self.size:
            raise ValueError(f"user action must be an integer in [0, {self.size}), got {action!r}")
        a, slots = int(action), self.world.slot_names
        fixed = {
            self.WAIT: "wait",
            self.ANSWER: "answer",
            self.ask_back: "ask_back",
            self.change_subject: "change_subject",
            self.accept: "accept",
            self.reject: "reject",
            self.leave: "leave",
        }
        if a in fixed:
            return fixed[a]
        for kind, start in (("decline", self.decline_start), ("volunteer", self.volunteer_start)):
            if start <= a < start + self.n_slots:
                return f"{kind}({slots[a - start]})"
        return f"challenge({slots[a - self.challenge_start]})"


class PolicyUser:
    """A user whose every turn is one act of :class:`UserActTable`, chosen by a policy within the truth mask.

    Args:
        world: The world.
        config: The agenda user's knobs (patience budget, most rejections, most answers a turn).
    """

    def __init__(self, world: World, config: AgendaUserConfig | None = None) -> None:
        self.world = world
        self.config = config or AgendaUserConfig()
        self.table = UserActTable(world)
        self.nlg = UserNLG(world)
        self._next: int | None = None
        n_slots, n_items = len(world.slots), len(world.items)
        self.obs_dim = world.n_values + len(world.categories) + 2 * n_slots + len(A.AGENT_INTENTS)
        self.obs_dim += 2 * n_slots + n_items + 2 + 5
        self._value_at = {(s.name, v.id): s.offset + j for s in world.slots for j, v in enumerate(s.values)}
        self._intent_at = {t: i for i, t in enumerate(A.AGENT_INTENTS)}

    # -- the UserSimulator protocol -------------------------------------------------------------
    def reset(self, persona: Persona, goal: str, rng: random.Random, judge: Judge | None = None) -> UserTurn:
        """Start a dialogue; the opening states the goal (as the agenda user's does)."""
        if goal not in self.world.category:
            raise ValueError(f"goal must be one of {list(self.world.category)}, got {goal!r}")
        if judge is None:
            from dialog_env.judge import Judge

            judge = Judge(self.world)
            judge.start(persona, goal)
        traits = persona.traits
        self.persona, self.goal, self.rng, self.judge = persona, goal, rng, judge
        self.budget0 = self.budget = self.config.patience_budget[traits["patience"]]
        self.max_rejections = self.config.max_rejections[traits["patience"]]
        self.evasions0 = self.evasions_left = EVASIONS_BY_OPENNESS[traits["openness"]]
        self.revealed: dict[str, str] = {}
        self.declined: set[str] = set()
        self.rejected: set[str] = set()
        self.n_rejections = 0
        self.turns = 0
        self.done = False
        self._next = None
        acts = (DialogueAct(A.REQUEST, None, goal),)
        return UserTurn(acts, self.render(acts, rng))

    def respond(self, agent_acts: Sequence[DialogueAct], agent_text: str = "") -> UserTurn:
        """Answer one agent turn with the act set by :meth:`set_action` (or :meth:`choose`'s).

        Raises:
            RuntimeError: No act was set for this turn, or the dialogue is over.
            ValueError: The act is not allowed by the mask (it would not be true to the persona).
        """
        if self.done:
            raise RuntimeError("the dialogue is over; call reset() first")
        action = self._next if self._next is not None else self.choose(agent_acts)
        self._next = None
        mask = self.action_mask(agent_acts)
        if not mask[action]:
            allowed = [self.table.name(i) for i in np.flatnonzero(mask)]
            raise ValueError(
                f"user action {self.table.name(action)} is not allowed here (it is not the user's turn, or it would "
                f"not be true to the persona); allowed: {allowed}"
            )
        return self._act(int(action), agent_acts)

    def render(self, acts: Sequence[DialogueAct], rng: random.Random | None = None) -> str:
        """Phrase ``acts`` in the persona's style (challenges and questions back with their own templates)."""
        rng = rng or self.rng
        parts, plain = [], []
        for a in acts:
            if a.intent == CHALLENGE:
                parts.append(rng.choice(CHALLENGE_TEMPLATES).format(noun=self.world.slot[a.slot].noun))
            elif a.intent == ASK_BACK:
                parts.append(rng.choice(ASK_BACK_TEMPLATES))
            else:
                plain.append(a)
        text = self.nlg.render(plain, self.persona.traits["verbosity"], rng) if plain else ""
        return " ".join(p for p in (text, *parts) if p)

    # -- the policy's side --------------------------------------------------------------------------
    def set_action(self, action: int) -> None:
        """The user act of the next :meth:`respond` (checked against the mask there)."""
        self.table.name(action)  # validates the id, with a clear error
        self._next = int(action)

    def choose(self, agent_acts: Sequence[DialogueAct]) -> int:
        """The act when none was set: here, the first allowed of answer, accept, reject, leave.

        Subclasses (:class:`AdversarialUser`) choose with a policy.
        """
        mask = self.action_mask(agent_acts)
        for a in (self.table.ANSWER, self.table.accept, self.table.reject, self.table.leave):
            if mask[a]:
                return a
        return self.table.change_subject

    def action_mask(self, agent_acts: Sequence[DialogueAct]) -> np.ndarray:
        """Bool mask over :class:`UserActTable`: the acts true to the persona in answer to ``agent_acts``."""
        t, w = self.table, self.world
        mask = np.zeros(t.size, dtype=bool)
        if any(a.intent == A.BYE for a in agent_acts):
            mask[t.leave] = True
            return mask
        rec = next((a.value for a in agent_acts if a.intent == A.RECOMMEND), None)
        if rec is not None:
            mask[t.accept if self.judge.acceptable(rec) else t.reject] = True
            return mask
        asked = [a.slot for a in agent_acts if a.intent == A.ASK]
        refs = [a for a in agent_acts if a.intent in (A.CONFIRM, A.INFORM)]
        mask[t.ANSWER] = bool(asked or refs)
        free = not asked or self.evasions_left > 0  # not answering a question spends an evasion
        for k, slot in enumerate(w.slot_names):
            revealed = slot in self.revealed
            mask[t.decline_start + k] = slot in asked and not revealed and self.evasions_left > 0
            mask[t.volunteer_start + k] = free and not revealed and slot not in asked
            mask[t.challenge_start + k] = free and revealed
        mask[t.ask_back] = mask[t.change_subject] = free
        mask[t.leave] = self.budget <= 1
        return mask

    def observation(self, agent_acts: Sequence[DialogueAct]) -> np.ndarray:
        """What the user policy sees: its own persona and goal, the dialogue so far, the agent's turn.

        Layout: persona values (one-hot per slot), goal (one-hot), revealed and declined slots, the
        agent turn's intents, asked slots and referenced slots, its recommended item (one-hot),
        whether that item is acceptable and in the goal category, then patience left, rejections
        left, evasions left, the turn (over 20) and a constant 1.
        """
        w = self.world
        obs = np.zeros(self.obs_dim, dtype=np.float32)
        for slot, value in self.persona.values.items():
            obs[self._value_at[slot, value]] = 1.0
        at = w.n_values
        obs[at + w.category[self.goal].index] = 1.0
        at += len(w.categories)
        n_slots = len(w.slots)
        for slot in self.revealed:
            obs[at + w.slot[slot].index] = 1.0
        for slot in self.declined:
            obs[at + n_slots + w.slot[slot].index] = 1.0
        at += 2 * n_slots
        intents, asked, refs = at, at + len(A.AGENT_INTENTS), at + len(A.AGENT_INTENTS) + n_slots
        items = refs + n_slots
        rec = None
        for a in agent_acts:
            obs[intents + self._intent_at[a.intent]] = 1.0
            if a.intent == A.ASK:
                obs[asked + w.slot[a.slot].index] = 1.0
            elif a.intent in (A.CONFIRM, A.INFORM):
                obs[refs + w.slot[a.slot].index] = 1.0
            elif a.intent == A.RECOMMEND and rec is None:
                rec = a.value
                obs[items + w.item[rec].index] = 1.0
        at = items + len(w.items)
        if rec is not None:
            obs[at] = float(self.judge.acceptable(rec))
            obs[at + 1] = float(w.item[rec].category == self.goal)
        at += 2
        obs[at] = max(0.0, self.budget / self.budget0)
        obs[at + 1] = 1.0 - self.n_rejections / self.max_rejections
        obs[at + 2] = self.evasions_left / self.evasions0 if self.evasions0 else 0.0
        obs[at + 3] = min(1.0, self.turns / 20)
        obs[at + 4] = 1.0
        return obs

    # -- turning an act into a user turn --------------------------------------------------------------
    def _fact(self, slot: str) -> DialogueAct:
        return DialogueAct(A.INFORM, slot, self.persona.values[slot])

    def _act(self, action: int, agent_acts: Sequence[DialogueAct]) -> UserTurn:
        t, values = self.table, self.persona.values
        out: list[DialogueAct] = []
        outcome: str | None = None
        cost = 1
        asked = [a.slot for a in agent_acts if a.intent == A.ASK]
        # The agent's turn costs patience as it does with the agenda user: repeated or useless questions.
        cost += sum(s in self.revealed or s in self.declined for s in asked)
        if not agent_acts or all(a.intent in (A.CHITCHAT, A.NONE) for a in agent_acts):
            cost += 1
        if action == t.ANSWER:
            for a in agent_acts:
                if a.intent in (A.CONFIRM, A.INFORM):
                    if values[a.slot] == a.value:
                        if a.intent == A.CONFIRM:
                            out.append(DialogueAct(A.AFFIRM, a.slot, a.value))
                    else:
                        out += [DialogueAct(A.NEGATE, a.slot, a.value), self._fact(a.slot)]
            for slot in asked[: self.config.max_answers]:
                out += [DialogueAct(A.REPEAT, slot), self._fact(slot)] if slot in self.revealed else [self._fact(slot)]
            if not out:  # a confirm of a true, already affirmed fact: acknowledge it
                out.append(DialogueAct(A.CHITCHAT, None, self.goal))
        elif t.decline_start <= action < t.volunteer_start:
            slot = self.world.slot_names[action - t.decline_start]
            out.append(DialogueAct(A.DECLINE, slot))
            self.declined.add(slot)
        elif t.volunteer_start <= action < t.challenge_start:
            out.append(self._fact(self.world.slot_names[action - t.volunteer_start]))
        elif t.challenge_start <= action < t.ask_back:
            out.append(DialogueAct(CHALLENGE, self.world.slot_names[action - t.challenge_start]))
        elif action == t.ask_back:
            out.append(DialogueAct(ASK_BACK))
        elif action == t.change_subject:
            out.append(DialogueAct(A.CHITCHAT, None, self.goal))
        elif action == t.accept:
            rec = next(a.value for a in agent_acts if a.intent == A.RECOMMEND)
            out.append(DialogueAct(A.ACCEPT, None, rec))
            outcome = "accepted"
        elif action == t.reject:
            rec = next(a.value for a in agent_acts if a.intent == A.RECOMMEND)
            item = self.world.item[rec]
            if rec in self.rejected:
                out.append(DialogueAct(A.REPEAT, None, rec))
                cost += 1
            elif item.category != self.goal:
                out += [DialogueAct(A.REJECT, None, rec), DialogueAct(A.REQUEST, None, self.goal)]
            else:
                out.append(DialogueAct(A.REJECT, None, rec))
                reason = rejection_reason(item, values)
                if reason is not None:
                    out.append(self._fact(reason))
            self.rejected.add(rec)
            self.n_rejections += 1
            cost += 1
        elif action == t.leave:
            said_bye = any(a.intent == A.BYE for a in agent_acts)
            out.append(DialogueAct(A.BYE, None, None if said_bye else "left"))
            outcome = "bye" if said_bye else "left"
        if asked and action != t.ANSWER and action != t.leave:
            self.evasions_left -= 1
        self.turns += 1
        self.budget -= cost
        if outcome is None and (self.budget <= 0 or self.n_rejections >= self.max_rejections):
            outcome = "left"
            out.append(DialogueAct(A.BYE, None, "left"))
        for a in out:
            if a.intent in (A.INFORM, A.AFFIRM):
                self.revealed[a.slot] = a.value  # type: ignore[index]
        self.done = outcome is not None
        acts = tuple(out)
        return UserTurn(acts, self.render(acts), outcome)


UserPolicy = Callable[[np.ndarray, np.ndarray], int]
"""A user policy: ``(observation, action_mask) -> user act id``."""


class AdversarialUser(PolicyUser):
    """A :class:`PolicyUser` whose acts a trained policy chooses (``user="adv:<run>"``).

    Args:
        world: The world.
        policy: ``(observation, mask) -> act id``, an object with SB3's ``predict`` (MaskablePPO), or a
            run folder / ``.zip`` of a MaskablePPO user trained on ``PersonaRecDuel-v0``.
        deterministic: Take the policy's most likely act (the default) or sample it.
    """

    def __init__(self, world: World, policy: Any, deterministic: bool = True) -> None:
        super().__init__(world)
        if isinstance(policy, str):
            policy = load_user_policy(policy)
        self.policy, self.deterministic = policy, deterministic

    def choose(self, agent_acts: Sequence[DialogueAct]) -> int:
        """The policy's act for this agent turn, within the mask."""
        obs, mask = self.observation(agent_acts), self.action_mask(agent_acts)
        if hasattr(self.policy, "predict"):
            action, _ = self.policy.predict(obs, action_masks=mask, deterministic=self.deterministic)
            return int(action)
        return int(self.policy(obs, mask))


def load_user_policy(path: str) -> Any:
    """A MaskablePPO user policy from a run folder (its ``final_model.zip`` or ``best_model.zip``) or a ``.zip``.

    Raises:
        ValueError: Nothing loadable at ``path`` (the message names it).
    """
    from pathlib import Path

    from sb3_contrib import MaskablePPO

    p = Path(path)
    candidates = [p] if p.suffix == ".zip" else [p / "final_model.zip", p / "best_model.zip"]
    for c in candidates:
        if c.is_file():
            return MaskablePPO.load(str(c), device="cpu")
    raise ValueError(f"user 'adv:{path}': no MaskablePPO user policy found (looked for {[str(c) for c in candidates]})")


def random_user_policy(seed: int = 0) -> UserPolicy:
    """A user policy that picks uniformly among the allowed acts (seeded)."""
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, mask: np.ndarray) -> int:
        return int(rng.choice(np.flatnonzero(mask)))

    return policy


__all__ = [
    "ASK_BACK",
    "CHALLENGE",
    "EVASIONS_BY_OPENNESS",
    "AdversarialUser",
    "PolicyUser",
    "UserActTable",
    "load_user_policy",
    "random_user_policy",
]
