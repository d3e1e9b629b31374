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
from dialog_env.driver import DialogueDriver, PrefixEndedError, Start, Step
from dialog_env.envs.core import PersonaRecCore
from dialog_env.lm import GenerationConfig, IncrementalBatch, generate_from_ids, render_ids, user_turn_text

TEXT_ENV_ID = "dialog_env/PersonaRecText-v0"
SEED_KEY = "dialog_env_seed"
PREFIX_KEY = "dialog_env_prefix"
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


def build_branch_dataset(
    model: Any,
    tokenizer: Any,
    n: int,
    split: str = "train",
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    prompt: str = DEFAULT_PROMPT,
    max_turns: int = 8,
    max_new_tokens: int = 48,
    batch_size: int = 16,
) -> Any:
    """Branch points for branch-mode GRPO: the states a policy reaches when it plays ``n`` tasks greedily.

    ``model`` plays env seeds ``seed .. seed+n-1`` with greedy decoding; every agent turn of those
    dialogues is one row, so a greedy policy's evaluation visits exactly these states (on other
    personas). Columns: ``prompt`` (the conversation up to the turn; its first message carries the
    seed under :data:`SEED_KEY` and the agent's earlier utterances under :data:`PREFIX_KEY`),
    ``dialog_seed`` and ``turn``.
    """
    from datasets import Dataset

    rollout = DialogueRollout(split, env_kwargs, max_turns, max_new_tokens, prompt=prompt)
    greedy = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    seeds = list(range(seed, seed + n))
    played = rollout.rollout(model, tokenizer, seeds, greedy, batch_size=batch_size)
    rows = []
    env = rollout._env(0)
    for s, transcript in zip(seeds, played["transcript"], strict=True):
        env.reset(seed=s)
        opening = len(prompt_messages(env.unwrapped, summary=False, style=rollout.style))  # may hold a worked example
        said = [i for i, m in enumerate(transcript) if m["role"] == "assistant" and i >= opening]
        for turn, at in enumerate(said):
            first, *rest = transcript[:at]
            prefix = [transcript[i]["content"] for i in said[:turn]]
            rows.append({"prompt": [{**first, SEED_KEY: s, PREFIX_KEY: prefix}, *rest], "dialog_seed": s, "turn": turn})
    rollout.close()
    return Dataset.from_list(rows)


def _prefix_of(prompt: Sequence[Mapping[str, Any]]) -> list[str]:
    return list((prompt[0].get(PREFIX_KEY) if prompt else None) or [])


def _seed_of(prompt: Sequence[Mapping[str, Any]]) -> int:
    seed = prompt[0].get(SEED_KEY) if prompt else None
    if seed is None:
        raise ValueError(f"rollout prompts must come from build_task_dataset (first message needs {SEED_KEY!r})")
    return int(seed)


def check_continuation(spec: str) -> None:
    """Refuse a branch-mode continuation that is not a registered, non-privileged agent spec.

    Raises:
        ValueError: Names the field and what is allowed.
    """
    from agents.base import AGENT_PREFIXES, AGENTS, is_privileged, make_agent

    if not isinstance(spec, str) or not spec:
        raise ValueError(f"continuation must be an agent spec (e.g. 'planner'), got {spec!r}")
    if spec not in AGENTS and spec.split(":", 1)[0] not in AGENT_PREFIXES:
        raise ValueError(f"continuation: unknown agent {spec!r}; registered: {', '.join(sorted(AGENTS))}")
    if spec in AGENTS and is_privileged(make_agent(spec)):
        raise ValueError(f"continuation: {spec!r} reads the hidden persona; a continuation must be non-privileged")


