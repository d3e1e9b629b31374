"""Stable-baselines3 agents on PersonaRec: training runs, checkpoints, resume, and an eval agent.

Modules: :mod:`~agents.sb3.config` (``TrainConfig``, algorithms, hyper-parameter files),
:mod:`~agents.sb3.policy` (``SB3Agent``, ``load_model``), :mod:`~agents.sb3.checkpoints`
(atomic checkpoint files), :mod:`~agents.sb3.callbacks` (evaluation, metrics, the learning
curve), :mod:`~agents.sb3.train` (``train``, ``resume``, the CLI).

A run folder ``runs/<env>__<exp_name>__<seed>__<time>/`` holds ``config.yaml`` (the resolved
configuration), ``checkpoints/`` (``step_<n>.zip``, plus the replay buffer for off-policy
algorithms), ``best_model.zip`` (best mean return on the ``valid`` split), ``final_model.zip``,
``metrics.json`` (the evaluation history), ``learning_curve.png`` and ``tb/`` (TensorBoard).
Every file is written atomically. ``resume(run_dir)`` continues from the last checkpoint with the
step count intact.
"""

from agents.sb3.callbacks import EvalAndCheckpoint, RewardTermLogger, plot_learning_curve, write_metrics
from agents.sb3.checkpoints import CHECKPOINT_NAME, atomic_save_model, latest_checkpoint
from agents.sb3.config import (
    ALGOS,
    HYPERPARAMS_DIR,
    VEC_ENVS,
    ConfigError,
    TrainConfig,
    allowed_hyperparams,
    load_hyperparams,
    parse_overrides,
)
from agents.sb3.policy import SB3Agent, load_model
from agents.sb3.train import (
    build_train_parser,
    config_from_args,
    main,
    make_train_env,
    resume,
    run_from_args,
    run_name,
    train,
)

__all__ = [
    "ALGOS",
    "CHECKPOINT_NAME",
    "HYPERPARAMS_DIR",
    "VEC_ENVS",
    "ConfigError",
    "EvalAndCheckpoint",
    "RewardTermLogger",
    "SB3Agent",
    "TrainConfig",
    "allowed_hyperparams",
    "atomic_save_model",
    "build_train_parser",
    "config_from_args",
    "latest_checkpoint",
    "load_hyperparams",
    "load_model",
    "main",
    "make_train_env",
    "parse_overrides",
    "plot_learning_curve",
    "resume",
    "run_from_args",
    "run_name",
    "train",
    "write_metrics",
]
