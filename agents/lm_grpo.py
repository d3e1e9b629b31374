"""Multi-turn GRPO on ``PersonaRecText-v0`` with TRL: persona tasks, a ``rollout_func``, rewards.

TRL 1.x's online trainer is ``GRPOTrainer``: the PPO clipped surrogate with group-relative
advantages. Here every rollout is a whole dialogue. A data set row is one persona task (an env
seed); the trainer repeats each row ``num_generations`` times, so the group of a row is that
many sampled dialogues with the same hidden persona and goal.

One rollout is one token sequence: ``prompt_ids`` (system prompt + the user's opening + the
assistant header) and ``completion_ids``, the agent's turns interleaved with the user's replies
and the chat-template tokens around them. ``env_mask`` is 1 on the agent's tokens and 0 on the
rest, so only the agent's tokens are trained. Generation continues from the exact ids of the
sequence (never from re-tokenised text), so what is trained is what was sampled.

The env's return and each reward term's episode sum are passed to the reward functions as extra
fields (``env_return``, ``reward_terms``, ``turn_contexts``): :func:`env_return` is the default
reward, and any dialog_env reward works through :func:`rewards.to_trl` on ``turn_contexts``.

Turn-level credit (:class:`TurnCreditGRPOTrainer`): the rollout also returns each agent turn's
immediate reward (the step reward without ``task_failure``, which scores the whole dialogue; see
:data:`OUTCOME_TERMS`) and, per completion token, the agent turn it belongs to (``token_turns``; -1 on
user and template tokens). The trainer adds to every agent token's dialogue advantage the
group-normalised immediate reward of its own turn, so a question that repeats a known fact or a
recommendation the user turns down is blamed on that turn, not on the whole dialogue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym

import dialog_env  # noqa: F401 - registers the environments
from agents.prompts import DEFAULT_PROMPT, PromptStyle, get_prompt, prompt_messages, user_turn_content
from dialog_env.envs.core import PersonaRecCore
from dialog_env.lm import GenerationConfig, IncrementalBatch, generate_from_ids, render_ids, user_turn_text

TEXT_ENV_ID = "dialog_env/PersonaRecText-v0"
SEED_KEY = "dialog_env_seed"
OUTCOME_TERMS = ("task_failure",)
"""Terms that score the whole dialogue, not the turn they fall on: left out of a turn's immediate reward.

