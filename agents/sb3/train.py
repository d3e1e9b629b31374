"""SB3 training runs: vectorised envs, train, resume, and the command line."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.sb3.callbacks import EvalAndCheckpoint, RewardTermLogger, write_metrics
from agents.sb3.checkpoints import (
    atomic_save_model,
    clean_run,
    load_state,
    restore_best_model,
    restore_env_reward_states,
    restore_rng,
    restore_runtime,
)
from agents.sb3.config import ALGOS, VEC_ENVS, ConfigError, TrainConfig, load_hyperparams, parse_overrides
from agents.sb3.recurrent import POLICIES
from dialog_env.cliargs import add_dataclass_arguments, dataclass_values
from dialog_env.embedding_service import EmbeddingService, needs_embedder
from dialog_env.evaluation import evaluate, summarize
from dialog_env.interrupt import TrainingInterrupted, stop_on_signals
from dialog_env.io import atomic_write_text
from dialog_env.wrappers import ActionMaskObservation, DiscreteActsWrapper, PreviousActionReward, RewardTermStats
from rewards.learned import clear_reward_states, restore_reward_states, reward_states

# -- environments ------------------------------------------------------------------------------


class Snapshot(gym.Wrapper):
    """Outermost training wrapper: ``snapshot()`` pickles the whole env, mid-episode, for a checkpoint."""

    def snapshot(self) -> bytes:
        """The env (wrappers, user, tracker, random generators) as bytes; ``cloudpickle.loads`` restores it."""
        import cloudpickle

        return cloudpickle.dumps(self)

    def process_id(self) -> int:
        """The process the env runs in (envs of one process share their learned reward terms)."""
        return os.getpid()

    def reward_states(self) -> list[dict[str, Any]]:
        """This process's learned reward terms' states (:func:`rewards.learned.reward_states`)."""
        return reward_states()

    def restore_reward_states(self, states: list[dict[str, Any]]) -> int:
        """Load saved learned-reward states into this process's terms (``rewards.learned.restore_reward_states``)."""
        return restore_reward_states(states)


def _wrap_for_sb3(env: gym.Env, previous_action_reward: bool = False, mask_in_observation: bool = False) -> gym.Env:
    if isinstance(env.action_space, gym.spaces.Text):
        env = DiscreteActsWrapper(env)
    env = RewardTermStats(env)
    if previous_action_reward:
        env = PreviousActionReward(env)
    if mask_in_observation:
        env = ActionMaskObservation(env)
    return Snapshot(env)


def make_train_env(
    cfg: TrainConfig,
    n_envs: int,
    seed: int,
    snapshots: Sequence[bytes] | None = None,
    mask_in_observation: bool = False,
) -> VecEnv:
    """Vectorised, monitored training envs (text envs get :class:`DiscreteActsWrapper`).

    Args:
        cfg: The run's configuration.
        n_envs: Parallel envs.
        seed: Seed of the first env (SB3 seeds env ``i`` with ``seed + i``).
        snapshots: Pickled envs of a checkpoint; they continue their dialogues instead of new envs.
        mask_in_observation: Append the action mask to observations (a policy that reads it there).
    """
    env_kwargs: dict[str, Any] = {"split": cfg.split, "render_mode": None, **cfg.env_kwargs()}
    # Subprocess envs that embed sentences share one embedder (model, cache, batches) in a server process.
    service = EmbeddingService() if cfg.vec_env == "subproc" and needs_embedder(env_kwargs) else None
    try:
        if snapshots is not None:
            import cloudpickle

            fns = [functools.partial(cloudpickle.loads, blob) for blob in snapshots]
            venv = VEC_ENVS[cfg.vec_env](fns)
            if service is not None:
                venv.env_method("use_embedder", service.client())
        else:
            if service is not None:
                env_kwargs["embedder"] = service.client()
            venv = _make_vec_env(cfg, n_envs, seed, env_kwargs, mask_in_observation)
    except BaseException:
        if service is not None:
            service.close()
        raise
    return venv if service is None else SharedEmbeddings(venv, service)


class SharedEmbeddings(VecEnvWrapper):
    """A vector env whose envs embed through one :class:`~dialog_env.embedding_service.EmbeddingService`.

    Closing it stops the service.
    """

    def __init__(self, venv: VecEnv, service: EmbeddingService) -> None:
        super().__init__(venv)
        self.service = service

    def reset(self) -> Any:  # noqa: D102
        return self.venv.reset()

    def step_wait(self) -> Any:  # noqa: D102
        return self.venv.step_wait()

    def close(self) -> None:  # noqa: D102
        try:
            self.venv.close()
        finally:
            self.service.close()


