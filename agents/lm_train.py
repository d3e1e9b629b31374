"""Train LM policies on PersonaRec with TRL's GRPOTrainer (LoRA by default).

Two paths:

* ``mode="multi"`` (default): every rollout is a whole dialogue in ``PersonaRecText-v0``
  (:class:`agents.lm_grpo.DialogueRollout`); the reward is the env's return, and each reward
  term is logged as its own reward function with weight 0.
* ``mode="single"``: the stock-TRL way. A data set of (persona, dialogue-so-far) contexts is
  collected by playing the env with a baseline agent; TRL generates one reply per context, and any
  registered reward scores it through :func:`rewards.to_trl` (the adapter replays the dialogue and
  says the reply to the simulated user).

A run folder holds ``config.yaml``, ``checkpoints/`` (TRL/Trainer checkpoints; ``--resume``
continues from the last), ``tb/`` (TensorBoard) and ``final_model/`` (the merged model and its
tokenizer, loadable as ``lm:<run>/final_model``). The same script runs under
``accelerate launch`` for several GPUs or nodes.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

import dialog_env
from agents.lm_runs import (
    LMRunFields,
    add_run_arguments,
    check_common,
    check_counts,
    has_accelerator,
    load_run_config,
    lora_config,
    open_run,
    run_name,
    save_figure,
    save_policy,
    time_limit_callback,
    train_interruptibly,
)
from agents.prompts import DEFAULT_PROMPT, PROMPTS, policy_prompt
from dialog_env.cliargs import dataclass_values
from dialog_env.io import atomic_write_text
from dialog_env.lm import DEFAULT_MODEL, resolve_model_path
from dialog_env.persona import SPLITS
from rewards.compose import reward_specs_from_config
from rewards.learned import clear_reward_states

MODES = ("multi", "branch", "single")
LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo")
BRANCH_TURNS = 1
"""Branch mode: agent turns sampled (and trained) per branch point before the greedy rest of the dialogue."""


class LMConfigError(ValueError):
    """An invalid LM training argument; the message names the field and what is allowed."""


@dataclass
class LMTrainConfig(LMRunFields):
    """Arguments of a GRPO run on PersonaRec (CleanRL-style: one field, one docstring)."""

    model: str = DEFAULT_MODEL
    """base model: smollm2 (embedded default), a Hugging Face id or a local folder (e.g. an SFT run's final_model)"""
    prompt: str = ""
    """prompt style (catalog, notes); empty: the one the model folder records, else catalog"""
    mode: str = "multi"
    """multi (whole dialogues per rollout), branch (sample one turn at a state the starting policy reaches, play on
    greedily, reward the return-to-go) or single (one reply per collected context, immediate reward)"""
    continuation: str = ""
    """branch mode: who plays on after the sampled turn; empty: the policy itself, greedily; an agent spec (e.g.
    planner): that non-privileged agent, so a reply is scored under competent play (no generation after it)"""
    advantage: str = "group"
    """group (GRPO: the return normalised in its group) or greedy (branch mode: the positive part of a reply's gain
    over the policy's greedy reply at the same branch point, ReMax's baseline; no gradient for replies no better)"""
    padding_free: bool = True
    """score every rollout at its own length in the log-prob passes (--no-padding-free: TRL's padded batches)"""
    exp_name: str = "grpo"
    """experiment name, part of the run folder name"""
    run_root: str = "runs"
    """folder that holds run folders"""
    seed: int = 0
    """seed of the trainer, the task set and sampling"""
    split: str = "train"
    """persona split of the training tasks"""
    tasks: int = 256
    """persona tasks (env seeds) in the training set; branch mode: dialogues the starting policy plays greedily
    to collect branch points (every agent turn is one)"""
    max_steps: int = 100
    """optimizer steps"""
    num_generations: int = 4
    """rollouts per task: the GRPO group"""
    per_device_train_batch_size: int = 8
    """rollouts per device and step (a multiple of num_generations)"""
    gradient_accumulation_steps: int = 1
    """gradient accumulation"""
    num_iterations: int = 2
    """optimisation passes per generated batch; >= 2 makes the PPO clip act"""
    epsilon: float = 0.2
    """clip range of the surrogate"""
    beta: float = 0.0
    """KL coefficient to the base model (0: no reference model)"""
    loss_type: str = "dapo"
    """how token losses are averaged (TRL): dapo (over all tokens of the batch: a long dialogue weighs more), grpo
    (per dialogue, then over dialogues: every dialogue weighs the same), dr_grpo, bnpo"""
    turn_credit: float = 0.0
    """weight of turn-level advantages (multi mode): each agent turn's group-normalised immediate reward is added to
    its tokens' dialogue advantage; 0 gives every token the dialogue's advantage (TRL's GRPO)"""
    learning_rate: float = 1e-4
    """learning rate (LoRA); use ~1e-5 with --no-lora"""
    max_turns: int = 6
    """agent turns per dialogue (multi and branch modes)"""
    max_new_tokens: int = 40
    """tokens per agent turn"""
    max_completion_length: int = 512
    """tokens per rollout, agent and user turns together (multi mode)"""
    temperature: float = 0.7
    """sampling temperature of rollouts"""
    top_p: float = 1.0
    """nucleus sampling mass of rollouts (1: off)"""
    noise: float = 0.0
    """semantic error rate of the user channel"""
    user: str = "agenda"
    """user simulator of the rollouts: agenda, lm:<model>, adv:<run> (a trained adversary) or package.module:attr"""
    reward_weights: Any = None
    """reward terms: {name: weight}, {name: {weight, kwargs}} or a list of {name, weight, kwargs} (a YAML/JSON string on
    the command line); empty: the default weights"""
    save_steps: int = 25
    """checkpoint every this many steps"""

    def validate(self) -> None:
        """Raise :class:`LMConfigError` naming the field and the allowed values."""
        if self.mode not in MODES:
            raise LMConfigError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        if self.loss_type not in LOSS_TYPES:
            raise LMConfigError(f"loss_type: expected one of {list(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.prompt and self.prompt not in PROMPTS:
            raise LMConfigError(
                f"prompt: expected one of {list(PROMPTS)} (or empty: the model's own), got {self.prompt!r}"
            )
        if self.split not in (*SPLITS, "all"):
            raise LMConfigError(f"split: unknown split {self.split!r}; expected one of {[*SPLITS, 'all']}")
        check_common(self, LMConfigError)
        check_counts(
            self,
            LMConfigError,
            positive=("tasks", "max_steps", "num_generations", "per_device_train_batch_size", "num_iterations",
                      "max_turns", "max_new_tokens", "max_completion_length", "save_steps", "logging_steps",
                      "gradient_accumulation_steps", "lora_r", "lora_alpha"),
            non_negative=("lora_layers",),
        )  # fmt: skip
        if self.num_generations < 2:
            raise LMConfigError("num_generations: GRPO needs at least 2 rollouts per task")
        if self.per_device_train_batch_size % self.num_generations:
            raise LMConfigError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations})"
            )
        if not (self.turn_credit >= 0 and math.isfinite(self.turn_credit)):
            raise LMConfigError(f"turn_credit: expected a finite number >= 0, got {self.turn_credit!r}")
        if self.turn_credit and self.mode != "multi":
            raise LMConfigError("turn_credit: turn-level advantages need mode multi (whole dialogues per rollout)")
        if self.continuation:
            if self.mode != "branch":
                raise LMConfigError("continuation: only mode branch hands a dialogue on after the sampled turn")
            from agents.lm_grpo import check_continuation

            try:
                check_continuation(self.continuation)
            except ValueError as e:
                raise LMConfigError(str(e)) from None
        from agents.lm_trainer import ADVANTAGES

        if self.advantage not in ADVANTAGES:
            raise LMConfigError(f"advantage: expected one of {list(ADVANTAGES)}, got {self.advantage!r}")
        if self.advantage == "greedy" and self.mode != "branch":
            raise LMConfigError("advantage: greedy compares replies at a branch point: needs mode branch")
        if not self.temperature > 0:
            raise LMConfigError(f"temperature: GRPO samples its rollouts; expected > 0, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise LMConfigError(f"top_p: expected a number in (0, 1], got {self.top_p!r}")
        if not 0.0 <= self.noise < 1.0:
            raise LMConfigError(f"noise: expected a number in [0, 1), got {self.noise!r}")
        self.reward_weights = reward_specs_from_config(self.reward_weights, error=LMConfigError)
        from dialog_env.users.registry import check_user_spec

        check_user_spec(self.user, LMConfigError)


def build_single_turn_dataset(
    n: int,
    split: str = "train",
    seed: int = 0,
    agent: str = "rule",
    max_prefix_turns: int = 3,
    env_kwargs: dict | None = None,
    prompt: str = DEFAULT_PROMPT,
) -> Any:
    """Contexts for single-turn GRPO: dialogues played by ``agent`` for a random number of turns.

    Columns: ``prompt`` (system prompt + the dialogue so far, ending with the user) and
    ``dialog_state`` (JSON; what :func:`rewards.to_trl` replays to score a reply).
    """
    from datasets import Dataset

    from agents import make_agent
    from agents.prompts import prompt_messages

    env = gym.make("dialog_env/PersonaRecText-v0", split=split, **dict(env_kwargs or {}))
    core = env.unwrapped
    player = make_agent(agent)
    rng = random.Random(seed)
    rows = []
    for s in range(seed, seed + n):
        obs, info = env.reset(seed=s)
        player.reset(env, seed=s)
        for _ in range(rng.randrange(max_prefix_turns + 1)):
            obs, _, terminated, truncated, info = env.step(player.act(obs, info))
            if terminated or truncated:
                env.reset(seed=s)  # keep the context live: fall back to the opening
                break
        messages = prompt_messages(core, summary=False, style=prompt)
        rows.append({"prompt": messages, "dialog_state": json.dumps(core.dialog_state())})
    env.close()
    return Dataset.from_list(rows)


def _load_policy(cfg: LMTrainConfig) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dialog_env.lm import prepare_tokenizer

    path = resolve_model_path(cfg.model)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path), name=cfg.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_trainer(cfg: LMTrainConfig, run: Path) -> Any:
    """The configured ``GRPOTrainer`` for a run folder."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import GRPOConfig

    from agents.lm_grpo import DialogueRollout, build_task_dataset, env_return
    from agents.lm_trainer import DialogueGRPOTrainer
    from rewards import DEFAULT_WEIGHTS, to_trl

    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tb")  # transformers' TensorBoard callback reads it
    model, tokenizer = _load_policy(cfg)
    peft_config = lora_config(model, cfg, LMConfigError) if cfg.lora else None
    env_kwargs: dict[str, Any] = {"noise": cfg.noise}
    if cfg.user != "agenda":
        env_kwargs["user"] = cfg.user
    specs = cfg.reward_weights or [{"name": n, "weight": w, "kwargs": {}} for n, w in DEFAULT_WEIGHTS.items()]
    if cfg.reward_weights is not None:
        env_kwargs["reward_weights"] = cfg.reward_weights
    prompt = prompt_style(cfg)
    if cfg.mode in ("multi", "branch"):
        if cfg.mode == "multi":
            dataset = build_task_dataset(cfg.tasks, cfg.split, cfg.seed, env_kwargs, prompt)
            explore, max_completion = None, cfg.max_completion_length
        else:
            dataset = _branch_points(model, tokenizer, cfg, env_kwargs, prompt)
            explore, max_completion = BRANCH_TURNS, BRANCH_TURNS * (cfg.max_new_tokens + 1)
        # The return drives the update; each term is logged as its own reward with weight 0.
        reward_funcs = [env_return, *(to_trl(t["name"], **t["kwargs"]) for t in specs)]
        reward_weights = [1.0] + [0.0] * len(specs)
        rollout = DialogueRollout(
            cfg.split,
            env_kwargs,
            cfg.max_turns,
            cfg.max_new_tokens,
            prompt=prompt,
            explore_turns=explore,
            continuation=cfg.continuation or None,
            greedy_baseline=cfg.advantage == "greedy",
        )
    else:
        dataset = build_single_turn_dataset(
            cfg.tasks, split=cfg.split, seed=cfg.seed, env_kwargs=env_kwargs, prompt=prompt
        )
        reward_funcs = [to_trl(t["name"], **t["kwargs"]) for t in specs]
        reward_weights = [t["weight"] for t in specs]
        rollout = None
        max_completion = cfg.max_new_tokens
    args = GRPOConfig(
        output_dir=str(run / "checkpoints"),
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations,
        epsilon=cfg.epsilon,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        learning_rate=cfg.learning_rate,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_completion_length=max_completion,
        reward_weights=reward_weights,
        bf16=cfg.dtype == "bfloat16",
        save_steps=cfg.save_steps,
        save_total_limit=3,
        logging_steps=cfg.logging_steps,
        report_to=["tensorboard"],
        use_cpu=not has_accelerator(),
        gradient_checkpointing=False,
    )
    extra: dict[str, Any] = {"padding_free": cfg.padding_free, "advantage": cfg.advantage}
    trainer_class: Any = DialogueGRPOTrainer
    if cfg.turn_credit:
        from agents.lm_credit import TurnCreditGRPOTrainer

        trainer_class, extra = TurnCreditGRPOTrainer, {**extra, "turn_credit": cfg.turn_credit}
    return trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        rollout_func=rollout,
        peft_config=peft_config,
        callbacks=[time_limit_callback(cfg.time_limit_min)] if cfg.time_limit_min else None,
        **extra,
    )


def _branch_points(model: Any, tokenizer: Any, cfg: LMTrainConfig, env_kwargs: dict[str, Any], prompt: str) -> Any:
    """Branch-mode data set: the starting policy plays ``cfg.tasks`` dialogues greedily (fp32, no gradients)."""
    import time

    import torch

    from agents.lm_grpo import build_branch_dataset

    start = time.perf_counter()
    with torch.no_grad():
        dataset = build_branch_dataset(
            model, tokenizer, cfg.tasks, cfg.split, cfg.seed, env_kwargs, prompt, cfg.max_turns, cfg.max_new_tokens
        )
    took = time.perf_counter() - start
    print(f"branch points: {len(dataset)} agent turns of {cfg.tasks} greedy dialogues ({took:.0f} s)")
    return dataset


def prompt_style(cfg: LMTrainConfig) -> str:
    """The run's prompt style: ``cfg.prompt``, else the one the model folder records, else ``catalog``."""
    return cfg.prompt or policy_prompt(cfg.model)


