"""The dialogue-state tracker: what the agent has learned about the user, from the user's words.

The ``rule`` tracker reads the user's *text* through :class:`~dialog_env.nlu.UserNLU`; the
``oracle`` tracker reads the user's true acts (an ablation: perfect understanding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.nlu import Lexicon, UserNLU
from dialog_env.world import World

TRACKER_MODES = ("rule", "oracle")
# Weight of one piece of evidence against the uniform prior: one inform puts ~0.9 on the value.
EVIDENCE_WEIGHT = 50.0


@dataclass(frozen=True, slots=True)
class TrackerView:
    """An immutable snapshot of the agent-side state, as rewards see it.

    Attributes:
        known: Slot -> believed value, for slots the user has informed.
        asked: Slots the agent has asked about.
        declined: Slots the user declined to talk about.
        confirmed: Slots the user confirmed.
        rejected: Items the user rejected.
        entropy: Total belief entropy in bits.
    """

    known: dict[str, str]
    asked: frozenset[str]
    declined: frozenset[str]
    confirmed: frozenset[str]
    rejected: frozenset[str]
    entropy: float


class DialogueStateTracker:
    """Belief over persona slots plus dialogue flags.

    State (all public, read-only for agents):
        ``belief`` -- flat float32 array over every value, summing to 1 within each slot;
        ``informed``, ``asked``, ``declined``, ``confirmed`` -- bool arrays over slots;
        ``rejected``, ``recommended`` -- bool arrays over items; ``goal`` -- category id or None;
        ``conflicts`` -- how many user informs disagreed with an earlier belief.

    Args:
        world: The world.
        mode: ``rule`` (reads text) or ``oracle`` (reads true acts).
        lexicon: A shared lexicon (built from ``world`` when omitted).
    """

    def __init__(self, world: World, mode: str = "rule", lexicon: Lexicon | None = None) -> None:
        if mode not in TRACKER_MODES:
            raise ValueError(f"tracker mode must be one of {list(TRACKER_MODES)}, got {mode!r}")
        self.world = world
        self.mode = mode
        self.nlu = UserNLU(lexicon or Lexicon(world))
        n_slots, n_items = len(world.slots), len(world.items)
        self._slot_of_value = np.repeat(np.arange(n_slots), [len(s.values) for s in world.slots])
        self._bounds = [(s.offset, s.offset + len(s.values)) for s in world.slots]
        self._max_entropy = np.array([np.log2(len(s.values)) for s in world.slots])
        self.evidence = np.zeros(world.n_values, dtype=np.float64)
        self.belief = np.zeros(world.n_values, dtype=np.float32)
        self.slot_entropy = np.zeros(n_slots, dtype=np.float64)
        self.informed = np.zeros(n_slots, dtype=bool)
        self.asked = np.zeros(n_slots, dtype=bool)
        self.declined = np.zeros(n_slots, dtype=bool)
        self.confirmed = np.zeros(n_slots, dtype=bool)
        self.rejected = np.zeros(n_items, dtype=bool)
        self.recommended = np.zeros(n_items, dtype=bool)
        self.reset()

    def reset(self) -> None:
        """Forget everything (start of a dialogue)."""
        self.evidence[:] = 0.0
        for s, (lo, hi) in enumerate(self._bounds):
            self.belief[lo:hi] = 1.0 / (hi - lo)
        self.slot_entropy[:] = self._max_entropy
        for arr in (self.informed, self.asked, self.declined, self.confirmed, self.rejected, self.recommended):
            arr[:] = False
        self.goal: str | None = None
        self.conflicts = 0
        self.last_asked: tuple[str, ...] = ()
        self.last_confirm: tuple[str, str] | None = None
        self.last_recommended: str | None = None
        self.last_user_acts: tuple[DialogueAct, ...] = ()

    # -- reading ------------------------------------------------------------------------------
    @property
    def entropy(self) -> float:
        """Total belief entropy (bits) over all slots."""
        return float(self.slot_entropy.sum())

    def best(self, slot: str) -> str | None:
        """The most likely value of ``slot`` if the user informed it, else ``None``."""
        s = self.world.slot[slot]
        if not self.informed[s.index]:
            return None
        lo, hi = self._bounds[s.index]
        return s.values[int(np.argmax(self.belief[lo:hi]))].id

    def known(self) -> dict[str, str]:
        """Slot -> believed value for every informed slot."""
        return {s.name: self.best(s.name) for s in self.world.slots if self.informed[s.index]}  # type: ignore[misc]

    def view(self) -> TrackerView:
        """An immutable snapshot for reward computation."""
        names = self.world.slot_names
        items = self.world.items
        return TrackerView(
            known=self.known(),
            asked=frozenset(names[i] for i in np.flatnonzero(self.asked)),
            declined=frozenset(names[i] for i in np.flatnonzero(self.declined)),
            confirmed=frozenset(names[i] for i in np.flatnonzero(self.confirmed)),
            rejected=frozenset(items[i].id for i in np.flatnonzero(self.rejected)),
            entropy=self.entropy,
        )

    # -- updates ------------------------------------------------------------------------------
    def update_agent(self, acts: Sequence[DialogueAct]) -> None:
        """Record the agent's turn (what it asked, confirmed, recommended)."""
        asked, self.last_confirm, self.last_recommended = [], None, None
        for a in acts:
            if a.intent == A.ASK:
                self.asked[self.world.slot[a.slot].index] = True
                asked.append(a.slot)
            elif a.intent == A.CONFIRM and self.last_confirm is None:
                self.last_confirm = (a.slot, a.value)
            elif a.intent == A.RECOMMEND and self.last_recommended is None:
                self.recommended[self.world.item[a.value].index] = True
                self.last_recommended = a.value
        self.last_asked = tuple(asked)

    def update_user(self, text: str, true_acts: Sequence[DialogueAct] = ()) -> tuple[DialogueAct, ...]:
        """Read the user's turn and update the belief.

        Args:
            text: The user's utterance as the agent heard it (read in ``rule`` mode).
            true_acts: The user's acts (read in ``oracle`` mode).

        Returns:
            The acts the tracker understood.
        """
        if self.mode == "oracle":
            acts = tuple(true_acts)
        else:
            acts = self.nlu.parse(text, self.last_asked, self.last_confirm, self.last_recommended)
        w = self.world
        for a in acts:
            t = a.intent
            if t == A.INFORM:
                self._observe(w.slot[a.slot].index, w.value(a.slot, a.value).index)
            elif t == A.AFFIRM:
                s = w.slot[a.slot].index
                self._observe(s, w.value(a.slot, a.value).index)
                self.confirmed[s] = True
            elif t == A.NEGATE:
                v = w.value(a.slot, a.value).index
                self.evidence[v] = 0.0
                self._refresh(w.slot[a.slot].index)
            elif t == A.DECLINE:
                self.declined[w.slot[a.slot].index] = True
            elif t == A.REJECT:
                self.rejected[w.item[a.value].index] = True
            elif t == A.REQUEST and self.goal is None:
                self.goal = a.value
        self.last_user_acts = acts
        return acts

    def _observe(self, s: int, v: int) -> None:
        lo, hi = self._bounds[s]
        if self.informed[s] and self.evidence[v] == 0.0 and self.evidence[lo:hi].any():
            self.conflicts += 1
        self.evidence[v] += 1.0
        self.informed[s] = True
        self._refresh(s)

    def _refresh(self, s: int) -> None:
        lo, hi = self._bounds[s]
        w = 1.0 + EVIDENCE_WEIGHT * self.evidence[lo:hi]
        p = w / w.sum()
        self.belief[lo:hi] = p
        self.slot_entropy[s] = float(-(p * np.log2(p)).sum())
        if not self.evidence[lo:hi].any():
            self.informed[s] = False


def joint_goal_correct(known: dict[str, str], revealed: dict[str, str]) -> bool:
    """Joint-goal accuracy for one turn: the tracked slots and values equal the revealed ones."""
    return known == revealed
