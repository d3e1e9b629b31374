"""The dialogue-state tracker: what the agent has learned about the user, from the user's words.

The ``rule`` tracker reads the user's *text* through :class:`~dialog_env.nlu.UserNLU`; the
``learned`` tracker reads the facts in it with a classifier on sentence embeddings
(:class:`~dialog_env.learned_tracker.LearnedNLU`: paraphrases with no alias of the lexicon too); the
``oracle`` tracker reads the user's true acts (an ablation: perfect understanding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.nlu import Lexicon, UserNLU
from dialog_env.world import World

TRACKER_MODES = ("rule", "learned", "oracle")
# Weight of one piece of evidence against the uniform prior: one inform puts ~0.9 on the value.
EVIDENCE_WEIGHT = 50.0


class TrackerView(NamedTuple):
    """An immutable snapshot of the agent-side state, as rewards see it.

    Attributes:
        known: Slot -> believed value, for slots the user has informed.
        asked: Slots the agent has asked about.
        declined: Slots the user declined to talk about.
        confirmed: Slots the user confirmed.
        rejected: Items the user rejected.
        entropy: Total belief entropy in bits.
        slot_entropy: Belief entropy of each slot, in the world's slot order.
    """

    known: dict[str, str]
    asked: frozenset[str]
    declined: frozenset[str]
    confirmed: frozenset[str]
    rejected: frozenset[str]
    entropy: float
    slot_entropy: tuple[float, ...] = ()


class DialogueStateTracker:
    """Belief over persona slots plus dialogue flags.

    State (all public, read-only for agents):
        ``belief`` -- flat float32 array over every value, summing to 1 within each slot;
        ``informed``, ``asked``, ``declined``, ``confirmed`` -- bool arrays over slots (the rows
        of ``slot_flags``); ``recommended``, ``rejected`` -- bool arrays over items (the rows of
        ``item_flags``); ``goal`` -- category id or None;
        ``conflicts`` -- how many user informs disagreed with an earlier belief.

    Args:
        world: The world.
        mode: ``rule`` (reads text with the lexicon), ``learned`` (reads the facts in the text with the
            learned reader) or ``oracle`` (reads true acts).
        lexicon: A shared lexicon (built from ``world`` when omitted).
    """

    def __init__(self, world: World, mode: str = "rule", lexicon: Lexicon | None = None) -> None:
        if mode not in TRACKER_MODES:
            raise ValueError(f"tracker mode must be one of {list(TRACKER_MODES)}, got {mode!r}")
        self.world = world
        self.mode = mode
        lexicon = lexicon or Lexicon(world)
        if mode == "learned":
            from dialog_env.learned_tracker import LearnedNLU

            self.nlu: Any = LearnedNLU(lexicon)
        else:
            self.nlu = UserNLU(lexicon)
        n_slots, n_items = len(world.slots), len(world.items)
        self._slot_index = {s.name: s.index for s in world.slots}
        self._value_index = {(v.slot, v.id): v.index for v in world.values}
        self._item_index = {it.id: it.index for it in world.items}
        self._bounds = [(s.offset, s.offset + len(s.values)) for s in world.slots]
        self._max_entropy = [math.log2(len(s.values)) for s in world.slots]
        self._uniform = np.concatenate([np.full(len(s.values), 1.0 / len(s.values)) for s in world.slots]).astype(
            np.float32
        )
        self.evidence = np.zeros(world.n_values, dtype=np.float64)
        # Evidence patterns repeat (mostly a single inform), so posteriors are memoised.
        self._posterior_cache: dict[tuple[float, ...], tuple[np.ndarray, float, int]] = {}
        self.belief = np.zeros(world.n_values, dtype=np.float32)
        # The belief of informed slots only (zeros elsewhere): what the agent actually knows.
        self.known_belief = np.zeros(world.n_values, dtype=np.float32)
        self.slot_entropy: list[float] = [0.0] * n_slots  # Python floats: rewards stay plain floats
        # Flags live in two blocks (cheap to clear and to copy into observations); the named
        # arrays are views of their rows.
        self.slot_flags = np.zeros((4, n_slots), dtype=bool)
        self.item_flags = np.zeros((2, n_items), dtype=bool)
        self.informed, self.asked, self.declined, self.confirmed = self.slot_flags
        self.recommended, self.rejected = self.item_flags
        self.reset()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the flag views (pickle would copy them apart from their blocks)."""
        views = {"informed", "asked", "declined", "confirmed", "recommended", "rejected"}
        return {k: v for k, v in self.__dict__.items() if k not in views}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.informed, self.asked, self.declined, self.confirmed = self.slot_flags
        self.recommended, self.rejected = self.item_flags

    def reset(self) -> None:
        """Forget everything (start of a dialogue)."""
        self.evidence[:] = 0.0
        self.belief[:] = self._uniform
        self.known_belief[:] = 0.0
        self.slot_entropy[:] = self._max_entropy
        self.slot_flags[:] = False
        self.item_flags[:] = False
        # Python-side mirrors of the arrays: cheap snapshots for rewards, cheap lookups for agents.
        self._known: dict[str, str] = {}
        self._asked: set[str] = set()
        self._declined: set[str] = set()
        self._confirmed: set[str] = set()
        self._rejected: set[str] = set()
        self._entropy = sum(self._max_entropy)
        self.goal: str | None = None
        self.version = getattr(self, "version", 0) + 1  # bumped whenever belief or goal change
        self.conflicts = 0
        self.last_asked: tuple[str, ...] = ()
        self.last_confirm: tuple[str, str] | None = None
        self.last_recommended: str | None = None
        self.last_user_acts: tuple[DialogueAct, ...] = ()

    # -- reading ------------------------------------------------------------------------------
    @property
    def entropy(self) -> float:
        """Total belief entropy (bits) over all slots."""
        return self._entropy

    def best(self, slot: str) -> str | None:
        """The most likely value of ``slot`` if the user informed it, else ``None``."""
        return self._known.get(slot)

    def known(self) -> dict[str, str]:
        """Slot -> believed value for every informed slot."""
        return dict(self._known)

    def view(self) -> TrackerView:
        """An immutable snapshot for reward computation."""
        return TrackerView(
            known=dict(self._known),
            asked=frozenset(self._asked),
            declined=frozenset(self._declined),
            confirmed=frozenset(self._confirmed),
            rejected=frozenset(self._rejected),
            entropy=self._entropy,
            slot_entropy=tuple(self.slot_entropy),
        )

    # -- updates ------------------------------------------------------------------------------
    def update_agent(self, acts: Sequence[DialogueAct]) -> None:
        """Record the agent's turn (what it asked, confirmed, recommended)."""
        asked, self.last_confirm, self.last_recommended = [], None, None
        for a in acts:
            if a.intent == A.ASK:
                self.asked[self.world.slot[a.slot].index] = True
                self._asked.add(a.slot)
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
            text: The user's utterance as the agent heard it (read in ``rule`` and ``learned`` modes).
            true_acts: The user's acts (read in ``oracle`` mode).

        Returns:
            The acts the tracker understood.
        """
        if self.mode == "oracle":
            acts = tuple(true_acts)
        else:
            acts = self.nlu.parse(text, self.last_asked, self.last_confirm, self.last_recommended)
        slot_index, value_index = self._slot_index, self._value_index
        for a in acts:
            t = a.intent
            if t == A.INFORM:
                self._observe(slot_index[a.slot], value_index[a.slot, a.value])
            elif t == A.AFFIRM:
                s = slot_index[a.slot]
                self._observe(s, value_index[a.slot, a.value])
                self.confirmed[s] = True
                self._confirmed.add(a.slot)
            elif t == A.NEGATE:
                self.evidence[value_index[a.slot, a.value]] = 0.0
                self._refresh(slot_index[a.slot])
            elif t == A.DECLINE:
                self.declined[slot_index[a.slot]] = True
                self._declined.add(a.slot)
            elif t == A.REJECT:
                self.rejected[self._item_index[a.value]] = True
                self._rejected.add(a.value)
            elif t == A.REQUEST and self.goal is None:
                self.goal = a.value
                self.version += 1
        self.last_user_acts = acts
        return acts

    def _observe(self, s: int, v: int) -> None:
        if self.informed[s] and self.evidence[v] == 0.0:
            self.conflicts += 1
        self.evidence[v] += 1.0
        self.informed[s] = True
        self._refresh(s)

    def _refresh(self, s: int) -> None:
        lo, hi = self._bounds[s]
        ev = tuple(self.evidence[lo:hi].tolist())
        cached = self._posterior_cache.get(ev)
        if cached is None:
            cached = self._posterior_cache[ev] = _posterior(ev)
        p, h, best = cached
        self.belief[lo:hi] = p
        self.known_belief[lo:hi] = p if best >= 0 else 0.0
        self.version += 1
        self._entropy += h - self.slot_entropy[s]
        self.slot_entropy[s] = h
        slot = self.world.slots[s]
        if best >= 0:
            self._known[slot.name] = slot.values[best].id
        else:
            self.informed[s] = False
            self._known.pop(slot.name, None)


def _posterior(evidence: tuple[float, ...]) -> tuple[np.ndarray, float, int]:
    """Belief, entropy (bits) and best value index (-1 without evidence) of one slot."""
    w = [1.0 + EVIDENCE_WEIGHT * e for e in evidence]
    total = sum(w)
    p = [x / total for x in w]
    h = -sum(x * math.log2(x) for x in p)
    best = max(range(len(p)), key=p.__getitem__) if any(evidence) else -1
    return np.array(p, dtype=np.float32), h, best


def joint_goal_correct(known: dict[str, str], revealed: dict[str, str]) -> bool:
    """Joint-goal accuracy for one turn: the tracked slots and values equal the revealed ones."""
    return known == revealed
