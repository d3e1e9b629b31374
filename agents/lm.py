"""Language-model agents: a causal LM prompted with the task, the catalog and the transcript.

``LMAgent`` plays ``PersonaRecText-v0``. Its prompt is a system instruction (the task, the
catalog of the wanted category once the user has said it, and optionally the tracker's summary of
what is known) followed by the dialogue in chat format. ``act_batch`` answers many dialogues with
one batched ``generate`` call; :func:`dialog_env.evaluation.evaluate` uses it to run dialogues in
lockstep. Use it from the CLI as ``lm:<model>`` (``lm:smollm2`` is the embedded default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from dialog_env.envs.core import PersonaRecCore
from dialog_env.lm import (
    DEFAULT_MODEL,
    GenerationConfig,
    IncrementalBatch,
    generate_batch,
    load_lm,
    render_ids,
    user_turn_text,
)

SYSTEM_PROMPT = (
    "You are a shopping assistant. Ask the user short questions, then recommend one catalog item by its exact name."
)

_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def shared_lm(model: str, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load a model once per process and share it between agents."""
    key = (model, dtype, device)
    if key not in _MODELS:
        _MODELS[key] = load_lm(model, dtype=dtype, device=device)
    return _MODELS[key]


def _catalog(core: PersonaRecCore) -> list[Any]:
    """The items of the wanted category once the tracker has heard it, else every item."""
    goal = core.tracker.goal
    return [it for it in core.world.items if goal is None or it.category == goal]


def system_prompt(core: PersonaRecCore, summary: bool = True) -> str:
    """The system message for one dialogue, built only from agent-side state.

    The catalog lists the wanted category once the tracker has heard it (else every item);
    ``summary`` adds what the tracker knows, what the user declined and what it rejected.
    """
    world, t = core.world, core.tracker
    lines = [SYSTEM_PROMPT, "", "Catalog: " + "; ".join(it.name for it in _catalog(core)) + "."]
    if summary:
        known = t.known()
        facts = [world.value(s, v).you for s, v in known.items()]
        if facts:
            lines.append("What you know: " + "; ".join(facts) + ".")
        declined = [world.slot[s.name].noun for s in world.slots if t.declined[s.index]]
        if declined:
            lines.append("The user would rather not talk about: " + ", ".join(declined) + ".")
        rejected = [it.name for it in world.items if t.rejected[it.index]]
        if rejected:
            lines.append("Already rejected: " + ", ".join(rejected) + ".")
    return "\n".join(lines)


def example_exchange(core: PersonaRecCore) -> list[dict[str, str]]:
    """A short worked exchange shown before the dialogue: ask, ask, then recommend by exact name.

    Small instruct models follow a demonstrated pattern far better than a system instruction
    (SmolLM2-135M mostly ignores the instruction alone and rarely names an item). The exchange
    uses the world's own questions and an item of the catalog in the system message, and reveals
    nothing about this dialogue's persona.
    """
    world = core.world
    items = _catalog(core)
    return [
        {"role": "user", "content": "Hi, I need some help."},
        {"role": "assistant", "content": world.slots[2 % len(world.slots)].questions[0]},
        {"role": "user", "content": "Yes, I do."},
        {"role": "assistant", "content": world.slots[3 % len(world.slots)].questions[0]},
        {"role": "user", "content": "I'd rather not say."},
        {"role": "assistant", "content": f"I recommend the {items[len(items) // 3].name}."},
        {"role": "user", "content": "Thanks, bye!"},
    ]


def prompt_messages(core: PersonaRecCore, summary: bool = False, example: bool = True) -> list[dict[str, str]]:
    """The chat an LM policy continues: the system message, the worked example, the dialogue so far."""
    shown = example_exchange(core) if example else []
    return [{"role": "system", "content": system_prompt(core, summary)}, *shown, *core.messages()]