def _make_vec_env(
    cfg: TrainConfig, n_envs: int, seed: int, env_kwargs: dict[str, Any], mask_in_observation: bool
) -> VecEnv:
    return make_vec_env(
        cfg.env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        wrapper_class=functools.partial(
            _wrap_for_sb3,
            previous_action_reward=cfg.previous_action_reward,
            mask_in_observation=mask_in_observation,
        ),
        vec_env_cls=VEC_ENVS[cfg.vec_env],
    )


# -- training ----------------------------------------------------------------------------------


def run_name(cfg: TrainConfig) -> str:
    """``<env>__<exp_name>__<seed>__<unix time>`` (CleanRL's convention; '/' replaced)."""
    return f"{cfg.env_id.replace('/', '_')}__{cfg.exp_name}__{cfg.seed}__{int(time.time())}"


def _baseline_references(cfg: TrainConfig) -> dict[str, dict[str, float]]:
    from agents.baselines import OracleAgent, RuleAgent, RuleMemoryAgent

    refs = {}
    if cfg.sessions_env:
        from dialog_env.envs.sessions import evaluate_sessions, summarize_sessions_run

        for name, cls in (("rule", RuleAgent), ("rule_memory", RuleMemoryAgent)):
            rows = evaluate_sessions(
                cls, split=cfg.eval_split, episodes=cfg.eval_episodes, seed=10_000, env_kwargs=cfg.env_kwargs()
            )
            s = summarize_sessions_run(rows)
            refs[name] = {"success": s["success"]["mean"], "return": s["return"]["mean"]}
        return refs
    for name, cls in (("rule", RuleAgent), ("oracle", OracleAgent)):
        s = summarize(
            evaluate(cls, split=cfg.eval_split, episodes=cfg.eval_episodes, seed=10_000, env_kwargs=cfg.env_kwargs())
        )
        refs[name] = {"success": s["success"]["mean"], "return": s["return"]["mean"]}
    return refs


def _fresh_metrics(cfg: TrainConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": resolved,
        "evals": [],
        "best": None,
        "num_timesteps": 0,
        "references": _baseline_references(cfg),
    }


def _clone_teacher(cfg: TrainConfig, algo: Any, metrics: dict[str, Any], mask_in_observation: bool) -> None:
    """Behaviour cloning of ``cfg.bc_teacher`` before RL (:mod:`agents.sb3.pretrain`); its figures go to metrics."""
    from agents.sb3.pretrain import DEMO_SEED_OFFSET, behaviour_clone, play_teacher

    env_kwargs: dict[str, Any] = {"split": cfg.split, "render_mode": None, **cfg.env_kwargs()}

    def make_env() -> gym.Env:
        return _wrap_for_sb3(
            gym.make(cfg.env_id, **env_kwargs),
            previous_action_reward=cfg.previous_action_reward,
            mask_in_observation=mask_in_observation,
        )

    print(f"cloning {cfg.bc_teacher}: {cfg.bc_episodes} dialogues, {cfg.bc_epochs} epochs", flush=True)
    episodes = play_teacher(make_env, cfg.bc_teacher, cfg.bc_episodes, seed=cfg.seed + DEMO_SEED_OFFSET)
    stats = behaviour_clone(algo, episodes, cfg.bc_epochs, cfg.bc_lr, seed=cfg.seed)
    metrics["bc"] = {
        "teacher": cfg.bc_teacher,
        "episodes": len(episodes),
        "steps": sum(len(e.actions) for e in episodes),
        "teacher_return": float(np.mean([sum(e.rewards) for e in episodes])),
        **stats,
    }
    print(f"cloned: accuracy {stats['accuracy']:.3f}, loss {stats['loss']:.3f}", flush=True)


def resume_command(run: Path) -> str:
    """The command that continues ``run``."""
    return f"dialog-env train sb3 --resume {run}"


