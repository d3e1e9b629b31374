"""Configuration of SB3 training runs: algorithms, vector envs, hyper-parameter files, ``TrainConfig``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import dialog_env
from dialog_env.persona import SPLITS
from rewards.compose import reward_specs_from_config

ALGOS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO,
    "a2c": A2C,
    "dqn": DQN,
    "maskable_ppo": MaskablePPO,
    "recurrent_ppo": RecurrentPPO,
}
VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
HYPERPARAMS_DIR = Path(__file__).parent.parent / "hyperparams"
_EXTRA_KEYS = {"n_envs", "policy"}
_CHECKPOINT = re.compile(r"^step_(\d+)\.zip$")


class ConfigError(ValueError):
    """A training argument or hyper-parameter is invalid; the message lists what is allowed."""


@dataclass
class TrainConfig:
    """Arguments of an SB3 training run (CleanRL-style: one field, one docstring)."""

    algo: str = "maskable_ppo"
    """algorithm: one of ALGOS (ppo, a2c, dqn, maskable_ppo)"""
    env_id: str = "dialog_env/PersonaRec-v0"
    """a registered dialog_env environment id"""
    total_timesteps: int = 200_000
    """environment steps to train for (over all parallel envs)"""
    seed: int = 0
    """seed of the model and of the training envs"""
    exp_name: str = "sb3"
    """experiment name, part of the run folder name"""
    run_root: str = "runs"
    """folder that holds run folders"""
    vec_env: str = "dummy"
    """vectorisation: dummy (in process) or subproc (one process per env)"""
    n_envs: int | None = None
    """parallel envs; None takes the hyper-parameter file's value"""
    split: str = "train"
    """persona split to train on"""
    eval_split: str = "valid"
    """persona split for evaluation during training"""
    eval_episodes: int = 200
    """dialogues per evaluation"""
    eval_freq: int = 20_000
    """evaluate (and maybe save the best model) every this many env steps"""
    checkpoint_freq: int = 20_000
    """checkpoint every this many env steps"""
    keep_checkpoints: int = 3
    """most recent checkpoints kept on disk"""
    sessions: int = 3
    """sessions per returning user (the PersonaRecSessions envs only)"""
    previous_action_reward: bool = False
    """append the previous action (one-hot) and reward to the observation (RL²; act-id envs)"""
    noise: float = 0.0
    """semantic error rate of the user channel during training and evaluation"""
    user: str = "agenda"
    """user simulator during training and evaluation: agenda, lm:<model>, adv:<run> or package.module:attr"""
    reward_weights: Any = None
    """reward terms: {name: weight}, {name: {weight, kwargs}} or a list of {name, weight, kwargs} (a YAML/JSON string on
    the command line); empty: the default weights"""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """overrides of the hyper-parameter file (e.g. {"learning_rate": 1e-4})"""
    bc_teacher: str = ""
    """clone this agent's play before RL (e.g. planner_memory; a registered, non-privileged agent); empty: no cloning"""
    bc_episodes: int = 2000
    """teacher dialogues to clone (episodes of the training env)"""
    bc_epochs: int = 10
    """passes over the teacher dialogues"""
    bc_lr: float = 1e-3
    """Adam learning rate of the cloning"""
    device: str = "cpu"
    """torch device for the policy"""
    torch_threads: int = 1
    """torch threads (small MLPs run fastest on one)"""
    progress_bar: bool = True
    """show a progress bar"""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field and the allowed values."""
        dialog_env.ENV_IDS  # noqa: B018 - the import registers the environments
        if self.algo not in ALGOS:
            raise ConfigError(f"algo: unknown algorithm {self.algo!r}; expected one of {list(ALGOS)}")
        env_ids = [*dialog_env.ENV_IDS, *dialog_env.SESSION_ENV_IDS]
        if self.env_id not in env_ids:
            raise ConfigError(f"env_id: unknown environment {self.env_id!r}; expected one of {env_ids}")
        if self.env_id == "dialog_env/PersonaRecSessionsText-v0":
            raise ConfigError(
                "env_id: SB3 trains on the act-mode sessions env, dialog_env/PersonaRecSessions-v0 "
                "(the text one's observation is the transcripts)"
            )
        if self.vec_env not in VEC_ENVS:
            raise ConfigError(f"vec_env: expected one of {list(VEC_ENVS)}, got {self.vec_env!r}")
        for name in ("split", "eval_split"):
            if getattr(self, name) not in (*SPLITS, "all"):
                raise ConfigError(f"{name}: unknown split {getattr(self, name)!r}; expected one of {[*SPLITS, 'all']}")
        for name in (
            "total_timesteps",
            "eval_episodes",
            "eval_freq",
            "checkpoint_freq",
            "keep_checkpoints",
            "torch_threads",
            "sessions",
            "bc_episodes",
            "bc_epochs",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {v!r}")
        if self.n_envs is not None and (not isinstance(self.n_envs, int) or self.n_envs < 1):
            raise ConfigError(f"n_envs: expected a positive integer or None, got {self.n_envs!r}")
        if not 0.0 <= float(self.noise) < 1.0:
            raise ConfigError(f"noise: expected a number in [0, 1), got {self.noise!r}")
        if not (isinstance(self.bc_lr, int | float) and not isinstance(self.bc_lr, bool) and self.bc_lr > 0):
            raise ConfigError(f"bc_lr: expected a positive number, got {self.bc_lr!r}")
        from agents.sb3.pretrain import check_teacher

        check_teacher(self.bc_teacher, ConfigError)
        from dialog_env.users.registry import check_user_spec

        check_user_spec(self.user, ConfigError)
        self.reward_weights = reward_specs_from_config(self.reward_weights, error=ConfigError)

    @property
    def sessions_env(self) -> bool:
        """Whether the run trains on returning users (``PersonaRecSessions-v0``)."""
        return self.env_id in dialog_env.SESSION_ENV_IDS

    def env_kwargs(self) -> dict[str, Any]:
        """Env kwargs every env of the run gets (noise, user, reward specs; sessions)."""
        kw: dict[str, Any] = {"noise": self.noise}
        if self.sessions_env:
            kw["sessions"] = self.sessions
        if self.user != "agenda":
            kw["user"] = self.user
        if self.reward_weights is not None:
            kw["reward_weights"] = self.reward_weights
        return kw


def allowed_hyperparams(algo: str) -> list[str]:
    """Hyper-parameter names an algorithm accepts (its constructor arguments plus n_envs, policy)."""
    cls = ALGOS[algo]
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "env", "kwargs"}
    return sorted(params | _EXTRA_KEYS)


def load_hyperparams(algo: str, env_id: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve hyper-parameters: the file's ``default`` block, the env's block, then ``overrides``.

    Raises:
        ConfigError: Unknown algorithm or a hyper-parameter the algorithm does not take.
    """
    if algo not in ALGOS:
        raise ConfigError(f"algo: unknown algorithm {algo!r}; expected one of {list(ALGOS)}")
    path = HYPERPARAMS_DIR / f"{algo}.yml"
    data = yaml.safe_load(path.read_text()) or {}
    params = {**data.get("default", {}), **(data.get(env_id) or {}), **dict(overrides or {})}
    allowed = allowed_hyperparams(algo)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"hyperparams: {algo} does not take {unknown}; allowed: {allowed}")
    return params


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML (numbers, lists, dicts, strings); ``1e-4`` is a number."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"hyperparameter override {item!r}: expected key=value")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string; a learning rate is meant
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out
