"""Rule-based natural-language understanding for both sides, driven by the world's lexicon.

One compiled regex holds every alias of every value, item and category, longest first, so the
longest phrase wins at each position ("allergic to cats" beats "cats"). Matching is
case-insensitive and word-bounded. The agent-side parser turns free text into agent acts (text
mode); the user-side parser is what the dialogue-state tracker reads.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.world import World

_QUESTION_START = re.compile(
    r"^(?:what|which|who|where|when|how|why|do|does|did|are|is|was|were|have|has|had|can|could|"
    r"would|will|should|may|might|any|anything|got|tell me|let me know|mind telling|care to share|"
    r"i'd love to know|i wonder|i was wondering|curious)\b"
)
_BYE = re.compile(r"\b(?:bye|goodbye|good-bye|farewell|see you|take care|so long)\b")
_DECLINE = re.compile(r"\b(?:rather not|prefer not|skip that|not comfortable|pass on that|none of your)\b")
_NEGATIVE = re.compile(r"\b(?:no|not|nope|won't|isn't|doesn't|don't|never|sorry)\b|n't\b")
_POSITIVE = re.compile(r"\b(?:perfect|great|love it|sounds good|i'll go with|it is|thank you|thanks)\b")
_AFFIRM = re.compile(r"^(?:yes|yeah|yep|exactly|correct|right|that's right|indeed)\b")
_NEGATE = re.compile(r"^(?:no|nope|not quite|actually|wrong)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "\u2013": "-"})


def normalize(text: str) -> str:
    """Lower-case ASCII text for matching: NFKD with accents dropped, curly quotes straightened."""
    text = text.translate(_QUOTES)
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return text.lower()


@dataclass(frozen=True, slots=True)
class Mention:
    """A lexicon hit: ``kind`` is ``value``, ``item`` or ``category``."""

    kind: str
    key: str
    slot: str | None
    start: int
    end: int


class Lexicon:
    """Alias and keyword matcher built from a world."""

    def __init__(self, world: World) -> None:
        self.world = world
        table: dict[str, tuple[str, str, str | None]] = {}
        for s in world.slots:
            for v in s.values:
                for a in v.aliases:
                    table[a] = ("value", v.id, s.name)
        for it in world.items:
            for a in it.aliases:
                table[a] = ("item", it.id, None)
        for c in world.categories:
            for a in c.aliases:
                table[a] = ("category", c.id, None)
        self._table = table
        self._alias_re = self._alternation(table)
        kw = {k: s.name for s in world.slots for k in s.keywords}
        self._kw_table = kw
        self._kw_re = self._alternation(kw)

    @staticmethod
    def _alternation(words: dict) -> re.Pattern[str]:
        alts = sorted(words, key=len, reverse=True)
        return re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(a) for a in alts) + r")(?![\w'])")

    def mentions(self, text: str) -> list[Mention]:
        """All lexicon hits in normalised ``text``, left to right, longest first at each position."""
        out = []
        for m in self._alias_re.finditer(text):
            kind, key, slot = self._table[m.group(0)]
            out.append(Mention(kind, key, slot, m.start(), m.end()))
        return out

    def keyword_slots(self, text: str) -> list[str]:
        """Slots whose question keywords occur in normalised ``text`` (in order, no repeats)."""
        seen: list[str] = []
        for m in self._kw_re.finditer(text):
            s = self._kw_table[m.group(0)]
            if s not in seen:
                seen.append(s)
        return seen


def _dedupe(acts: list[DialogueAct]) -> tuple[DialogueAct, ...]:
    return tuple(dict.fromkeys(acts))


class AgentNLU:
    """Parses an agent utterance (text mode) into agent acts.

    Per sentence: an item mention is a recommendation; a persona value mentioned in a question is
    a ``confirm``, in a statement an ``inform`` (a reference to a persona fact); slot keywords in a
    question with no value of that slot are an ``ask``. Farewells are ``bye``; anything else is
    ``chitchat`` (``none`` for an empty utterance).
    """

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon

    def parse(self, text: str) -> tuple[DialogueAct, ...]:
        """Parse ``text`` into a tuple of :class:`DialogueAct`."""
        norm = normalize(text).strip()
        if not norm:
            return (DialogueAct(A.NONE),)
        acts: list[DialogueAct] = []
        for sent in _SENTENCE.split(norm):
            sent = sent.strip()
            if not sent:
                continue
            question = sent.endswith("?") or _QUESTION_START.match(sent) is not None
            valued_slots = set()
            for m in self.lexicon.mentions(sent):
                if m.kind == "item":
                    acts.append(DialogueAct(A.RECOMMEND, None, m.key))
                elif m.kind == "value":
                    valued_slots.add(m.slot)
                    acts.append(DialogueAct(A.CONFIRM if question else A.INFORM, m.slot, m.key))
            if question:
                for slot in self.lexicon.keyword_slots(sent):
                    if slot not in valued_slots:
                        acts.append(DialogueAct(A.ASK, slot))
        if _BYE.search(norm):
            acts.append(DialogueAct(A.BYE))
        return _dedupe(acts) if acts else (DialogueAct(A.CHITCHAT),)


class UserNLU:
    """Parses a user utterance into user acts; the rule tracker's input.

    Context from the agent's last turn (the slots it asked, the value it asked to confirm, the item
    it recommended) resolves short answers such as "I'd rather not say." or "Exactly.".
    """

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon

    def parse(
        self,
        text: str,
        asked: tuple[str, ...] = (),
        confirming: tuple[str, str] | None = None,
        recommended: str | None = None,
    ) -> tuple[DialogueAct, ...]:
        """Parse a user turn.

        Args:
            text: The user's utterance.
            asked: Slots the agent asked about in its last turn.
            confirming: ``(slot, value)`` the agent asked to confirm in its last turn.
            recommended: Item the agent recommended in its last turn.
        """
        norm = normalize(text).strip()
        acts: list[DialogueAct] = []
        for i, sent in enumerate(_SENTENCE.split(norm)):
            sent = sent.strip()
            if not sent:
                continue
            mentions = self.lexicon.mentions(sent)
            items = [m.key for m in mentions if m.kind == "item"]
            if i == 0 and confirming is not None:
                if _AFFIRM.match(sent):
                    acts.append(DialogueAct(A.AFFIRM, *confirming))
                elif _NEGATE.match(sent):
                    acts.append(DialogueAct(A.NEGATE, *confirming))
            if _DECLINE.search(sent):
                slots = self.lexicon.keyword_slots(sent) or list(asked[:1])
                acts.extend(DialogueAct(A.DECLINE, s) for s in slots)
                continue
            for item in items:
                if _NEGATIVE.search(sent):
                    acts.append(DialogueAct(A.REJECT, None, item))
                elif _POSITIVE.search(sent):
                    acts.append(DialogueAct(A.ACCEPT, None, item))
            if not items and recommended is not None and i == 0 and _NEGATIVE.match(sent):
                acts.append(DialogueAct(A.REJECT, None, recommended))
            for m in mentions:
                if m.kind == "value":
                    acts.append(DialogueAct(A.INFORM, m.slot, m.key))
                elif m.kind == "category":
                    acts.append(DialogueAct(A.REQUEST, None, m.key))
        if _BYE.search(norm):
            acts.append(DialogueAct(A.BYE))
        return _dedupe(acts) if acts else (DialogueAct(A.CHITCHAT),)