def train(cfg: TrainConfig, run_dir: str | Path | None = None) -> Path:
    """Train a new run; returns its folder.

    Raises:
        ConfigError: Invalid configuration or hyper-parameters.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after a checkpoint.
    """
    cfg.validate()
    hp = load_hyperparams(cfg.algo, cfg.env_id, cfg.hyperparams)
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / run_name(cfg)
    if (run / "config.yaml").exists():
        raise ConfigError(f"{run}: a run already exists here; use resume to continue it")
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    resolved = {**dataclasses.asdict(cfg), "resolved_hyperparams": hp}
    atomic_write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    clear_reward_states()  # a fresh run starts untrained learned reward terms, whatever ran before in this process
    try:
        return _learn(cfg, hp, run, _fresh_metrics(cfg, resolved), checkpoint=None)
    except ConfigError:  # rejected before any training: leave no run behind that would block a corrected rerun
        if created:
            shutil.rmtree(run, ignore_errors=True)
        else:
            (run / "config.yaml").unlink(missing_ok=True)
        raise


def resume(run_dir: str | Path, total_timesteps: int | None = None, progress_bar: bool | None = None) -> Path:
    """Continue a run from its newest complete checkpoint up to its (or a new) ``total_timesteps``.

    Partial checkpoints and temp files (a kill during a write) are reported and removed. A run
    killed before its first checkpoint starts over. Metrics and ``best_model.zip`` are put back as
    they were at the checkpoint, so nothing of the discarded part of the run remains.

    Raises:
        ConfigError: ``run_dir`` is not a run folder.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run again after a checkpoint.
    """
    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run}: not a run folder (no config.yaml)")
    resolved = yaml.safe_load(cfg_path.read_text())
    hp = resolved.pop("resolved_hyperparams")
    cfg = TrainConfig(**resolved)
    if total_timesteps is not None:
        cfg.total_timesteps = total_timesteps
    if progress_bar is not None:
        cfg.progress_bar = progress_bar
    cfg.validate()
    resolved["resolved_hyperparams"] = hp
    ckpt = clean_run(run).latest
    clear_reward_states()  # learned reward terms come back from the checkpoint, not from this process's past
    if ckpt is None:
        print(f"resuming {run}: no complete checkpoint yet, starting over", flush=True)
        (run / "best_model.zip").unlink(missing_ok=True)
        return _learn(cfg, hp, run, _fresh_metrics(cfg, resolved), checkpoint=None)
    state = load_state(ckpt)
    metrics = state["metrics"]
    metrics["config"] = {**resolved, "total_timesteps": cfg.total_timesteps}
    restore_best_model(ckpt, run)
    write_metrics(run, metrics)
    print(f"resuming {run} from step {state['num_timesteps']} ({ckpt.name}) to {cfg.total_timesteps}", flush=True)
    return _learn(cfg, hp, run, metrics, checkpoint=ckpt, state=state)