A failure (the user left, the turn limit) is the dialogue's doing; a success stays with the turn
whose recommendation the user accepted. Leaving the success out too makes every recommendation look
no better than a rejected one at the turn level, and GRPO with turn credit then learns to stop
recommending (measured: success 0.73 -> 0.12 in an hour)."""


def task_prompt(core: PersonaRecCore, seed: int, prompt: str = DEFAULT_PROMPT) -> list[dict[str, Any]]:
    """The chat prompt of a persona task right after ``reset(seed=seed)``, in prompt style ``prompt``.

    The first message carries the seed under :data:`SEED_KEY` (chat templates ignore unknown
    keys) so the rollout can rebuild the same dialogue: TRL hands ``rollout_func`` only prompts.
    """
    first, *rest = prompt_messages(core, summary=False, style=prompt)
    return [{**first, SEED_KEY: seed}, *rest]


def build_task_dataset(
    n: int,
    split: str = "train",
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    prompt: str = DEFAULT_PROMPT,
) -> Any:
    """A ``datasets.Dataset`` of ``n`` persona tasks (env seeds ``seed .. seed+n-1``).

    Columns: ``prompt`` (conversational, see :func:`task_prompt`) and ``dialog_seed``.
    """
    from datasets import Dataset

    env = gym.make(TEXT_ENV_ID, split=split, **dict(env_kwargs or {}))
    rows = []
    for s in range(seed, seed + n):
        env.reset(seed=s)
        rows.append({"prompt": task_prompt(env.unwrapped, s, prompt), "dialog_seed": s})
    env.close()
    return Dataset.from_list(rows)


def _seed_of(prompt: Sequence[Mapping[str, Any]]) -> int:
    seed = prompt[0].get(SEED_KEY) if prompt else None
    if seed is None:
        raise ValueError(f"rollout prompts must come from build_task_dataset (first message needs {SEED_KEY!r})")
    return int(seed)


class DialogueRollout:
    """TRL ``rollout_func``: plays one whole dialogue per prompt, all dialogues batched per turn.

    Args:
        split: Persona split of the tasks.
        env_kwargs: Extra env kwargs (``noise``, ``reward_weights``, ...).
        max_turns: Agent turns per dialogue at most: the env's turn limit, so the last turn of a
            dialogue that runs out of turns is charged as a failure.
        max_new_tokens: Token cap per agent turn.
        prompt: Prompt style of the policy (:mod:`agents.prompts`).
    """

    def __init__(
        self,
        split: str = "train",
        env_kwargs: Mapping[str, Any] | None = None,
        max_turns: int = 8,
        max_new_tokens: int = 48,
        prompt: str = DEFAULT_PROMPT,
    ) -> None:
        if max_turns < 1 or max_new_tokens < 1:
            raise ValueError(f"max_turns and max_new_tokens must be positive, got {max_turns}, {max_new_tokens}")
        self.split, self.env_kwargs = split, {**dict(env_kwargs or {}), "max_turns": max_turns}
        self.max_turns, self.max_new_tokens = max_turns, max_new_tokens
        self.style: PromptStyle = get_prompt(prompt)
        self._envs: list[gym.Env] = []
        self.last_output: dict[str, list[Any]] | None = None
        self.__name__ = "DialogueRollout"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_envs"] = []
        state["last_output"] = None
        return state

    def _env(self, k: int) -> gym.Env:
        while len(self._envs) <= k:
            self._envs.append(gym.make(TEXT_ENV_ID, split=self.split, **self.env_kwargs))
        return self._envs[k]

    def generation_config(self, trainer: Any) -> GenerationConfig:
        """Sampling options from the trainer's arguments (temperature, top_p)."""
        args = trainer.args
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=float(getattr(args, "temperature", 1.0) or 1.0),
            top_p=float(getattr(args, "top_p", 1.0) or 1.0),
        )

    def __call__(self, prompts: Sequence[Sequence[Mapping[str, Any]]], trainer: Any) -> dict[str, list[Any]]:
        """Play one dialogue per prompt with the trainer's current policy."""
        import torch
        from trl.models.utils import unwrap_model_for_generation

        tokenizer = trainer.processing_class
        limit = int(getattr(trainer.args, "max_completion_length", 0) or 0) or None
        seeds = [_seed_of(p) for p in prompts]
        # Unwrapped (DDP/FSDP/DeepSpeed), gradient checkpointing off and eval mode: generation with a KV cache.
        # Mixed precision: accelerate autocasts the model's forward, so every pass of the rollout (the
        # cache prefill included) must run under the same autocast, or the KV cache mixes dtypes.
        half = torch.bfloat16 if getattr(trainer.args, "bf16", False) else None
        with unwrap_model_for_generation(trainer.model, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            try:
                with torch.autocast(model.device.type, dtype=half, enabled=half is not None):
                    self.last_output = self.rollout(model, tokenizer, seeds, self.generation_config(trainer), limit)
                    return self.last_output
            finally:
                model.train(was_training)

    def rollout(
        self,
        model: Any,
        tokenizer: Any,
        seeds: Sequence[int],
        config: GenerationConfig,
        max_completion_tokens: int | None = None,
        generation_seed: int | None = None,
        batch_size: int | None = None,
        reuse_cache: bool = True,
    ) -> dict[str, list[Any]]:
        """Play one dialogue per seed (the policy is ``model``); see the module docstring for the output.

        Args:
            model: The policy.
            tokenizer: Its tokenizer.
            seeds: One env seed per dialogue.
            config: Sampling options.
            max_completion_tokens: Cut each rollout's completion to this many tokens.
            generation_seed: Seeds sampling (turn ``t`` of a batch uses ``generation_seed + t``).
            batch_size: Dialogues per batch (default: all at once).
            reuse_cache: Keep each dialogue's KV cache between turns (:class:`IncrementalBatch`), so a
                turn encodes only its new tokens; False re-encodes the whole sequence every turn.
        """
        size = batch_size or len(seeds)
        if size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        out: dict[str, list[Any]] = {}
        for start in range(0, len(seeds), size):
            part = self._rollout_batch(
                model,
                tokenizer,
                seeds[start : start + size],
                config,
                max_completion_tokens,
                generation_seed,
                reuse_cache,
            )
            for key, values in part.items():
                out[key] = values if values is None else [*out.get(key, []), *values]
        return out

    def _rollout_batch(
        self,
        model: Any,
        tokenizer: Any,
        seeds: Sequence[int],
        config: GenerationConfig,
        max_completion_tokens: int | None,
        generation_seed: int | None,
        reuse_cache: bool,
    ) -> dict[str, list[Any]]:
        n = len(seeds)
        envs = [self._env(k) for k in range(n)]
        cores = [e.unwrapped for e in envs]
        histories: list[list[dict[str, Any]]] = []
        prompt_ids: list[list[int]] = []
        for env, core, seed in zip(envs, cores, seeds, strict=True):
            env.reset(seed=seed)
            history = prompt_messages(core, summary=False, style=self.style)
            histories.append(history)
            prompt_ids.append(render_ids(tokenizer, history))
        completion: list[list[int]] = [[] for _ in range(n)]
        mask: list[list[int]] = [[] for _ in range(n)]
        token_turns: list[list[int]] = [[] for _ in range(n)]
        turn_rewards: list[list[float]] = [[] for _ in range(n)]
        returns = [0.0] * n
        terms: list[dict[str, float]] = [{} for _ in range(n)]
        contexts: list[list[Any]] = [[] for _ in range(n)]
        eos = tokenizer.eos_token_id
        # (term, weight) of the dialogue-level terms, per env: left out of each turn's immediate reward.
        outcome_weights = [[(t, c.reward_fn.weights.get(t, 0.0)) for t in OUTCOME_TERMS] for c in cores]
        active = list(range(n))
        batch = IncrementalBatch(model, tokenizer, prompt_ids) if reuse_cache else None
        for turn in range(self.max_turns):
            if not active:
                break
            seed = None if generation_seed is None else generation_seed + turn
            if batch is not None:
                new = batch.generate(config, seed)
            else:
                new = generate_from_ids(model, tokenizer, [prompt_ids[k] + completion[k] for k in active], config, seed)
            still, appended = [], []
            for row, (k, tokens) in enumerate(zip(active, new, strict=True)):
                text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
                completion[k] += tokens
                mask[k] += [1] * len(tokens)
                token_turns[k] += [turn] * len(tokens)
                closing = []
                if not tokens or tokens[-1] != eos:  # cut by the token cap: close the turn as the template would
                    closing = [eos]
                    completion[k] += closing
                    mask[k].append(0)
                    token_turns[k].append(-1)
                _, reward, terminated, truncated, info = envs[k].step(text)
                returns[k] += reward
                outcome = sum(w * info["reward_terms"].get(t, 0.0) for t, w in outcome_weights[k])
                turn_rewards[k].append(float(reward - outcome))
                for t, v in info["reward_terms"].items():
                    terms[k][t] = terms[k].get(t, 0.0) + v
                contexts[k].append(cores[k].last_context)
                histories[k].append({"role": "assistant", "content": info["agent_text"]})
                full = max_completion_tokens is not None and len(completion[k]) >= max_completion_tokens
                if full and not (terminated or truncated):
                    # Cut by the token budget before the dialogue ended: a failure, as if out of turns
                    # (else rambling to the budget would dodge the failure charge).
                    penalty = -cores[k].reward_fn.weights.get("task_failure", 0.0)
                    returns[k] += penalty
                    if "task_failure" in terms[k]:
                        terms[k]["task_failure"] -= 1.0
                if terminated or truncated or full or turn == self.max_turns - 1:
                    continue
                content = user_turn_content(self.style, cores[k], info)
                user = user_turn_text(tokenizer, histories[k], content)
                user_ids = tokenizer(user, add_special_tokens=False)["input_ids"]
                histories[k].append({"role": "user", "content": content})
                completion[k] += user_ids
                mask[k] += [0] * len(user_ids)
                token_turns[k] += [-1] * len(user_ids)
                still.append(k)
                appended.append((row, closing + user_ids))
            if batch is not None and still:
                batch.keep([row for row, _ in appended])
                batch.append([ids for _, ids in appended])
            active = still
        if max_completion_tokens is not None:
            completion = [c[:max_completion_tokens] for c in completion]
            mask = [m[:max_completion_tokens] for m in mask]
            token_turns = [t[:max_completion_tokens] for t in token_turns]
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion,
            "logprobs": None,  # no vLLM: TRL recomputes old log-probs itself when it needs them
            "env_mask": mask,
            "token_turns": token_turns,
            "turn_rewards": turn_rewards,
            "env_return": returns,
            "reward_terms": terms,
            "turn_contexts": contexts,
            "transcript": [[dict(m) for m in h] for h in histories],
        }


def env_return(completions: Sequence[Any], env_return: Sequence[float], **kwargs: Any) -> list[float]:
    """TRL reward function: the dialogue's return in the env (its weighted reward terms).

    Args:
        completions: The rollouts' completions (unused: the env scored the whole dialogue).
        env_return: Extra field from :class:`DialogueRollout`.
        **kwargs: Other columns (ignored).

    Returns:
        One float per rollout.
    """
    return [float(r) for r in env_return]
