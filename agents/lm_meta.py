"""Meta-learned adaptation of an LM policy to a returning user: Reptile over persona tasks.

``dialog-env train meta --model runs/sft/final_model --method reptile --run-dir runs/meta_reptile``
trains the LoRA weights of an LM policy (typically the SFT policy) so that a few gradient steps on
the dialogues it had with a user adapt it to that user; ``--method multitask`` trains the same
weights on the same sequences with the same number of steps by plain fine-tuning (the baseline).

**Tasks** (:mod:`dialog_env.tasks`): a persona with the goals of ``history + 1`` sessions. A task's
*history* is its first ``history`` sessions as the planner with memory (``planner_memory``: it keeps
only what the user said) played them with that user; its *target* is the next session, with a new
goal, as the same planner plays it. The data are made on the fly from the task's seed (no files).

**Adaptation** (the inner loop, the same in training and at meta-test): the weights take
``adapt_steps`` Adam steps (fresh optimizer, ``inner_lr``) per history dialogue on the language-model
loss over everything after the prompt — the user's replies, where the facts are, and the agent's
turns. Nothing of the history is in the prompt afterwards: what the policy keeps of it is in its
weights.

**Meta-training**. Each outer step draws ``meta_batch`` tasks from ``train_tasks`` tasks of the
``meta_train`` set and, for each, ``k`` uniformly in ``0..history``. *Reptile* (first-order, Nichol
et al. 2018): from the current weights ``phi``, adapt on the task's first ``k`` history dialogues,
then take ``target_steps`` steps on the target session's agent turns (imitate what the planner did
knowing the history); ``phi <- phi + eps * (mean(phi_task) - phi)``, ``eps`` annealed linearly from
``outer_lr`` to 0. *Multi-task* (the baseline): the same sequences, losses and steps in the same
order, with one Adam optimizer throughout and no interpolation — fine-tuning on all tasks at once.

**Meta-test**: for each of ``eval_tasks`` tasks of ``eval_set`` (personas no training task has) and
each ``k`` of ``eval_k``, the trained weights are adapted on the task's first ``k`` history dialogues
exactly as above, then the policy plays the target session greedily against a user who remembers
the ``k`` sessions (``reset(options={"earlier": ...})``: asked again, it says so and loses patience,
and contradicting what it said before counts). Every method meets the same users, goals and seeds,
so differences are paired. ``outer_steps=0`` evaluates the start policy adapted the same way.

A run folder holds ``config.yaml``, ``checkpoints/step_N.pt`` (the LoRA weights, the step, the
multi-task optimizer and the log; ``--resume`` continues from the newest whole one), ``train_log.json``,
``meta_curve.png`` (loss on the target sessions), ``adaptation.json`` (per task and ``k``, with the
summary) and ``adaptation_curve.png``, and ``final_model/`` (the merged policy, ``lm:<run>/final_model``).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.lm_runs import (
    LMRunFields,
    add_run_arguments,
    check_common,
    check_counts,
    load_run_config,
    lora_config,
    open_run,
    run_name,
    save_figure,
)
from agents.prompts import get_prompt, policy_prompt, prompt_messages, save_policy_record
from dialog_env.cliargs import dataclass_values
from dialog_env.interrupt import STOP, TrainingInterrupted, stop_on_signals
from dialog_env.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from dialog_env.lm import DEFAULT_MODEL, resolve_model_path, save_pretrained_atomic
from dialog_env.tasks import TASK_SETS, Task, make_tasks

METHODS = ("reptile", "multitask")
ADAPTATION_METRICS = (
    "success",
    "return",
    "turns",
    "asks",
    "re_asks",
    "contradiction_rate",
    "cross_contradiction_rate",
)
"""Per target session: re-asks are questions about facts the user gave in the history; the cross-session
contradiction rate is the share of turns contradicting one of them (the contradiction rate counts any fact)."""


class MetaConfigError(ValueError):
    """An invalid meta-learning argument; the message names the field and what is allowed."""


@dataclass
class MetaTrainConfig(LMRunFields):
    """Arguments of ``dialog-env train meta`` (one field, one docstring)."""

    model: str = DEFAULT_MODEL
    """start policy: a model folder (typically an SFT run's final_model), smollm2 or a Hugging Face id"""
    method: str = "reptile"
    """reptile (first-order meta-learning) or multitask (plain fine-tuning on the same data: the baseline)"""
    exp_name: str = "meta"
    """experiment name, part of the run folder name"""
    run_root: str = "runs"
    """folder that holds run folders"""
    seed: int = 0
    """seed of the task draws, LoRA init and the history dialogues"""
    train_tasks: int = 200
    """tasks of the meta_train set the outer steps draw from"""
    history: int = 3
    """sessions of history per task (the target is the next one); k is drawn in 0..history"""
    outer_steps: int = 40
    """outer (meta) steps; 0: evaluate the start policy, adapted the same way"""
    meta_batch: int = 2
    """tasks per outer step (Reptile moves towards the mean of their adapted weights)"""
    adapt_steps: int = 2
    """Adam steps per history dialogue when adapting to a user (training and meta-test)"""
    target_steps: int = 2
    """steps on the target session's agent turns after adapting (training only)"""
    inner_lr: float = 5e-4
    """learning rate of adaptation and target steps (the multi-task optimizer's too)"""
    outer_lr: float = 1.0
    """Reptile's step size at the first outer step, annealed linearly to 0"""
    max_length: int = 1024
    """longest token sequence trained on (longer dialogues are cut at the end)"""
    max_turns: int = 20
    """turn limit of a session"""
    save_steps: int = 10
    """checkpoint every this many outer steps"""
    eval_set: str = "meta_test"
    """task set of the meta-test (meta_valid, meta_test, meta_test_unseen)"""
    eval_tasks: int = 24
    """meta-test tasks (users); 0: no meta-test"""
    eval_k: str = "0,1,3"
    """history dialogues to adapt on before the target session, comma-separated (each at most history)"""
    max_new_tokens: int = 48
    """token cap of the policy's turns at meta-test"""

    def ks(self) -> list[int]:
        """``eval_k`` as a sorted list of distinct integers."""
        try:
            ks = sorted({int(k) for k in str(self.eval_k).split(",")})
        except ValueError:
            raise MetaConfigError(f"eval_k: expected comma-separated integers, got {self.eval_k!r}") from None
        return ks

    def validate(self) -> None:
        """Raise :class:`MetaConfigError` naming the field and the allowed values."""
        check_common(self, MetaConfigError)
        if self.method not in METHODS:
            raise MetaConfigError(f"method: expected one of {list(METHODS)}, got {self.method!r}")
        check_counts(
            self,
            MetaConfigError,
            positive=("train_tasks", "history", "meta_batch", "max_length", "max_turns", "save_steps",
                      "max_new_tokens", "lora_r", "lora_alpha"),
            non_negative=("outer_steps", "adapt_steps", "target_steps", "eval_tasks", "lora_layers"),
        )  # fmt: skip
        if not self.lora:
            raise MetaConfigError("lora: meta-learning adapts the LoRA weights; --no-lora is not supported here")
        for name in ("inner_lr", "outer_lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise MetaConfigError(f"{name}: expected a number > 0, got {v!r}")
        if self.outer_lr > 1:
            raise MetaConfigError(f"outer_lr: expected a step size in (0, 1], got {self.outer_lr!r}")
        if self.eval_set not in TASK_SETS or self.eval_set == "meta_train":
            allowed = [s for s in TASK_SETS if s != "meta_train"]
            raise MetaConfigError(f"eval_set: expected one of {allowed}, got {self.eval_set!r}")
        ks = self.ks()
        if ks[0] < 0 or ks[-1] > self.history:
            raise MetaConfigError(f"eval_k: each k must be in 0..history ({self.history}), got {self.eval_k!r}")


# -- data: a task's sessions as the planner with memory plays them --------------------------------


@dataclass
class Session:
    """One session of a task: the chat as the policy's prompt lays it out, and the facts around it.

    Attributes:
        messages: The chat (the policy's prompt style: system message, then the dialogue).
        prompt_messages: Leading messages that belong to the prompt.
        earlier: Facts the user had given before this session (what it remembers).
        revealed: Facts the user gave in it (the judge's, privileged).
        heard: What the agent's tracker heard in it (agent-side: what a memory keeps).
        seed: Its reset seed.
        goal: Its goal.
    """

    messages: list[dict[str, str]]
    prompt_messages: int
    earlier: dict[str, str]
    revealed: dict[str, str]
    heard: dict[str, str]
    seed: int
    goal: str


def task_seeds(seed: int, index: int, sessions: int) -> list[int]:
    """Reset seeds of a task's sessions (from the run seed and the task's index: methods share them)."""
    return [int(s) for s in np.random.default_rng([seed, index, 7]).integers(0, 2**31 - 1, size=sessions)]


def merged(sessions: Sequence[Session], field: str) -> dict[str, str]:
    """The union of a field (``revealed`` or ``heard``) over sessions, later ones winning."""
    out: dict[str, str] = {}
    for s in sessions:
        out.update(getattr(s, field))
    return out


def play_session(env: Any, task: Task, goal: str, seed: int, before: Sequence[Session], style: Any) -> Session:
    """One session as ``planner_memory`` plays it after the sessions ``before`` with the same user.

    The dialogue is fresh (the tracker starts empty); the user remembers the facts it gave in
    ``before`` (reset option ``earlier``) and the planner keeps what its tracker heard in them, as in
    ``PersonaRecSessions-v0``.
    """
    from agents.base import make_agent

    told = merged(before, "revealed")
    options: dict[str, Any] = {"persona": task.persona, "goal": goal}
    if told:
        options["earlier"] = told
    obs, info = env.reset(seed=seed, options=options)
    agent = make_agent("planner_memory")
    agent.reset(env, seed=seed)
    agent.memory = merged(before, "heard")
    while True:
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        if terminated or truncated:
            break
    shown = prompt_messages(env, summary=False, style=style)
    n_prompt = len(shown) - len(env.messages())
    return Session(shown, n_prompt, told, dict(env.judge.revealed), dict(env.tracker.known()), seed, goal)


def play_history(task: Task, seeds: Sequence[int], style: Any, split: str, max_turns: int) -> list[Session]:
    """A task's first ``len(seeds)`` sessions, each played by ``planner_memory`` after the ones before it."""
    from dialog_env.envs.persona_rec_text import PersonaRecTextEnv

    env = PersonaRecTextEnv(split=split, max_turns=max_turns)
    out: list[Session] = []
    for i, seed in enumerate(seeds):
        out.append(play_session(env, task, task.goals[i], seed, out, style))
    env.close()
    return out


def play_target(task: Task, history: Sequence[Session], seed: int, style: Any, split: str, max_turns: int) -> Session:
    """The target session (the task's next goal) as ``planner_memory`` plays it after ``history`` alone."""
    from dialog_env.envs.persona_rec_text import PersonaRecTextEnv

    env = PersonaRecTextEnv(split=split, max_turns=max_turns)
    try:
        return play_session(env, task, task.goals[-1], seed, history, style)
    finally:
        env.close()


def encode(tokenizer: Any, session: Session, whole: bool, max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and loss mask of a session: the whole conversation (``whole``) or the agent's turns only.

    Returns None when the session has no agent turn to learn from within ``max_length``.
    """
    from agents.sft import SFTConfigError, tokenize_dialogue

    try:
        ids, mask = tokenize_dialogue(tokenizer, session.messages, session.prompt_messages, user_turns=whole)
    except SFTConfigError:
        return None
    ids, mask = ids[:max_length], mask[:max_length]
    return (ids, mask) if any(mask) else None


def encode_all(tokenizer: Any, sessions: Sequence[Session], whole: bool, max_length: int) -> list[Any]:
    """:func:`encode` of each session, leaving out those with nothing to learn."""
    return [s for s in (encode(tokenizer, x, whole, max_length) for x in sessions) if s is not None]


# -- the inner loop and Reptile's outer step ------------------------------------------------------


def lm_loss(model: Any, sequence: tuple[list[int], list[int]]) -> Any:
    """Mean cross-entropy of the masked tokens of one sequence."""
    import torch

    ids, mask = sequence
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    labels = torch.where(torch.tensor([mask], device=model.device).bool(), x, torch.full_like(x, -100))
    return model(input_ids=x, labels=labels).loss


def trainable(model: Any) -> list[Any]:
    """The parameters meta-learning moves (the LoRA weights)."""
    return [p for p in model.parameters() if p.requires_grad]


def get_weights(params: Sequence[Any]) -> list[Any]:
    """A detached copy of the parameters."""
    return [p.detach().clone() for p in params]


def set_weights(params: Sequence[Any], weights: Sequence[Any]) -> None:
    """Copy ``weights`` into the parameters in place."""
    import torch

    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)


def reptile_update(params: Sequence[Any], start: Sequence[Any], adapted: Sequence[Sequence[Any]], eps: float) -> None:
    """Reptile's outer step: ``phi = start + eps * (mean(adapted) - start)``, written into ``params``.

    Args:
        params: The model's parameters (overwritten).
        start: The weights before the inner loops (``phi``).
        adapted: Each task's weights after its inner loop.
        eps: The outer step size (1: jump to the mean of the adapted weights; 0: stay).
    """
    import torch

    with torch.no_grad():
        for i, p in enumerate(params):
            mean = torch.stack([a[i] for a in adapted]).mean(0)
            p.copy_(start[i] + eps * (mean - start[i]))


def take_steps(model: Any, optimizer: Any, sequences: Sequence[tuple[list[int], list[int]]], steps: int) -> list[float]:
    """``steps`` optimizer steps, one sequence each, cycling through ``sequences``; the losses."""
    losses = []
    if not sequences:
        return losses
    model.train()
    for s in range(steps):
        loss = lm_loss(model, sequences[s % len(sequences)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def inner_optimizer(params: Sequence[Any], lr: float) -> Any:
    """A fresh Adam for one task's inner loop (Reptile's inner optimizer; beta1 = 0 as in its paper)."""
    import torch

    return torch.optim.Adam(params, lr=lr, betas=(0.0, 0.999))


def adapt(
    model: Any, params: Sequence[Any], history: Sequence[tuple[list[int], list[int]]], cfg: MetaTrainConfig
) -> None:
    """Adapt the weights to one user: ``adapt_steps`` steps per history dialogue (fresh optimizer)."""
    take_steps(model, inner_optimizer(params, cfg.inner_lr), history, cfg.adapt_steps * len(history))


# -- the run -------------------------------------------------------------------------------------


CKPT = re.compile(r"^step_(\d+)\.pt$")


def save_checkpoint(run: Path, step: int, params: Sequence[Any], optimizer: Any, log: list[dict[str, Any]]) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically (the older ones but the last two are removed)."""
    import torch

    buf = io.BytesIO()
    torch.save(
        {
            "step": step,
            "weights": [p.detach().cpu() for p in params],
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "log": log,
        },
        buf,
    )
    path = atomic_write_bytes(run / "checkpoints" / f"step_{step}.pt", buf.getvalue())
    for old in sorted(checkpoints(run))[:-2]:
        checkpoints(run)[old].unlink(missing_ok=True)
    return path


def checkpoints(run: Path) -> dict[int, Path]:
    """The run's checkpoint files by step."""
    folder = run / "checkpoints"
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            if m := CKPT.match(p.name):
                found[int(m.group(1))] = p
    return found


def load_checkpoint(run: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint (unreadable ones — a kill in their write — are reported and removed)."""
    import torch

    for tmp in (run / "checkpoints").glob(".*.tmp") if (run / "checkpoints").is_dir() else []:
        print(f"removing {tmp} (an interrupted write)")
        tmp.unlink(missing_ok=True)
    for _, path in sorted(checkpoints(run).items(), reverse=True):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a partial write
            print(f"ignoring unreadable checkpoint {path.name} ({type(e).__name__}): removed")
            path.unlink(missing_ok=True)
    return None


def load_policy(cfg: MetaTrainConfig) -> tuple[Any, Any, str]:
    """The start policy with fresh LoRA adapters, its tokenizer and its prompt style."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dialog_env.lm import prepare_tokenizer

    path = resolve_model_path(cfg.model)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path), name=cfg.model)
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    torch.manual_seed(cfg.seed)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model = get_peft_model(base, lora_config(base, cfg, MetaConfigError))
    return model, tokenizer, policy_prompt(cfg.model)


def train_tasks(cfg: MetaTrainConfig) -> list[Task]:
    """The meta-train task pool (its personas come from the ``train`` split)."""
    from dialog_env.world import load_world

    return make_tasks(load_world(), "meta_train", cfg.train_tasks, sessions=cfg.history + 1, seed=cfg.seed)


def meta_train(cfg: MetaTrainConfig, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) a meta-learning run, then run its meta-test; returns its folder.

    Raises:
        MetaConfigError: Invalid configuration, or a new run over an existing one.
        TrainingInterrupted: SIGINT/SIGTERM; the run is checkpointed and resumable.
    """
    import torch

    cfg.validate()
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / run_name(cfg.exp_name, cfg.seed)
    if not resume:
        open_run(cfg, run, False, MetaConfigError)
    model, tokenizer, style_name = load_policy(cfg)
    style = get_prompt(style_name)
    params = trainable(model)
    optimizer = torch.optim.Adam(params, lr=cfg.inner_lr) if cfg.method == "multitask" else None
    log: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(run) if resume else None
    if state is not None:
        set_weights(params, state["weights"])
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        log, start = list(state["log"]), int(state["step"])
        print(f"resuming {run} from step {start}", flush=True)
    elif resume:
        print(f"resuming {run}: no checkpoint yet, starting over", flush=True)
    tasks = train_tasks(cfg) if cfg.outer_steps else []
    with stop_on_signals():
        for step in range(start, cfg.outer_steps):
            log.append(outer_step(cfg, step, model, tokenizer, params, optimizer, tasks, style))
            print(json.dumps(log[-1]), flush=True)
            if (step + 1) % cfg.save_steps == 0 or step + 1 == cfg.outer_steps or STOP:
                save_checkpoint(run, step + 1, params, optimizer, log)
            if STOP:
                raise TrainingInterrupted(run, f"dialog-env train meta --resume {run}", step + 1)
    if log:
        atomic_write_text(run / "train_log.json", json.dumps(log, indent=1))
        plot_meta_curve(log, run / "meta_curve.png", cfg.method)
    if cfg.eval_tasks:
        result = meta_test(cfg, model, tokenizer, style)
        atomic_write_json(run / "adaptation.json", result)
        plot_adaptation({cfg.method: result["summary"]}, run / "adaptation_curve.png")
        print(adaptation_table({f"{cfg.method} ({run.name})": result["summary"]}))
    merged = model.merge_and_unload()
    save_pretrained_atomic(
        merged,
        tokenizer,
        run / "final_model",
        extra=lambda tmp: save_policy_record(tmp, style.name, trained_by=f"meta-{cfg.method}", model=cfg.model),
    )
    return run


def outer_step(
    cfg: MetaTrainConfig,
    step: int,
    model: Any,
    tokenizer: Any,
    params: Sequence[Any],
    optimizer: Any,
    tasks: Sequence[Task],
    style: Any,
) -> dict[str, Any]:
    """One outer step over ``meta_batch`` tasks (their draws depend only on the run seed and the step)."""
    rng = np.random.default_rng([cfg.seed, step, 11])
    picks = rng.choice(len(tasks), size=cfg.meta_batch, replace=len(tasks) < cfg.meta_batch)
    ks = rng.integers(0, cfg.history + 1, size=cfg.meta_batch)
    phi = get_weights(params)
    adapted, target_losses, adapt_losses = [], [], []
    for index, k in zip(picks.tolist(), ks.tolist(), strict=True):
        seeds = task_seeds(cfg.seed, index, cfg.history + 1)
        sessions = play_history(tasks[index], seeds[:k], style, "train", cfg.max_turns)
        demo = play_target(tasks[index], sessions, seeds[-1], style, "train", cfg.max_turns)
        history = encode_all(tokenizer, sessions, True, cfg.max_length)
        target = encode_all(tokenizer, [demo], False, cfg.max_length)
        if cfg.method == "reptile":
            set_weights(params, phi)
            opt = inner_optimizer(params, cfg.inner_lr)
        else:
            opt = optimizer
        adapt_losses += take_steps(model, opt, history, cfg.adapt_steps * len(history))
        target_losses += take_steps(model, opt, target, cfg.target_steps)
        if cfg.method == "reptile":
            adapted.append(get_weights(params))
    eps = cfg.outer_lr * (1.0 - step / cfg.outer_steps)
    if cfg.method == "reptile":
        reptile_update(params, phi, adapted, eps)
    return {
        "step": step + 1,
        "tasks": picks.tolist(),
        "k": ks.tolist(),
        "target_loss": float(np.mean(target_losses)) if target_losses else math.nan,
        "adapt_loss": float(np.mean(adapt_losses)) if adapt_losses else math.nan,
        **({"eps": eps} if cfg.method == "reptile" else {}),
    }


# -- meta-test -----------------------------------------------------------------------------------


def policy_session(
    model: Any,
    tokenizer: Any,
    style: Any,
    task: Task,
    history: Sequence[Session],
    seed: int,
    cfg: MetaTrainConfig,
    split: str,
) -> dict[str, float]:
    """The policy plays a task's target session after ``history`` (the user remembers it); its metrics."""
    from agents.lm import LMAgent
    from dialog_env import acts as A
    from dialog_env.driver import EpisodeAccumulator
    from dialog_env.envs.persona_rec_text import PersonaRecTextEnv
    from dialog_env.envs.sessions import cross_session_contradictions

    env = PersonaRecTextEnv(split=split, max_turns=cfg.max_turns)
    earlier = merged(history, "revealed")
    options: dict[str, Any] = {"persona": task.persona, "goal": task.goals[-1]}
    if earlier:
        options["earlier"] = earlier
    obs, info = env.reset(seed=seed, options=options)
    agent = LMAgent((model, tokenizer), max_new_tokens=cfg.max_new_tokens, prompt=style.name)
    agent.reset(env, seed=seed)
    acc = EpisodeAccumulator(env, seed)
    asks = re_asks = crossing = 0
    model.eval()
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        acc.add(reward, info)
        ctx = env.last_context
        asked = [a.slot for a in ctx.agent_acts if a.intent == A.ASK]
        asks += len(asked)
        re_asks += sum(s in earlier for s in asked)
        crossing += cross_session_contradictions(ctx) > 0
        if terminated or truncated:
            break
    record = acc.record(info.get("outcome"))
    env.close()
    return {
        "success": float(record.success),
        "return": record.return_,
        "turns": float(record.turns),
        "asks": float(asks),
        "re_asks": float(re_asks),
        "contradiction_rate": record.contradiction_rate,
        "cross_contradiction_rate": crossing / max(1, record.turns),
    }


def meta_test(cfg: MetaTrainConfig, model: Any, tokenizer: Any, style: Any) -> dict[str, Any]:
    """Adapt on ``k`` history dialogues of each meta-test user, then play its target session.

    Returns:
        ``{"eval_set", "tasks", "rows": [{task, k, seed, metrics...}], "summary": {k: {metric: {mean, ci95}}}}``;
        the weights are left as trained.
    """
    from dialog_env.evaluation import mean_ci
    from dialog_env.world import load_world

    ks = cfg.ks()
    tasks = make_tasks(load_world(), cfg.eval_set, cfg.eval_tasks, sessions=cfg.history + 1, seed=cfg.seed + 1)
    split = TASK_SETS[cfg.eval_set]
    params = trainable(model)
    phi = get_weights(params)
    rows = []
    for index, task in enumerate(tasks):
        seeds = task_seeds(cfg.seed + 1, index, cfg.history + 1)
        sessions = play_history(task, seeds[: max(ks)], style, split, cfg.max_turns)
        for k in ks:
            set_weights(params, phi)
            adapt(model, params, encode_all(tokenizer, sessions[:k], True, cfg.max_length), cfg)
            metrics = policy_session(model, tokenizer, style, task, sessions[:k], seeds[-1], cfg, split)
            rows.append({"task": index, "k": k, "seed": seeds[-1], **metrics})
            print(json.dumps(rows[-1]), flush=True)
    set_weights(params, phi)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for k in ks:
        mine = [r for r in rows if r["k"] == k]
        summary[str(k)] = {}
        for m in ADAPTATION_METRICS:
            mean, half = mean_ci([r[m] for r in mine])
            summary[str(k)][m] = {"mean": mean, "ci95": half}
    return {"eval_set": cfg.eval_set, "tasks": len(tasks), "method": cfg.method, "rows": rows, "summary": summary}


# -- reports -------------------------------------------------------------------------------------


def adaptation_table(summaries: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    """A markdown table: one row per method and k."""
    cols = ("success", "return", "contradiction_rate", "cross_contradiction_rate", "asks", "re_asks", "turns")
    lines = ["| method | k | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, summary in summaries.items():
        for k, m in summary.items():
            cells = [f"{m[c]['mean']:.3f} ± {m[c]['ci95']:.3f}" for c in cols]
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_adaptation(summaries: dict[str, dict[str, dict[str, dict[str, float]]]], path: Path) -> Path:
    """Adaptation curves: return and contradiction rate against k, one line per method, 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for (metric, title), ax in zip(
        (("return", "return"), ("success", "success"), ("contradiction_rate", "contradiction rate")), axes, strict=True
    ):
        for i, (name, summary) in enumerate(summaries.items()):
            ks = sorted(summary, key=int)
            x = np.array([int(k) for k in ks], dtype=float) + 0.06 * (i - (len(summaries) - 1) / 2)
            y = [summary[k][metric]["mean"] for k in ks]
            e = [summary[k][metric]["ci95"] for k in ks]
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
        ax.set(xlabel="adaptation dialogues k", title=title)
        ax.set_xticks(sorted({int(k) for s in summaries.values() for k in s}))
    axes[0].legend(fontsize=8)
    fig.suptitle("Adapting to a new user: target session after k dialogues (95% CI)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_meta_curve(log: Sequence[dict[str, Any]], path: Path, method: str) -> Path:
    """Training curve: loss on the target sessions' agent turns per outer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([e["step"] for e in log], [e["target_loss"] for e in log], "o-", ms=3, lw=1, label="target loss")
    ax.plot([e["step"] for e in log], [e["adapt_loss"] for e in log], ".", ms=3, alpha=0.5, label="adaptation loss")
    ax.set(xlabel="outer step", ylabel="cross-entropy", title=f"meta-training ({method})")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


# -- command line ---------------------------------------------------------------------------------


def resume_meta(run_dir: str | Path, outer_steps: int | None = None) -> Path:
    """Continue a run from its newest checkpoint (optionally to a new ``outer_steps``)."""
    run = Path(run_dir)
    cfg = load_run_config(run, MetaTrainConfig, MetaConfigError)
    if outer_steps is not None:
        cfg.outer_steps = outer_steps
    return meta_train(cfg, run_dir=run, resume=True)


def build_meta_parser(p: Any) -> Any:
    """Add the meta-learning arguments to a parser."""
    return add_run_arguments(p, MetaTrainConfig)


def run_meta_from_args(args: Any) -> Path:
    """Shared by ``dialog-env train meta``."""
    if args.resume:
        run = resume_meta(args.resume, outer_steps=args.outer_steps)
    else:
        cfg = MetaTrainConfig(**dataclass_values(MetaTrainConfig, args, MetaConfigError))
        run = meta_train(cfg, run_dir=args.run_dir)
    print(f"run folder: {run} (adaptation.json, adaptation_curve.png, final_model/, checkpoints/)")
    return run