def _learn(
    cfg: TrainConfig,
    hp: dict[str, Any],
    run: Path,
    metrics: dict[str, Any],
    checkpoint: Path | None,
    state: dict[str, Any] | None = None,
) -> Path:
    import torch

    torch.set_num_threads(cfg.torch_threads)
    hp = copy.deepcopy(hp)  # SB3 mutates some of it (A2C adds its optimizer class to policy_kwargs)
    n_envs = cfg.n_envs or int(hp.pop("n_envs", 1))
    hp.pop("n_envs", None)
    policy = hp.pop("policy", "MlpPolicy")
    policy = POLICIES.get(policy, policy)
    done = int(metrics.get("num_timesteps", 0))
    snapshots = state["envs"] if state else None
    # Without env snapshots (an env that cannot be pickled) a resumed run gets fresh env seeds,
    # offset by the steps done, so it does not replay the start.
    venv = make_train_env(
        cfg, n_envs, seed=cfg.seed + done, snapshots=snapshots, mask_in_observation=policy in POLICIES.values()
    )
    algo_cls = ALGOS[cfg.algo]
    try:
        if state and state.get("reward_states"):
            restore_env_reward_states(venv, state["reward_states"])
        if checkpoint is None:
            try:
                algo = algo_cls(
                    policy, venv, seed=cfg.seed, device=cfg.device, tensorboard_log=str(run / "tb"), verbose=0, **hp
                )
            except (TypeError, ValueError, AssertionError) as e:  # SB3 checks its arguments with asserts
                raise ConfigError(f"hyperparams: {cfg.algo} rejected {hp}: {e}") from e
        else:
            # With the envs restored mid-dialogue, the saved last observation is theirs: no reset.
            algo = algo_cls.load(
                checkpoint,
                env=venv,
                device=cfg.device,
                tensorboard_log=str(run / "tb"),
                force_reset=snapshots is None,
            )
            buffer = checkpoint.with_name(checkpoint.name.replace(".zip", ".replay_buffer.pkl"))
            if isinstance(algo, OffPolicyAlgorithm) and buffer.is_file():
                algo.load_replay_buffer(buffer)
            restore_rng(algo, state["rng"])  # type: ignore[index]  # after load, which reseeds
            restore_runtime(algo, state)  # type: ignore[arg-type]
        evaluator = EvalAndCheckpoint(cfg, run, metrics)
        if checkpoint is None and cfg.bc_teacher:
            _clone_teacher(cfg, algo, metrics, mask_in_observation=policy in POLICIES.values())
            # The learning curve starts at the cloned policy; this is the logger learn() would make.
            algo.set_logger(configure_logger(algo.verbose, algo.tensorboard_log, "run", True))
            evaluator.init_callback(algo)
            evaluator.evaluate()
        remaining = max(0, cfg.total_timesteps - algo.num_timesteps)
        with stop_on_signals():
            if remaining:
                algo.learn(
                    total_timesteps=remaining,
                    callback=CallbackList([RewardTermLogger(), evaluator]),
                    tb_log_name="run",
                    reset_num_timesteps=checkpoint is None,
                    progress_bar=cfg.progress_bar,
                )
            if evaluator.stopped_at is not None:
                raise TrainingInterrupted(run, resume_command(run), evaluator.stopped_at)
            if not remaining:
                evaluator.init_callback(algo)
            evaluator.num_timesteps = algo.num_timesteps
            if not metrics["evals"] or metrics["evals"][-1]["num_timesteps"] != algo.num_timesteps:
                evaluator.evaluate()
            atomic_save_model(algo, run / "final_model.zip")
            evaluator.checkpoint()
    finally:
        venv.close()
    return run


# -- command line ----------------------------------------------------------------------------


def build_train_parser(parser: Any | None = None) -> Any:
    """Arguments of ``train_sb3.py`` / ``dialog-env train sb3``, one per :class:`TrainConfig` field."""
    import argparse

    p = parser or argparse.ArgumentParser(description="Train a stable-baselines3 agent on a PersonaRec environment.")
    add_dataclass_arguments(p, TrainConfig, skip={"hyperparams"})
    p.add_argument(
        "--hp", dest="hyperparams", action="append", default=[], metavar="KEY=VALUE", help="hyper-parameter override"
    )
    p.add_argument("--config", default=None, help="YAML file of TrainConfig fields; flags override it")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.add_argument("--run-dir", default=None, help="exact run folder (default: <run-root>/<run name>)")
    return p


def config_from_args(args: Any) -> TrainConfig:
    """Merge ``--config`` YAML and flags into a :class:`TrainConfig`.

    Raises:
        ConfigError: Unknown keys in the YAML file, or invalid values.
    """
    values = dataclass_values(TrainConfig, args, ConfigError, skip={"hyperparams"})
    if args.hyperparams:
        values["hyperparams"] = {**values.get("hyperparams", {}), **parse_overrides(args.hyperparams)}
    cfg = TrainConfig(**values)
    cfg.validate()
    load_hyperparams(cfg.algo, cfg.env_id, cfg.hyperparams)
    return cfg


def main(argv: Sequence[str] | None = None) -> Path:
    """Train (or resume) from command-line arguments; prints where the run is."""
    args = build_train_parser().parse_args(argv)
    return run_from_args(args)


def run_from_args(args: Any) -> Path:
    """Shared by the script and the CLI."""
    if args.resume:
        run = resume(args.resume, total_timesteps=args.total_timesteps, progress_bar=args.progress_bar)
    else:
        run = train(config_from_args(args), run_dir=args.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics.get("best") or {}
    if best:
        print(
            f"best on {metrics['config']['eval_split']} at {best['num_timesteps']} steps: "
            f"success {best['success']['mean']:.3f} ± {best['success']['ci95']:.3f}, "
            f"return {best['return']['mean']:.2f} ± {best['return']['ci95']:.2f}"
        )
    print(f"run folder: {run} (best_model.zip, learning_curve.png, metrics.json, tb/)")
    return run
