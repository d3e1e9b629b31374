"""Language-model agents: a causal LM prompted with the task and the transcript.

``LMAgent`` plays ``PersonaRecText-v0``. Its prompt follows a prompt style (:mod:`agents.prompts`):
for a base model the task, the catalog of the wanted category and a worked example; for a trained
policy the style its model folder records (a one-line instruction and the tracker's state note
after every user turn). ``act_batch`` answers many dialogues with one batched ``generate`` call;
:func:`dialog_env.evaluation.evaluate` uses it to run dialogues in lockstep. Use it from the CLI as
``lm:<model>`` (``lm:smollm2`` is the embedded default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from agents.prompts import CATALOG_SYSTEM as SYSTEM_PROMPT
from agents.prompts import example_exchange, get_prompt, policy_prompt, prompt_messages, system_prompt
from dialog_env.lm import (
    DEFAULT_MODEL,
    GenerationConfig,
    IncrementalBatch,
    generate_batch,
    load_lm,
    render_ids,
    user_turn_text,
)
from dialog_env.view import AgentView, agent_view

# Prompt builders live in agents.prompts; re-exported here, where they used to be.
__all__ = ["SYSTEM_PROMPT", "LMAgent", "example_exchange", "prompt_messages", "shared_lm", "system_prompt"]

_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def shared_lm(model: str, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load a model once per process and share it between agents."""
    key = (model, dtype, device)
    if key not in _MODELS:
        _MODELS[key] = load_lm(model, dtype=dtype, device=device)
    return _MODELS[key]


class LMAgent:
    """A causal LM as a dialogue agent for ``PersonaRecText-v0``.

    Args:
        model: ``"smollm2"`` (embedded default), a Hugging Face id or a local folder; or an
            already loaded ``(model, tokenizer)`` pair.
        max_new_tokens: Token cap per turn.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus mass.
        summary: ``catalog`` style: put the tracker's summary of known facts in the system prompt (off
            by default, as in training rollouts, whose system prompt cannot change mid-sequence).
        prompt: Prompt style name (:data:`agents.prompts.PROMPTS`); default: the one the model folder
            records (``dialog_env_policy.json``), else ``catalog``.
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
        prompt: str | None = None,
    ) -> None:
        self.style = get_prompt(prompt if prompt is not None else policy_prompt(model))
        self.model, self.tokenizer = shared_lm(model, dtype) if isinstance(model, str) else model
        self.config = GenerationConfig(max_new_tokens, do_sample, temperature, top_p)
        self.config.validate()
        self.summary = summary
        self.reuse_cache = reuse_cache and not summary
        self.seed = seed
        self._turns = 0
        self._batch: IncrementalBatch | None = None
        self._rows: list[tuple[int, int]] = []  # (env key, episode) of each batch row
        self._episodes: dict[int, int] = {}
        self._closed: dict[tuple[int, int], bool] = {}  # did the last reply end with end-of-sequence?

    def reset(self, env: gym.Env | AgentView, seed: int | None = None) -> None:
        """Take the agent's view of the env (its tracker feeds the prompt's summary)."""
        view = agent_view(env)
        if not view.text_actions:
            raise TypeError("LMAgent plays the text environment (dialog_env/PersonaRecText-v0)")
        self.core = view
        key = view.env_key
        self._episodes[key] = self._episodes.get(key, 0) + 1  # a new dialogue: its old row is stale
        if seed is not None:
            self.seed = seed

    def conversation(self, core: AgentView) -> list[dict[str, str]]:
        """The prompt of the next turn: system message, then the dialogue in chat format."""
        return prompt_messages(core, self.summary, style=self.style)

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """The next utterance for the env given at :meth:`reset`."""
        return self.act_batch([self.core])[0]

    def act_batch(self, cores: Sequence[AgentView | gym.Env]) -> list[str]:
        """Next utterances for many dialogues (their agent views), generated in one batch."""
        cores = [agent_view(c) for c in cores]
        seed = self.seed + self._turns if self.config.do_sample else None
        self._turns += 1
        if not self.reuse_cache:
            texts, _, _ = generate_batch(
                self.model, self.tokenizer, [self.conversation(c) for c in cores], self.config, seed
            )
            return texts
        completions = self._generate_incremental(cores, seed)
        return [self.tokenizer.decode(c, skip_special_tokens=True).strip() for c in completions]

    def _generate_incremental(self, cores: Sequence[AgentView], seed: int | None) -> list[list[int]]:
        """Continue each dialogue's own token sequence; dialogues seen before encode only the user's reply."""
        tok = self.tokenizer
        keys = [(c.env_key, self._episodes.get(c.env_key, 0)) for c in cores]
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
