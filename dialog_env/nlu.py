"""Rule-based natural-language understanding for both sides, driven by the world's lexicon.

One compiled regex holds every alias of every value, item and category, longest first, so the
longest phrase wins at each position ("allergic to cats" beats "cats"). Matching is
case-insensitive and word-bounded. The agent-side parser turns free text into agent acts (text
mode); the user-side parser is what the dialogue-state tracker reads.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

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
# "Do you remember what I told you about my diet?": the user asks the agent to restate a fact.
_CHALLENGE = re.compile(
    r"\b(?:remember what i (?:told you|said)|what did i (?:say|tell you)|what do you know about my|"
    r"what i (?:told you|said) about my)\b"
)
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


_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def tokens(text: str) -> list[str]:
    """Word tokens of normalised text (apostrophes and hyphens stay inside words)."""
    return _TOKEN.findall(text)


class _PhraseTable:
    """Longest-match-first phrase lookup over word tokens.

    Faster than one regex alternation of hundreds of phrases: only tokens that start some phrase
    are tried, and each candidate length is one dict lookup.
    """

    def __init__(self, phrases: dict[str, object]) -> None:
        self.table: dict[tuple[str, ...], object] = {}
        self.max_len: dict[str, int] = {}
        for phrase, owner in phrases.items():
            key = tuple(tokens(phrase))
            self.table[key] = owner
            self.max_len[key[0]] = max(self.max_len.get(key[0], 0), len(key))

    def find(self, toks: list[str]) -> list[tuple[object, int, int]]:
        """``(owner, first_token, end_token)`` hits, left to right, longest first."""
        out, i, n = [], 0, len(toks)
        table, max_len = self.table, self.max_len
        while i < n:
            longest = max_len.get(toks[i], 0)
            for length in range(min(longest, n - i), 0, -1):
                owner = table.get(tuple(toks[i : i + length]))
                if owner is not None:
                    out.append((owner, i, i + length))
                    i += length
                    break
            else:
                i += 1
        return out


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
        self._aliases = _PhraseTable(table)  # type: ignore[arg-type]
        self._keywords = _PhraseTable({k: s.name for s in world.slots for k in s.keywords})

    def mentions(self, text: str) -> list[Mention]:
        """All lexicon hits in normalised ``text``, left to right, longest first at each position.

        ``start``/``end`` are token positions.
        """
        return [Mention(k, key, slot, a, b) for (k, key, slot), a, b in self._aliases.find(tokens(text))]  # type: ignore[misc]

    def keyword_slots(self, text: str) -> list[str]:
        """Slots whose question keywords occur in normalised ``text`` (in order, no repeats).

        Words inside an alias do not count: "staying home" (a travel value) or "home brewing kit"
        (an item) does not make a question be about ``home``.
        """
        toks = tokens(text)
        covered = {k for _, a, b in self._aliases.find(toks) for k in range(a, b)}
        hits = self._keywords.find(toks)
        return list(dict.fromkeys(s for s, a, b in hits if covered.isdisjoint(range(a, b))))  # type: ignore[misc]


def _dedupe(acts: list[DialogueAct]) -> tuple[DialogueAct, ...]:
    return tuple(dict.fromkeys(acts))


class _MemoisedParser:
    """A parser whose results are memoised (``_memoise`` builds the caches); pickled without them."""

    def __init__(self, lexicon: Lexicon, cache_size: int = 1 << 16) -> None:
        self.lexicon, self.cache_size = lexicon, cache_size
        self._memoise()

    def _memoise(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the memos (an env snapshot in a checkpoint); they are rebuilt empty on load."""
        return {"lexicon": self.lexicon, "cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._memoise()


class AgentNLU(_MemoisedParser):
    """Parses an agent utterance (text mode) into agent acts.

    Per sentence: an item mention is a recommendation; a persona value mentioned in a question is
    a ``confirm``, in a statement an ``inform`` (a reference to a persona fact); slot keywords in a
    question with no value of that slot are an ``ask``. Farewells are ``bye``; anything else is
    ``chitchat`` (``none`` for an empty utterance). Parsing is pure, so results are memoised.
    """

    def _memoise(self) -> None:
        self.parse = functools.lru_cache(maxsize=self.cache_size)(self._parse)

    def _parse(self, text: str) -> tuple[DialogueAct, ...]:
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


@dataclass(frozen=True, slots=True)
class _Sentence:
    """Context-free reading of one user sentence (memoised per utterance)."""

    mentions: tuple[Mention, ...]
    decline_slots: tuple[str, ...] | None  # None: not a refusal; () refusal naming no slot
    challenge_slots: tuple[str, ...]  # slots the user asks the agent to restate
    negative: bool
    positive: bool
    affirm_start: bool
    negate_start: bool
    negative_start: bool


class UserNLU(_MemoisedParser):
    """Parses a user utterance into user acts; the rule tracker's input.

    Context from the agent's last turn (the slots it asked, the value it asked to confirm, the item
    it recommended) resolves short answers such as "I'd rather not say." or "Exactly.". The
    context-free part of the reading is memoised, since simulated users repeat their phrasings.
    """

    def _memoise(self) -> None:
        # Two memo levels: whole turns with their context (simulated users repeat themselves, and
        # the context mostly matches the text), then sentences, which recur even more.
        self.parse = functools.lru_cache(maxsize=self.cache_size)(self._parse)
        self._sentence = functools.lru_cache(maxsize=self.cache_size)(self._analyze_sentence)

    def _analyze_sentence(self, sent: str) -> _Sentence:
        declined = tuple(self.lexicon.keyword_slots(sent)) if _DECLINE.search(sent) else None
        challenged = tuple(self.lexicon.keyword_slots(sent)) if _CHALLENGE.search(sent) else ()
        return _Sentence(
            mentions=tuple(self.lexicon.mentions(sent)),
            decline_slots=declined,
            challenge_slots=challenged,
            negative=_NEGATIVE.search(sent) is not None,
            positive=_POSITIVE.search(sent) is not None,
            affirm_start=_AFFIRM.match(sent) is not None,
            negate_start=_NEGATE.match(sent) is not None,
            negative_start=_NEGATIVE.match(sent) is not None,
        )

    def _analyze(self, text: str) -> tuple[list[_Sentence], bool]:
        norm = normalize(text).strip()
        sentences = [self._sentence(s) for s in (x.strip() for x in _SENTENCE.split(norm)) if s]
        return sentences, _BYE.search(norm) is not None

    def _parse(
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
        sentences, bye = self._analyze(text)
        acts: list[DialogueAct] = []
        judged = False  # the turn already accepted or rejected an item
        for i, sent in enumerate(sentences):
            if i == 0 and confirming is not None:
                if sent.affirm_start:
                    acts.append(DialogueAct(A.AFFIRM, *confirming))
                elif sent.negate_start:
                    acts.append(DialogueAct(A.NEGATE, *confirming))
            if sent.decline_slots is not None:
                # A refusal naming no slot answers the first question this turn has not answered yet
                # (users answer several questions in the order they were asked).
                answered = {a.slot for a in acts if a.intent in (A.INFORM, A.DECLINE)}
                unanswered = [s for s in asked if s not in answered][:1] or list(asked[:1])
                acts.extend(DialogueAct(A.DECLINE, s) for s in (sent.decline_slots or unanswered))
                continue
            if sent.challenge_slots:
                acts.extend(DialogueAct(A.CHALLENGE, s) for s in sent.challenge_slots)
                continue
            has_item = False
            for m in sent.mentions:
                if m.kind == "item":
                    has_item = True
                    if sent.negative:
                        acts.append(DialogueAct(A.REJECT, None, m.key))
                    elif sent.positive:
                        acts.append(DialogueAct(A.ACCEPT, None, m.key))
            # A bare "No, ..." answers the recommendation, also after echoing it ("Kayaking? No.").
            if not has_item and recommended is not None and sent.negative_start and not judged:
                acts.append(DialogueAct(A.REJECT, None, recommended))
            judged = judged or any(a.intent in (A.REJECT, A.ACCEPT) for a in acts)
            for m in sent.mentions:
                if m.kind == "value":
                    acts.append(DialogueAct(A.INFORM, m.slot, m.key))
                elif m.kind == "category":
                    acts.append(DialogueAct(A.REQUEST, None, m.key))
        if bye:
            acts.append(DialogueAct(A.BYE))
        return _dedupe(acts) if acts else (DialogueAct(A.CHITCHAT),)
