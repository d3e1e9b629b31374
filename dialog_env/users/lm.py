"""An LM-backed user: the agenda policy decides what the user does, a language model says it.

Each turn the :class:`~dialog_env.users.agenda.AgendaUser` chooses the grounded acts (so the
persona, patience and the judge's rules stay exactly those of the agenda user) and renders them with
its templates. The LM then rewrites that message in the user's own words, conditioned on the
persona's facts, the acts' template wording and the verbosity trait, after a few worked paraphrases.
The user-side NLU verifies every candidate: it must read the same acts from the LM's text as from
the template (the rule NLU of the tracker, with the agent's last turn as context), so an LM that
drops an answer, invents a fact or leaks one the user did not mean to reveal is never heard. Two
guards against a small LM slipping into the assistant's role, which the keyword-based NLU alone can
miss: a candidate may be at most twice as long as the template (in words, at least 12), and may ask
a question only where the template does. Up to ``tries`` candidates are sampled in one batched
``generate`` call; if none verifies, the template text is said.

``user="lm:smollm2"`` (the embedded default) or ``user="lm:<HF id or folder>"`` in any env.
``stats`` counts turns, verified LM turns and template fallbacks.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.lm import PrefixStore
from dialog_env.nlu import Lexicon, UserNLU
from dialog_env.persona import Persona
from dialog_env.users.agenda import AgendaUser, AgendaUserConfig
from dialog_env.users.base import UserTurn
from dialog_env.world import World

if TYPE_CHECKING:
    from dialog_env.judge import Judge

_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}
"""Loaded (model, tokenizer) per (model spec, dtype): envs in one process share them."""

STYLE = {
    "terse": "as briefly as possible",
    "normal": "in one or two short sentences",
    "chatty": "in a friendly, talkative way",
}

INSTRUCTION = (
    "About the speaker: {facts} You paraphrase messages. Rewrite the user's message with the same meaning in "
    "different words, {style}. Keep every fact and name. Do not answer it, do not add anything."
)

EXAMPLES = (
    (
        "I'd like a restaurant recommendation. I'm vegetarian.",
        "Hi! Could you suggest a restaurant? I don't eat meat, I'm vegetarian.",
    ),
    ("I have a dog.", "I've got a dog at home."),
    ("No thanks, I'm allergic to nuts.", "Hmm, no thanks - I have a nut allergy."),
    ("Sounds great, I'll take it!", "Perfect, I'll go with that one!"),
)
"""Worked paraphrases shown before every message (as earlier chat turns). A small LM told only to
"rewrite" a message mostly answers it like an assistant; with these and the quoted ``Paraphrase:``
framing, SmolLM2-135M's rewrites verify about twice as often (a probe on 60 user turns of planner
and rule dialogues: 62% of turns against 34%, 3 candidates each)."""


_LOADING = threading.Lock()
"""Users stepped in threads (see :class:`PhraseBatcher`) load a model once, not once per thread."""


def _shared_lm(model: str, dtype: str) -> tuple[Any, Any]:
    key = (model, dtype)
    with _LOADING:
        if key not in _MODELS:
            from dialog_env.lm import load_lm

            _MODELS[key] = load_lm(model, dtype=dtype)
    return _MODELS[key]


class PhraseBatcher:
    """Gathers the phrasing calls of LM users stepped in one driver round into one ``generate`` call.

    The :class:`~dialog_env.driver.DialogueDriver` steps the envs of a round in threads when their
    users share a batcher: it opens the round with the slots taking part (:meth:`open_round`), and
    each thread steps inside :meth:`taking_part`. A user's :meth:`generate` then waits until every
    slot still taking part has asked (or left without asking), and the last one to ask runs one
    batched call for all, in slot order. Outside a round it generates at once. Which dialogues
    share a call depends on the round, so a dialogue's LM text depends on the dialogues in flight
    with it; the same run (seeds, actions, batch size) gives the same text.

    Every call encodes a prompt shared by several rows once (a user's tries), and the batcher keeps
    each user's opening (instruction, persona facts, worked examples) encoded from one turn to the
    next (:class:`~dialog_env.lm.PrefixStore`), so a turn encodes little more than its new message.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._local = threading.local()
        self._open: set[int] = set()
        self._asked: dict[int, tuple[list[Any], Any, int, list[Any]]] = {}
        self._answers: dict[int, list[str | None] | BaseException] = {}
        self.calls = 0
        self.store = PrefixStore()

    def open_round(self, slots: Iterable[int]) -> None:
        """The slots whose users may ask in this round."""
        with self._cond:
            self._open, self._asked, self._answers = set(slots), {}, {}

    @contextmanager
    def taking_part(self, slot: int) -> Iterator[None]:
        """Mark the calling thread as ``slot``'s for the round; leaving without asking releases the others."""
        self._local.slot = slot
        try:
            yield
        finally:
            self._local.slot = None
            with self._cond:
                if slot not in self._asked:
                    self._open.discard(slot)
                    self._maybe_run()

    def generate(
        self,
        model: Any,
        tokenizer: Any,
        conversations: list[Any],
        config: Any,
        seed: int,
        budgets: Sequence[tuple[int, bool] | None] | None = None,
    ) -> list[str | None]:
        """Texts for ``conversations``: batched with the round's other asks, or at once outside a round.

        ``budgets`` (one ``(max_words, may_ask)`` per conversation, see :class:`~dialog_env.lm.ReplyBudget`)
        stop a candidate as soon as it breaks its budget; such a candidate comes back as ``None``.
        """
        from dialog_env.lm import generate_replies

        rules = list(budgets) if budgets is not None else [None] * len(conversations)
        slot = getattr(self._local, "slot", None)
        if slot is None:
            self.calls += 1
            with self._cond:
                return generate_replies(model, tokenizer, conversations, config, seed, rules, store=self.store)
        with self._cond:
            self._asked[slot] = (conversations, config, seed, rules)
            self._lm = (model, tokenizer)
            self._maybe_run()
            while slot not in self._answers:
                self._cond.wait()
            answer = self._answers.pop(slot)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _maybe_run(self) -> None:
        """Under the lock: once every open slot has asked, run the batch and wake everyone."""
        if not self._asked or set(self._asked) != self._open:
            return
        from dialog_env.lm import generate_replies

        order = sorted(self._asked)
        rows = [c for k in order for c in self._asked[k][0]]
        rules = [b for k in order for b in self._asked[k][3]]
        config, seed = self._asked[order[0]][1], self._asked[order[0]][2]
        model, tokenizer = self._lm
        try:
            texts: list[str | None] | BaseException = generate_replies(
                model, tokenizer, rows, config, seed, rules, store=self.store
            )
        except BaseException as e:  # noqa: BLE001 - handed to every waiting thread, which raises it
            texts = e
        self.calls += 1
        start = 0
        for k in order:
            n = len(self._asked[k][0])
            self._answers[k] = texts if isinstance(texts, BaseException) else texts[start : start + n]
            start += n
        self._open -= set(order)
        self._asked = {}
        self._cond.notify_all()


_BATCHERS: dict[tuple[str, str], PhraseBatcher] = {}
"""One batcher per loaded model: the LM users of one process share it, as they share the model."""


def _act_key(acts: Sequence[DialogueAct]) -> frozenset[tuple[str, str | None, str | None]]:
    return frozenset((a.intent, a.slot, a.value) for a in acts)


class LMUser:
    """The agenda user's decisions in an LM's words (see the module docstring).

    Args:
        world: The world.
        model: ``"smollm2"``, a Hugging Face id or a local model folder.
        tries: LM candidates sampled per turn (one batched call) before falling back to the template.
        temperature: Sampling temperature of the candidates.
        max_new_tokens: Token cap of a candidate.
        dtype: Model dtype (``float32`` unless bf16 measures faster on the machine).
        config: The agenda policy's knobs.
    """

    def __init__(
        self,
        world: World,
        model: str = "smollm2",
        tries: int = 3,
        temperature: float = 0.7,
        max_new_tokens: int = 48,
        dtype: str = "float32",
        config: AgendaUserConfig | None = None,
    ) -> None:
        if tries < 1 or max_new_tokens < 1 or not temperature > 0:
            raise ValueError(
                f"LMUser: tries and max_new_tokens must be positive and temperature > 0, got {tries}, "
                f"{max_new_tokens}, {temperature}"
            )
        self.world = world
        self.agenda = AgendaUser(world, config)
        self.nlu = UserNLU(Lexicon(world))
        self.model_name, self.dtype = model, dtype
        self.tries, self.temperature, self.max_new_tokens = tries, temperature, max_new_tokens
        self.stats = {"turns": 0, "verified": 0, "fallback": 0, "candidates": 0}
        self._lm: tuple[Any, Any] | None = None
        self.batcher = _BATCHERS.setdefault((model, dtype), PhraseBatcher())

    @property
    def lm(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loaded on first use and shared within the process."""
        if self._lm is None:
            self._lm = _shared_lm(self.model_name, self.dtype)
        return self._lm

    # -- the UserSimulator protocol -------------------------------------------------------------
    def reset(self, persona: Persona, goal: str, rng: random.Random, judge: Judge | None = None) -> UserTurn:
        """Start a dialogue: the agenda user's opening, in the LM's words."""
        self.persona = persona
        # Sampling seeds come from a stream of their own, derived from (not drawn from) the user's, so the
        # agenda decisions are exactly the agenda user's on the same seed: the two users are paired.
        self.rng = random.Random(hash(rng.getstate()))
        return self._phrase(self.agenda.reset(persona, goal, rng, judge), ())

    def respond(self, agent_acts: Sequence[DialogueAct], agent_text: str = "") -> UserTurn:
        """Answer one agent turn: the agenda user's acts, in the LM's words."""
        return self._phrase(self.agenda.respond(agent_acts, agent_text), agent_acts)

    def render(self, acts: Sequence[DialogueAct], rng: random.Random) -> str:
        """Template rendering (the noisy channel re-phrases misheard acts with the templates)."""
        return self.agenda.render(acts, rng)

    # -- phrasing -------------------------------------------------------------------------------
    def conversation(self, template: str) -> list[dict[str, str]]:
        """The LM's chat for one message: instruction with the persona's facts, worked examples, the template text."""
        facts = " ".join(f"{self.world.value(s, v).fact}." for s, v in self.persona.values.items())
        style = STYLE[self.persona.traits["verbosity"]]
        chat = [{"role": "system", "content": INSTRUCTION.format(facts=facts, style=style)}]
        for said, rewritten in EXAMPLES:
            chat += [{"role": "user", "content": f'Paraphrase: "{said}"'}, {"role": "assistant", "content": rewritten}]
        return [*chat, {"role": "user", "content": f'Paraphrase: "{template}"'}]

    def reading(self, text: str, agent_acts: Sequence[DialogueAct]) -> tuple[DialogueAct, ...]:
        """How the rule NLU reads ``text`` as the answer to ``agent_acts`` (the tracker's context)."""
        asked = tuple(a.slot for a in agent_acts if a.intent == A.ASK)
        confirm = next(((a.slot, a.value) for a in agent_acts if a.intent == A.CONFIRM), None)
        rec = next((a.value for a in agent_acts if a.intent == A.RECOMMEND), None)
        return self.nlu.parse(text, asked, confirm, rec)  # type: ignore[arg-type]

    def candidates(self, template: str) -> list[str]:
        """``tries`` LM rewrites of ``template``, sampled in one batched call (seeded by the user's rng).

        The prompt is encoded once for all tries, and a candidate stops as soon as it is too long or asks
        a question the template does not (:meth:`budget`); such a candidate comes back as ``""``, which
        never verifies, as its finished text would not have.
        """
        from dialog_env.lm import GenerationConfig

        model, tokenizer = self.lm
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.temperature)
        seed = self.rng.randrange(2**31)
        conversations = [self.conversation(template)] * self.tries
        budgets = [self.budget(template)] * self.tries
        texts = self.batcher.generate(model, tokenizer, conversations, config, seed, budgets)
        return [" ".join(t.split()) if t is not None else "" for t in texts]

    @staticmethod
    def budget(template: str) -> tuple[int, bool]:
        """``(max_words, may_ask)`` of a rewrite of ``template``: the length and question guards of :meth:`verifies`."""
        return max(12, 2 * len(template.split())), "?" in template

    def verifies(
        self,
        text: str,
        template: str,
        agent_acts: Sequence[DialogueAct],
        wanted: frozenset[tuple[str, str | None, str | None]] | None = None,
    ) -> bool:
        """Whether ``text`` may stand for ``template`` (see the module docstring).

        Args:
            text: An LM candidate.
            template: The template message it rewrites.
            agent_acts: The agent turn being answered (the NLU's context).
            wanted: The template's reading, when the caller has it already.
        """
        max_words, may_ask = self.budget(template)
        if not text or len(text.split()) > max_words or ("?" in text and not may_ask):
            return False
        if wanted is None:
            wanted = _act_key(self.reading(template, agent_acts))
        return _act_key(self.reading(text, agent_acts)) == wanted

    def _phrase(self, turn: UserTurn, agent_acts: Sequence[DialogueAct]) -> UserTurn:
        self.stats["turns"] += 1
        wanted = _act_key(self.reading(turn.text, agent_acts))
        for text in self.candidates(turn.text):
            self.stats["candidates"] += 1
            if self.verifies(text, turn.text, agent_acts, wanted):
                self.stats["verified"] += 1
                return UserTurn(turn.acts, text, turn.outcome)
        self.stats["fallback"] += 1
        return turn
