"""Text-level quality of an agent's utterances: diversity, length, BLEU, engagement, perplexity.

The metrics personalised-dialogue work reports beside task success (PersonaChat, PAML):

* ``distinct_1`` / ``distinct_2`` — distinct uni-/bigrams over all n-grams of the agent's
  utterances, over the whole set of dialogues (Li et al., 2016): a policy that says one thing
  everywhere scores near 0;
* ``words`` — mean words per agent utterance;
* ``bleu`` — corpus BLEU-4 (Papineni et al., 2002; add-one smoothing of the higher orders) of the
  agent's utterances against the agent turns of a demonstration set (``dialog-env collect``), all of
  them references for every utterance: how close the wording is to the demonstrators'. Needs
  references;
* ``left_rate`` and ``turns_before_leaving`` — the engagement proxy: the share of dialogues the user
  walked out of, and how many user turns it stayed in those;
* ``perplexity`` — of the agent's utterances under a base LM given the dialogue before them (fluency
  as that LM judges it). Needs a model; the slowest of these;
* ``nli_c`` — PAML's consistency score C (Madotto et al., 2019) with the NLI detector of
  :mod:`dialog_env.nli`: for each agent turn after the user revealed something, every (sentence,
  revealed fact) pair scores +1 (entails), 0 (neutral) or -1 (contradicts); the turn's score is their
  sum, and C is the mean over such turns. PAML scores a model against its own persona; here the
  persona is the user's, as far as the user revealed it before the turn. Needs ``nli=True``.

Utterances are lower-cased and split on non-alphanumeric characters.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

QUALITY_METRICS = (
    "distinct_1",
    "distinct_2",
    "words",
    "bleu",
    "left_rate",
    "turns_before_leaving",
    "perplexity",
    "nli_c",
)
QUALITY_LABELS = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "words": "words / turn",
    "bleu": "BLEU-4 vs demos",
    "left_rate": "user left",
    "turns_before_leaving": "turns before leaving",
    "perplexity": "perplexity",
    "nli_c": "C (PAML, NLI)",
}
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of an utterance."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of a token list."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(utterances: Iterable[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the utterances (0 when there is none)."""
    grams = [g for u in utterances for g in ngrams(words(u), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def agent_utterances(messages: Sequence[dict[str, str]]) -> list[str]:
    """The assistant's turns of a chat."""
    return [m["content"] for m in messages if m.get("role") == "assistant"]


class BleuReferences:
    """A set of reference utterances, prepared for multi-reference BLEU (clip counts, reference lengths).

    Args:
        references: The reference utterances (e.g. every agent turn of a demonstration set).
        max_n: Highest n-gram order.
    """

    def __init__(self, references: Iterable[str], max_n: int = 4) -> None:
        self.max_n = max_n
        self.clip: list[dict[tuple[str, ...], int]] = [{} for _ in range(max_n)]
        lengths = set()
        for ref in references:
            toks = words(ref)
            lengths.add(len(toks))
            for n in range(1, max_n + 1):
                table = self.clip[n - 1]
                for g, c in Counter(ngrams(toks, n)).items():
                    if c > table.get(g, 0):
                        table[g] = c
        if not lengths:
            raise ValueError("references: expected at least one reference utterance")
        self.lengths = sorted(lengths)

    def closest_length(self, length: int) -> int:
        """The reference length closest to ``length`` (the shorter on a tie), for the brevity penalty."""
        return min(self.lengths, key=lambda r: (abs(r - length), r))

    def corpus_bleu(self, hypotheses: Iterable[str]) -> float:
        """Corpus BLEU of the hypotheses against every reference (0 for an empty corpus)."""
        matched = [0] * self.max_n
        total = [0] * self.max_n
        hyp_len = ref_len = 0
        for h in hypotheses:
            toks = words(h)
            hyp_len += len(toks)
            ref_len += self.closest_length(len(toks))
            for n in range(1, self.max_n + 1):
                counts = Counter(ngrams(toks, n))
                total[n - 1] += sum(counts.values())
                matched[n - 1] += sum(min(c, self.clip[n - 1].get(g, 0)) for g, c in counts.items())
        if hyp_len == 0 or matched[0] == 0:
            return 0.0
        # Add-one smoothing of orders above 1 (Lin & Och's smoothing 2), so a short corpus is not 0.
        logp = math.log(matched[0] / total[0]) + sum(
            math.log((matched[n] + 1) / (total[n] + 1)) for n in range(1, self.max_n)
        )
        bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
        return bp * math.exp(logp / self.max_n)


def load_references(folder: str) -> BleuReferences:
    """BLEU references from a demonstration set: the agent turns after each row's prompt.

    Raises:
        ValueError: The folder holds no data set or no agent turn.
    """
    from agents.collect import load_demonstrations

    ds = load_demonstrations(folder)
    refs = []
    for row in ds:
        start = int(row.get("prompt_messages") or 1)
        refs += agent_utterances(row["messages"][start:])
    if not refs:
        raise ValueError(f"references: {folder} has no agent turn")
    return BleuReferences(refs)


def perplexity(chats: Sequence[Sequence[dict[str, str]]], model: str = "smollm2", batch_size: int = 8) -> float:
    """Perplexity of the assistant turns of ``chats`` under a causal LM, each turn given the chat before it.

    The chat is rendered with the model's template; only the assistant turns' tokens (and their
    end-of-turn token) are scored (:func:`agents.sft.tokenize_dialogue`).
    """
    import torch

    from agents.sft import tokenize_dialogue
    from dialog_env.lm import load_lm

    lm, tok = load_lm(model)
    nll, count = 0.0, 0
    rows = []
    for chat in chats:
        if any(m["role"] == "assistant" for m in chat):
            first_user = next((i for i, m in enumerate(chat) if m["role"] != "system"), 0)
            rows.append(tokenize_dialogue(tok, list(chat), first_user))
    rows.sort(key=lambda r: len(r[0]))
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target = torch.zeros((len(batch), width), dtype=torch.bool)
            for r, (x, m) in enumerate(batch):
                ids[r, : len(x)] = torch.tensor(x)
                mask[r, : len(x)] = 1
                target[r, : len(m)] = torch.tensor(m, dtype=torch.bool)
            logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
            scored = target[:, 1:]
            nll -= float(logp[scored].sum())
            count += int(scored.sum())
    return math.exp(nll / count) if count else math.nan


def nli_c(records: Sequence[Any], world: Any = None) -> float:
    """PAML's C of a set of dialogues (see the module docstring); NaN when no turn followed a revealed fact.

    Args:
        records: Evaluation records with ``messages`` and ``revealed_before`` (one list of
            ``"slot=value"`` keys per agent turn, as :class:`dialog_env.driver.EpisodeAccumulator` keeps them).
        world: The world of the facts (default: the shipped one).
    """
    from dialog_env.nli import CONTRADICT, ENTAIL, load_detector, split_sentences
    from dialog_env.world import load_world

    world = world if world is not None else load_world()
    premises, hypotheses, owner = [], [], []
    turn = 0
    for r in records:
        for said, revealed in zip(agent_utterances(r.messages), r.revealed_before, strict=False):
            if not revealed or not said.strip():
                continue
            facts = [f"{world.value(*key.split('=', 1)).fact}." for key in revealed]
            for sentence in split_sentences(said):
                for fact in facts:
                    premises.append(fact)
                    hypotheses.append(sentence)
                    owner.append(turn)
            turn += 1
    if not turn:
        return math.nan
    scores = [0.0] * turn
    if premises:
        labels = load_detector().predict(premises, hypotheses)
        for t, label in zip(owner, labels, strict=True):
            scores[t] += 1.0 if label == ENTAIL else -1.0 if label == CONTRADICT else 0.0
    return sum(scores) / turn


def quality(
    records: Sequence[Any], references: BleuReferences | None = None, lm: str | None = None, nli: bool = False
) -> dict[str, float]:
    """The quality metrics of a set of dialogues (records with ``messages`` and ``outcome``).

    Args:
        records: Evaluation records (:class:`dialog_env.driver.EpisodeRecord`).
        references: BLEU references (``bleu`` is NaN without).
        lm: A model for ``perplexity`` (NaN without).
        nli: Also PAML's C with the NLI detector (``nli_c``; NaN without).
    """
    utterances = [u for r in records for u in agent_utterances(r.messages)]
    left = [r for r in records if r.outcome == "left"]
    return {
        "distinct_1": distinct_n(utterances, 1),
        "distinct_2": distinct_n(utterances, 2),
        "words": sum(len(words(u)) for u in utterances) / max(1, len(utterances)),
        "bleu": references.corpus_bleu(utterances) if references is not None else math.nan,
        "left_rate": len(left) / max(1, len(records)),
        "turns_before_leaving": (
            sum(sum(m["role"] == "user" for m in r.messages) for r in left) / len(left) if left else math.nan
        ),
        "perplexity": perplexity([r.messages for r in records], lm) if lm else math.nan,
        "nli_c": nli_c(records) if nli else math.nan,
    }


def quality_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table, one row per agent."""
    head = "| agent | " + " | ".join(QUALITY_LABELS[m] for m in QUALITY_METRICS) + " |"
    lines = [head, "|---|" + "---|" * len(QUALITY_METRICS)]
    for label, q in rows.items():
        cells = ["–" if math.isnan(q[m]) else f"{q[m]:.3f}" for m in QUALITY_METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