class LMAgent:
    """A causal LM as a dialogue agent for ``PersonaRecText-v0``.

    Args:
        model: ``"smollm2"`` (embedded default), a Hugging Face id or a local folder; or an
            already loaded ``(model, tokenizer)`` pair.
        max_new_tokens: Token cap per turn.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus mass.
        summary: Put the tracker's summary of known facts in the prompt (off by default, as in
            training rollouts, whose system prompt cannot change mid-sequence).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        seed: Seed of sampling (each turn uses ``seed`` plus the turn index).
        reuse_cache: Keep each dialogue's token sequence and KV cache between turns
            (:class:`dialog_env.lm.IncrementalBatch`): a turn encodes only the user's new reply, and the
            tokens the model continues are exactly those of a training rollout (its own sampled ids,
            never re-tokenised text). Needs ``summary=False`` (a summary changes the prompt every
            turn); False re-renders the whole chat every turn.
    """

    name = "lm"
    mode = "text"

    def __init__(
        self,
        model: str | tuple[Any, Any] = DEFAULT_MODEL,
        max_new_tokens: int = 48,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        summary: bool = False,
        dtype: str = "float32",
        seed: int = 0,
        reuse_cache: bool = True,
    ) -> None:
        self.model, self.tokenizer = shared_lm(model, dtype) if isinstance(model, str) else model
        self.config = GenerationConfig(max_new_tokens, do_sample, temperature, top_p)
        self.config.validate()
        self.summary = summary
        self.reuse_cache = reuse_cache and not summary
        self.seed = seed
        self._turns = 0
        self._batch: IncrementalBatch | None = None
        self._rows: list[tuple[int, int]] = []  # (id(core), episode) of each batch row
        self._episodes: dict[int, int] = {}
        self._closed: dict[tuple[int, int], bool] = {}  # did the last reply end with end-of-sequence?

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Remember the env (its tracker feeds the prompt's summary)."""
        core = env.unwrapped
        if not isinstance(core, PersonaRecCore) or not isinstance(env.action_space, gym.spaces.Text):
            raise TypeError("LMAgent plays the text environment (dialog_env/PersonaRecText-v0)")
        self.core = core
        self._episodes[id(core)] = self._episodes.get(id(core), 0) + 1  # a new dialogue: its old row is stale
        if seed is not None:
            self.seed = seed

    def conversation(self, core: PersonaRecCore) -> list[dict[str, str]]:
        """The prompt of the next turn: system message, then the dialogue in chat format."""
        return prompt_messages(core, self.summary)

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """The next utterance for the env given at :meth:`reset`."""
        return self.act_batch([self.core])[0]

    def act_batch(self, cores: Sequence[PersonaRecCore]) -> list[str]:
        """Next utterances for many dialogues, generated in one batch."""
        seed = self.seed + self._turns if self.config.do_sample else None
        self._turns += 1
        if not self.reuse_cache:
            texts, _, _ = generate_batch(
                self.model, self.tokenizer, [self.conversation(c) for c in cores], self.config, seed
            )
            return texts
        completions = self._generate_incremental(cores, seed)
        return [self.tokenizer.decode(c, skip_special_tokens=True).strip() for c in completions]

    def _generate_incremental(self, cores: Sequence[PersonaRecCore], seed: int | None) -> list[list[int]]:
        """Continue each dialogue's own token sequence; dialogues seen before encode only the user's reply."""
        tok = self.tokenizer
        keys = [(id(c), self._episodes.get(id(c), 0)) for c in cores]
        index = {k: r for r, k in enumerate(self._rows)} if self._batch is not None else {}
        old = [(k, c) for k, c in zip(keys, cores, strict=True) if k in index]
        new = [(k, c) for k, c in zip(keys, cores, strict=True) if k not in index]
        if self._batch is not None and old:
            self._batch.keep([index[k] for k, _ in old])
            appended = []
            for k, core in old:
                history = self.conversation(core)
                user = user_turn_text(tok, history[:-1], history[-1]["content"])
                closing = [] if self._closed[k] else [tok.eos_token_id]
                appended.append(closing + tok(user, add_special_tokens=False)["input_ids"])
            self._batch.append(appended)
        elif not old:
            self._batch = None
        if new:
            prompts = [render_ids(tok, self.conversation(c)) for _, c in new]
            if self._batch is None:
                self._batch = IncrementalBatch(self.model, tok, prompts)
            else:
                self._batch.extend(prompts)
        self._rows = [k for k, _ in old] + [k for k, _ in new]
        out = dict(zip(self._rows, self._batch.generate(self.config, seed), strict=True))
        live = set(self._rows)
        self._closed = {k: bool(out[k]) and out[k][-1] == tok.eos_token_id for k in live}
        return [out[k] for k in keys]
