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
from dialog_env.lm import DEFAULT_MODEL, GenerationConfig, generate_batch, load_lm

SYSTEM_PROMPT = (
    "You are a recommendation assistant talking with a user. Find one item from the catalog that "
    "fits the user. Ask short questions about their preferences, remember what they tell you and "
    "never contradict it. When you are confident, recommend one item by its exact name. "
    "Write one short message per turn."
)

_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def shared_lm(model: str, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load a model once per process and share it between agents."""
    key = (model, dtype, device)
    if key not in _MODELS:
        _MODELS[key] = load_lm(model, dtype=dtype, device=device)
    return _MODELS[key]


def system_prompt(core: PersonaRecCore, summary: bool = True) -> str:
    """The system message for one dialogue, built only from agent-side state.

    The catalog lists the wanted category once the tracker has heard it (else every item);
    ``summary`` adds what the tracker knows, what the user declined and what it rejected.
    """
    world, t = core.world, core.tracker
    items = [it for it in world.items if t.goal is None or it.category == t.goal]
    lines = [SYSTEM_PROMPT, "", "Catalog: " + "; ".join(it.name for it in items) + "."]
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
    ) -> None:
        self.model, self.tokenizer = shared_lm(model, dtype) if isinstance(model, str) else model
        self.config = GenerationConfig(max_new_tokens, do_sample, temperature, top_p)
        self.config.validate()
        self.summary = summary
        self.seed = seed
        self._turns = 0

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Remember the env (its tracker feeds the prompt's summary)."""
        core = env.unwrapped
        if not isinstance(core, PersonaRecCore) or not isinstance(env.action_space, gym.spaces.Text):
            raise TypeError("LMAgent plays the text environment (dialog_env/PersonaRecText-v0)")
        self.core = core
        if seed is not None:
            self.seed = seed

    def conversation(self, core: PersonaRecCore) -> list[dict[str, str]]:
        """The prompt of the next turn: system message, then the dialogue in chat format."""
        return [{"role": "system", "content": system_prompt(core, self.summary)}, *core.messages()]

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        """The next utterance for the env given at :meth:`reset`."""
        return self.act_batch([self.core])[0]

    def act_batch(self, cores: Sequence[PersonaRecCore]) -> list[str]:
        """Next utterances for many dialogues, generated in one batch."""
        texts, _, _ = generate_batch(
            self.model,
            self.tokenizer,
            [self.conversation(c) for c in cores],
            self.config,
            seed=self.seed + self._turns if self.config.do_sample else None,
        )
        self._turns += 1
        return texts