class DialogueRollout:
    """TRL ``rollout_func``: plays one whole dialogue per prompt, all dialogues batched per turn.

    Args:
        split: Persona split of the tasks.
        env_kwargs: Extra env kwargs (``noise``, ``reward_weights``, ...).
        max_turns: Agent turns per dialogue at most: the env's turn limit, so the last turn of a
            dialogue that runs out of turns is charged as a failure.
        max_new_tokens: Token cap per agent turn.
        prompt: Prompt style of the policy (:mod:`agents.prompts`).
        explore_turns: ``None``: every agent turn is sampled and trained (whole dialogues). ``k``:
            branch mode. A prompt may carry a dialogue prefix (:data:`PREFIX_KEY`, the agent's
            earlier utterances, replayed in the env); the next ``k`` agent turns are sampled and are
            the trained completion, the rest of the dialogue is played greedily by the same policy,
            and the reward is the return from the first sampled turn on (the return-to-go).
        continuation: Branch mode: who plays the dialogue on after the sampled turns. ``None``: the
            policy itself, greedily. An agent spec (e.g. ``planner``): that agent, so a reply is scored
            by what it leads to under competent play (a roll-out with a reference policy, as in
            AggreVaTe and LOLS), which does not hinge on how the policy's own later turns happen to
            react to the reply's wording, and costs no generation. Privileged agents are refused.
        greedy_baseline: Branch mode: also play the policy's greedy reply once at every distinct branch
            point of a batch (same continuation); its return is ``baseline`` in the output, on every
            row of that point (the greedy advantage of :class:`agents.lm_trainer.DialogueGRPOTrainer`).
    """

    def __init__(
        self,
        split: str = "train",
        env_kwargs: Mapping[str, Any] | None = None,
        max_turns: int = 8,
        max_new_tokens: int = 48,
        prompt: str = DEFAULT_PROMPT,
        explore_turns: int | None = None,
        continuation: str | None = None,
        greedy_baseline: bool = False,
    ) -> None:
        if max_turns < 1 or max_new_tokens < 1:
            raise ValueError(f"max_turns and max_new_tokens must be positive, got {max_turns}, {max_new_tokens}")
        if explore_turns is not None and explore_turns < 1:
            raise ValueError(f"explore_turns must be None or positive, got {explore_turns}")
        if continuation is not None:
            check_continuation(continuation)
            if explore_turns is None:
                raise ValueError("continuation: only branch mode (explore_turns) hands the dialogue on to an agent")
        if greedy_baseline and explore_turns is None:
            raise ValueError("greedy_baseline: only branch mode (explore_turns) has a greedy reply to compare with")
        self.explore_turns, self.continuation, self.greedy_baseline = explore_turns, continuation, greedy_baseline
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

    def close(self) -> None:
        """Close the environments the rollouts used."""
        for env in self._envs:
            env.close()
        self._envs = []

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
        prefixes = [_prefix_of(p) for p in prompts]
        if self.explore_turns is not None:
            limit = None  # the completion is cut to the sampled turns; the greedy rest has no token budget
        # Unwrapped (DDP/FSDP/DeepSpeed), gradient checkpointing off and eval mode: generation with a KV cache.
        # Mixed precision: accelerate autocasts the model's forward, so every pass of the rollout (the
        # cache prefill included) must run under the same autocast, or the KV cache mixes dtypes.
        half = torch.bfloat16 if getattr(trainer.args, "bf16", False) else None
        with unwrap_model_for_generation(trainer.model, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            try:
                with torch.autocast(model.device.type, dtype=half, enabled=half is not None):
                    self.last_output = self.rollout(
                        model, tokenizer, seeds, self.generation_config(trainer), limit, prefixes=prefixes
                    )
                    if self.greedy_baseline:
                        self.last_output["baseline"] = self.greedy_returns(model, tokenizer, seeds, prefixes)
                    return self.last_output
            finally:
                model.train(was_training)

    def greedy_returns(
        self, model: Any, tokenizer: Any, seeds: Sequence[int], prefixes: Sequence[Sequence[str]]
    ) -> list[float]:
        """Per row, the return of the greedy reply at its branch point (each distinct point played once)."""
        points = list(dict.fromkeys((s, tuple(p)) for s, p in zip(seeds, prefixes, strict=True)))
        greedy = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False)
        played = self.rollout(model, tokenizer, [s for s, _ in points], greedy, prefixes=[list(p) for _, p in points])
        value = dict(zip(points, played["env_return"], strict=True))
        return [float(value[(s, tuple(p))]) for s, p in zip(seeds, prefixes, strict=True)]

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
        prefixes: Sequence[Sequence[str]] | None = None,
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
            prefixes: Per dialogue, agent utterances to replay after the reset before the policy
                speaks (branch mode); their turns are part of the prompt, not of the completion.
        """
        size = batch_size or len(seeds)
        if size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if prefixes is not None and len(prefixes) != len(seeds):
            raise ValueError(f"prefixes: expected one per seed ({len(seeds)}), got {len(prefixes)}")
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
                None if prefixes is None else prefixes[start : start + size],
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
        prefixes: Sequence[Sequence[str]] | None = None,
    ) -> dict[str, list[Any]]:
        envs = [self._env(k) for k in range(len(seeds))]
        policy = _TokenPolicy(self, model, tokenizer, envs, config, max_completion_tokens, generation_seed, reuse_cache)
        try:
            DialogueDriver(envs).play(policy, seeds, prefixes=prefixes)
        except PrefixEndedError as e:
            raise ValueError(f"{e}: a branch point needs a turn left") from None
        return policy.output()


class _TokenPolicy:
    """The policy LM as a :class:`~dialog_env.driver.DriverPolicy` that keeps every dialogue's token sequence.

    One dialogue per env (slot ``k`` plays dialogue ``k``). Generation continues each dialogue's own
    ids (a KV cache per row with ``reuse_cache``); the rollout's outputs are gathered per dialogue.
    """

    def __init__(
        self,
        rollout: DialogueRollout,
        model: Any,
        tokenizer: Any,
        envs: Sequence[gym.Env],
        config: GenerationConfig,
        max_completion_tokens: int | None,
        generation_seed: int | None,
        reuse_cache: bool,
    ) -> None:
        n = len(envs)
        self.rollout, self.model, self.tokenizer, self.config = rollout, model, tokenizer, config
        self.max_completion_tokens, self.generation_seed = max_completion_tokens, generation_seed
        self.reuse_cache = reuse_cache
        self.greedy = GenerationConfig(max_new_tokens=config.max_new_tokens, do_sample=False)
        cores = [e.unwrapped for e in envs]
        # (term, weight) of the dialogue-level terms, per env: left out of each turn's immediate reward.
        self.outcome_weights = [[(t, c.reward_fn.weights.get(t, 0.0)) for t in OUTCOME_TERMS] for c in cores]
        self.failure_weights = [c.reward_fn.weights.get("task_failure", 0.0) for c in cores]
        self.views: list[Any] = [None] * n
        self.histories: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.prompt_ids: list[list[int]] = [[] for _ in range(n)]
        self.completion: list[list[int]] = [[] for _ in range(n)]
        self.mask: list[list[int]] = [[] for _ in range(n)]
        self.token_turns: list[list[int]] = [[] for _ in range(n)]
        self.turn_rewards: list[list[float]] = [[] for _ in range(n)]
        self.returns = [0.0] * n
        self.terms: list[dict[str, float]] = [{} for _ in range(n)]
        self.contexts: list[list[Any]] = [[] for _ in range(n)]
        self.offsets = [0] * n  # agent turns replayed before the policy speaks
        self.kept: list[int | None] = [None] * n  # branch mode: completion length after the sampled turns
        self.closing: dict[int, list[int]] = {}  # this round's end-of-turn token, where the cap cut a turn
        self.pending: dict[int, list[int]] = {}  # ids to append before the next round (closing + user turn)
        self.batch: IncrementalBatch | None = None
        self.rows: list[int] = []  # the slot of each batch row
        self.agents: list[Any] | None = None  # branch mode: the agents that play on after the sampled turns
        if rollout.continuation is not None:
            from agents.base import make_agent

            self.agents = [make_agent(rollout.continuation) for _ in envs]
        self.last: list[tuple[Any, dict[str, Any]] | None] = [None] * n  # what each continuation agent reads next
        self.turn = 0  # rounds played

    def begin(self, slot: int, start: Start) -> None:
        """Render the dialogue so far (the opening, or a replayed prefix) as the prompt."""
        history = prompt_messages(start.view, summary=False, style=self.rollout.style)
        self.views[slot], self.histories[slot], self.offsets[slot] = start.view, history, len(start.replayed)
        self.prompt_ids[slot] = render_ids(self.tokenizer, history)
        if self.agents is not None:
            self.agents[slot].reset(start.view, seed=start.seed)
            self.last[slot] = (start.observation, start.info)

    def _handed_on(self) -> bool:
        """Whether the continuation agent speaks this round (branch mode, past the sampled turns)."""
        explore = self.rollout.explore_turns
        return self.agents is not None and explore is not None and self.turn >= explore

    def act(self, slots: Sequence[int]) -> list[str]:
        """One agent turn per live dialogue, generated in one batch (or the continuation agent's)."""
        explore = self.rollout.explore_turns
        if self._handed_on():
            assert self.agents is not None
            self.turn += 1
            return [self.agents[k].act(*self.last[k]) for k in slots]  # type: ignore[misc]
        config = self.config if explore is None or self.turn < explore else self.greedy
        seed = None if self.generation_seed is None else self.generation_seed + self.turn
        if not self.reuse_cache:
            ids = [self.prompt_ids[k] + self.completion[k] for k in slots]
            new = generate_from_ids(self.model, self.tokenizer, ids, config, seed)
        else:
            if self.batch is None:
                self.batch = IncrementalBatch(self.model, self.tokenizer, [self.prompt_ids[k] for k in slots])
            elif self.pending:
                self.batch.keep([self.rows.index(k) for k in slots])
                self.batch.append([self.pending[k] for k in slots])
            self.rows, self.pending = list(slots), {}
            new = self.batch.generate(config, seed)
        texts = []
        eos = self.tokenizer.eos_token_id
        for k, tokens in zip(slots, new, strict=True):
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())
            self.completion[k] += tokens
            self.mask[k] += [1] * len(tokens)
            self.token_turns[k] += [self.turn] * len(tokens)
            self.closing[k] = []
            if not tokens or tokens[-1] != eos:  # cut by the token cap: close the turn as the template would
                self.closing[k] = [eos]
                self.completion[k].append(eos)
                self.mask[k].append(0)
                self.token_turns[k].append(-1)
            if explore is not None and self.turn == explore - 1:
                self.kept[k] = len(self.completion[k])
        self.turn += 1
        return texts

    def observe(self, k: int, step: Step) -> bool:
        """Score the turn; unless the dialogue is over, append the user's reply to its tokens."""
        info = step.info
        self.returns[k] += step.reward
        outcome = sum(w * info["reward_terms"].get(t, 0.0) for t, w in self.outcome_weights[k])
        self.turn_rewards[k].append(float(step.reward - outcome))
        for t, v in info["reward_terms"].items():
            self.terms[k][t] = self.terms[k].get(t, 0.0) + v
        self.contexts[k].append(step.context)
        self.last[k] = (step.observation, info)
        self.histories[k].append({"role": "assistant", "content": info["agent_text"]})
        limit = self.max_completion_tokens
        full = limit is not None and len(self.completion[k]) >= limit
        if full and not (step.terminated or step.truncated):
            # Cut by the token budget before the dialogue ended: a failure, as if out of turns
            # (else rambling to the budget would dodge the failure charge).
            self.returns[k] -= self.failure_weights[k]
            if "task_failure" in self.terms[k]:
                self.terms[k]["task_failure"] -= 1.0
        last = self.offsets[k] + self.turn - 1 >= self.rollout.max_turns - 1
        if step.terminated or step.truncated or full or last:
            return False
        content = user_turn_content(self.rollout.style, self.views[k], info)
        if self._handed_on():  # the agent plays on: no more tokens (the completion ends at the sampled turns)
            self.histories[k].append({"role": "user", "content": content})
            return True
        user = user_turn_text(self.tokenizer, self.histories[k], content)
        user_ids = self.tokenizer(user, add_special_tokens=False)["input_ids"]
        self.histories[k].append({"role": "user", "content": content})
        self.completion[k] += user_ids
        self.mask[k] += [0] * len(user_ids)
        self.token_turns[k] += [-1] * len(user_ids)
        self.pending[k] = self.closing[k] + user_ids
        return True

    def output(self) -> dict[str, list[Any]]:
        """The rollout's fields (see the module docstring), cut to the sampled turns in branch mode."""
        completion, mask, token_turns = self.completion, self.mask, self.token_turns
        if self.rollout.explore_turns is not None:  # branch mode: train the sampled turns; the greedy rest scored them
            cut = [len(c) if k is None else k for c, k in zip(completion, self.kept, strict=True)]
            completion = [c[:k] for c, k in zip(completion, cut, strict=True)]
            mask = [m[:k] for m, k in zip(mask, cut, strict=True)]
            token_turns = [t[:k] for t, k in zip(token_turns, cut, strict=True)]
        limit = self.max_completion_tokens
        if limit is not None:
            completion = [c[:limit] for c in completion]
            mask = [m[:limit] for m in mask]
            token_turns = [t[:limit] for t in token_turns]
        return {
            "prompt_ids": self.prompt_ids,
            "completion_ids": completion,
            "logprobs": None,  # no vLLM: TRL recomputes old log-probs itself when it needs them
            "env_mask": mask,
            "token_turns": token_turns,
            "turn_rewards": self.turn_rewards,
            "env_return": self.returns,
            "reward_terms": self.terms,
            "turn_contexts": self.contexts,
            "transcript": [[dict(m) for m in h] for h in self.histories],
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