def train_lm(cfg: LMTrainConfig, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) a run; returns its folder.

    Raises:
        LMConfigError: Invalid configuration, or nothing to resume.
    """
    cfg.validate()
    dialog_env.ENV_IDS  # noqa: B018 - registers the environments
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / run_name(cfg.exp_name, cfg.seed)
    checkpoint = open_run(cfg, run, resume, LMConfigError)
    clear_reward_states()  # learned reward terms start untrained, or come back from the checkpoint
    trainer = build_trainer(cfg, run)
    train_interruptibly(trainer, run, checkpoint, f"dialog-env train lm --resume {run}")
    if trainer.accelerator.is_main_process:
        save_policy(trainer, run / "final_model", prompt_style(cfg), trained_by="grpo", model=cfg.model)
        log = [entry for entry in trainer.state.log_history if "reward" in entry]
        if log:
            atomic_write_text(run / "train_log.json", json.dumps(log, indent=1))
            plot_lm_curve(log, run / "learning_curve.png")
    trainer.accelerator.wait_for_everyone()
    return run


def plot_lm_curve(log: Sequence[dict[str, Any]], path: Path) -> Path:
    """Training curve of a GRPO run: mean rollout return and persona-consistency per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in log]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = [("reward", "return (env_return)"), ("rewards/persona_consistency/mean", "persona consistency (sum)")]
    for ax, (key, title) in zip(axes, panels, strict=True):
        ys = [e.get(key, float("nan")) for e in log]
        smoothed = len(ys) >= 20
        ax.plot(steps, ys, "o-", lw=1, ms=3, color="C0", alpha=0.6 if smoothed else 1.0, label="per rollout batch")
        if smoothed:
            k = len(ys) // 10
            smooth = [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]
            ax.plot(steps, smooth, lw=2, color="C1", label=f"moving mean ({k} batches)")
        ax.set(title=title, xlabel="GRPO step")
        ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def resume_lm(run_dir: str | Path, max_steps: int | None = None) -> Path:
    """Continue a run from its last checkpoint (optionally to a new ``max_steps``)."""
    run = Path(run_dir)
    return train_lm(load_run_config(run, LMTrainConfig, LMConfigError, max_steps), run_dir=run, resume=True)


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line of ``scripts/train_lm.py`` / ``dialog-env train lm``."""
    import argparse

    p = argparse.ArgumentParser(description="Train an LM policy on PersonaRecText-v0 with TRL's GRPOTrainer.")
    build_lm_parser(p)
    return run_lm_from_args(p.parse_args(argv))


def build_lm_parser(p: Any) -> Any:
    """Add the LM training arguments to a parser."""
    return add_run_arguments(p, LMTrainConfig)


def run_lm_from_args(args: Any) -> Path:
    """Shared by the script and the CLI."""
    if args.resume:
        run = resume_lm(args.resume, max_steps=args.max_steps)
    else:
        cfg = LMTrainConfig(**dataclass_values(LMTrainConfig, args, LMConfigError))
        cfg.validate()
        run = train_lm(cfg, run_dir=args.run_dir)
    print(f"run folder: {run} (final_model/, checkpoints/, tb/)")
    print(f"evaluate with: dialog-env eval --agents lm:{run / 'final_model'}")
    return run
