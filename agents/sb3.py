"""Stable-baselines3 agents on PersonaRec: training runs, checkpoints, resume, and an eval agent.

A run folder ``runs/<env>__<exp_name>__<seed>__<time>/`` holds ``config.yaml`` (the resolved
configuration), ``checkpoints/`` (``step_<n>.zip``, plus the replay buffer for off-policy
algorithms), ``best_model.zip`` (best mean return on the ``valid`` split), ``final_model.zip``,
``metrics.json`` (the evaluation history), ``learning_curve.png`` and ``tb/`` (TensorBoard).
Every file is written atomically. ``resume(run_dir)`` continues from the last checkpoint with the
step count intact.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import dialog_env
from dialog_env.cliargs import add_dataclass_arguments, dataclass_values
from dialog_env.evaluation import METRICS, evaluate, summarize
from dialog_env.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from dialog_env.persona import SPLITS
from dialog_env.view import AgentView, agent_view
from dialog_env.wrappers import DiscreteActsWrapper, RewardTermStats
from rewards.compose import reward_specs_from_config

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "maskable_ppo": MaskablePPO}
VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
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
    noise: float = 0.0
    """semantic error rate of the user channel during training and evaluation"""
    reward_weights: Any = None
    """reward terms: {name: weight}, {name: {weight, kwargs}} or a list of {name, weight, kwargs} (a YAML/JSON string on
    the command line); empty: the default weights"""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """overrides of the hyper-parameter file (e.g. {"learning_rate": 1e-4})"""
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
        if self.env_id not in dialog_env.ENV_IDS:
            raise ConfigError(
                f"env_id: unknown environment {self.env_id!r}; expected one of {list(dialog_env.ENV_IDS)}"
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
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {v!r}")
        if self.n_envs is not None and (not isinstance(self.n_envs, int) or self.n_envs < 1):
            raise ConfigError(f"n_envs: expected a positive integer or None, got {self.n_envs!r}")
        if not 0.0 <= float(self.noise) < 1.0:
            raise ConfigError(f"noise: expected a number in [0, 1), got {self.noise!r}")
        try:
            self.reward_weights = reward_specs_from_config(self.reward_weights)
        except ValueError as e:
            raise ConfigError(str(e)) from e

    def env_kwargs(self) -> dict[str, Any]:
        """Env kwargs every env of the run gets (noise, reward specs)."""
        kw: dict[str, Any] = {"noise": self.noise}
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
    """Parse ``key=value`` strings; values are read as YAML (numbers, lists, dicts, strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"hyperparameter override {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


# -- environments ------------------------------------------------------------------------------


def _wrap_for_sb3(env: gym.Env) -> gym.Env:
    if isinstance(env.action_space, gym.spaces.Text):
        env = DiscreteActsWrapper(env)
    return RewardTermStats(env)


def make_train_env(cfg: TrainConfig, n_envs: int, seed: int) -> VecEnv:
    """Vectorised, monitored training envs (text envs get :class:`DiscreteActsWrapper`)."""
    return make_vec_env(
        cfg.env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs={"split": cfg.split, "render_mode": None, **cfg.env_kwargs()},
        wrapper_class=_wrap_for_sb3,
        vec_env_cls=VEC_ENVS[cfg.vec_env],
    )


# -- the evaluation agent ----------------------------------------------------------------------


class SB3Agent:
    """An SB3 model as a dialog_env agent (deterministic actions; masks for MaskablePPO).

    Args:
        model: A trained model, or a path: a ``.zip`` file or a run folder (its
            ``best_model.zip``, else ``final_model.zip``, else the last checkpoint).
        algo: The algorithm name when loading a bare ``.zip`` with no ``config.yaml`` beside it.
    """

    name = "sb3"

    def __init__(self, model: BaseAlgorithm | str | Path, algo: str | None = None) -> None:
        self.model = model if isinstance(model, BaseAlgorithm) else load_model(model, algo)
        self.masked = isinstance(self.model, MaskablePPO)

    def reset(self, env: gym.Env | AgentView, seed: int | None = None) -> None:
        """Take the agent's view (the policies are feed-forward: nothing else to reset)."""
        self.core = agent_view(env)
        self.text_mode = self.core.text_actions
        self.encoder = None
        if self.text_mode:
            from dialog_env.wrappers import BeliefEncoder

            self.encoder = BeliefEncoder(self.core)

    def act(self, observation: Any, info: dict[str, Any]) -> int | str:
        """The model's deterministic action (rendered as text in the text env)."""
        obs = self.encoder() if self.encoder is not None else observation
        kwargs = {}
        if self.masked:
            kwargs["action_masks"] = self.core.action_masks() if self.text_mode else info["action_mask"]
        action, _ = self.model.predict(obs, deterministic=True, **kwargs)
        a = int(action)
        return self.core.act_to_text(a) if self.text_mode else a


def load_model(path: str | Path, algo: str | None = None, env: VecEnv | None = None) -> BaseAlgorithm:
    """Load a model from a ``.zip`` or a run folder.

    Raises:
        ConfigError: Nothing loadable at ``path`` or the algorithm cannot be determined.
    """
    path = Path(path)
    zip_path = path
    if path.is_dir():
        candidates = [path / "best_model.zip", path / "final_model.zip"]
        last = latest_checkpoint(path)
        zip_path = next((c for c in candidates if c.is_file()), last)
        if zip_path is None:
            raise ConfigError(f"{path}: no best_model.zip, final_model.zip or checkpoint in this run folder")
    if not zip_path.is_file():
        raise ConfigError(f"{zip_path}: model file not found")
    if algo is None:
        for folder in (zip_path.parent, zip_path.parent.parent):
            cfg = folder / "config.yaml"
            if cfg.is_file():
                algo = (yaml.safe_load(cfg.read_text()) or {}).get("algo")
                break
    if algo not in ALGOS:
        raise ConfigError(f"{zip_path}: cannot tell the algorithm; pass algo= one of {list(ALGOS)}")
    return ALGOS[algo].load(zip_path, env=env, device="cpu")


# -- persistence ---------------------------------------------------------------------------------


def atomic_save_model(model: BaseAlgorithm, path: Path) -> Path:
    """Save a model zip atomically (serialised in memory, then temp file + rename)."""
    buf = io.BytesIO()
    model.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most steps in ``run_dir/checkpoints``, or None."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


# -- callbacks ---------------------------------------------------------------------------------


class RewardTermLogger(BaseCallback):
    """Logs the mean episode sum of every reward term as ``reward/<term>``, and success."""

    def __init__(self) -> None:
        super().__init__()
        self._sums: dict[str, list[float]] = {}
        self._success: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode_reward_terms" in info:
                for k, v in info["episode_reward_terms"].items():
                    self._sums.setdefault(k, []).append(v)
                self._success.append(float(info.get("is_success", False)))
        return True

    def _on_rollout_end(self) -> None:
        for k, v in self._sums.items():
            self.logger.record(f"reward/{k}", float(np.mean(v)))
        if self._success:
            self.logger.record("charts/success_rate", float(np.mean(self._success)))
        self._sums, self._success = {}, []


class EvalAndCheckpoint(BaseCallback):
    """Evaluates on the held-out split, keeps the best model, writes metrics and checkpoints."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.metrics = cfg, run_dir, metrics
        self.next_eval = self._next(cfg.eval_freq)
        self.next_ckpt = self._next(cfg.checkpoint_freq)

    def _next(self, freq: int) -> int:
        done = self.metrics.get("num_timesteps", 0)
        return (done // freq + 1) * freq

    def _on_step(self) -> bool:
        steps = self.num_timesteps
        if steps >= self.next_eval:
            self.evaluate()
            self.next_eval += self.cfg.eval_freq
        if steps >= self.next_ckpt:
            self.checkpoint()
            self.next_ckpt += self.cfg.checkpoint_freq
        return True

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Evaluate the current policy; log ``eval/*``; save ``best_model.zip`` on a new best return."""
        cfg = self.cfg
        records = evaluate(
            lambda: SB3Agent(self.model),
            split=cfg.eval_split,
            episodes=cfg.eval_episodes,
            seed=10_000,  # fixed evaluation personas: evaluations are comparable
            mode="text" if cfg.env_id.endswith("Text-v0") else "act",
            env_kwargs=cfg.env_kwargs(),
        )
        summary = summarize(records)
        for m in METRICS:
            self.logger.record(f"eval/{m}", summary[m]["mean"])
        row = {"num_timesteps": int(self.num_timesteps), "time": time.time(), **{m: summary[m] for m in METRICS}}
        self.metrics["evals"].append(row)
        best = self.metrics.get("best")
        if best is None or summary["return"]["mean"] > best["return"]["mean"]:
            self.metrics["best"] = row
            atomic_save_model(self.model, self.run_dir / "best_model.zip")
        self.metrics["num_timesteps"] = int(self.num_timesteps)
        write_metrics(self.run_dir, self.metrics)
        return summary

    def checkpoint(self) -> Path:
        """Save ``checkpoints/step_<n>.zip`` (and the replay buffer), prune old ones."""
        folder = self.run_dir / "checkpoints"
        path = atomic_save_model(self.model, folder / f"step_{self.num_timesteps}.zip")
        if isinstance(self.model, OffPolicyAlgorithm):
            buf = io.BytesIO()
            self.model.save_replay_buffer(buf)
            atomic_write_bytes(folder / "replay_buffer.pkl", buf.getvalue())
        self.metrics["num_timesteps"] = int(self.num_timesteps)
        write_metrics(self.run_dir, self.metrics)
        found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)))
        for _, old in found[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` and redraw ``learning_curve.png`` (both atomically)."""
    atomic_write_json(run_dir / "metrics.json", metrics)
    if metrics["evals"]:
        plot_learning_curve(metrics, run_dir / "learning_curve.png")


def plot_learning_curve(metrics: dict[str, Any], path: Path) -> Path:
    """Eval success and return (with 95% CIs) against env steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = metrics["evals"]
    x = [e["num_timesteps"] for e in evals]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, m in zip(axes, ("success", "return"), strict=True):
        y = np.array([e[m]["mean"] for e in evals])
        ci = np.array([e[m]["ci95"] for e in evals])
        ax.plot(x, y, marker="o")
        ax.fill_between(x, y - ci, y + ci, alpha=0.25)
        for name, ref in (metrics.get("references") or {}).items():
            if m in ref:
                ax.axhline(ref[m], linestyle="--", linewidth=1, color="gray")
                ax.annotate(name, (x[0], ref[m]), fontsize=8, color="gray", va="bottom")
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"{m} on {metrics['config']['eval_split']}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metrics['config']['algo']} on {metrics['config']['env_id']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# -- training ----------------------------------------------------------------------------------


def run_name(cfg: TrainConfig) -> str:
    """``<env>__<exp_name>__<seed>__<unix time>`` (CleanRL's convention; '/' replaced)."""
    return f"{cfg.env_id.replace('/', '_')}__{cfg.exp_name}__{cfg.seed}__{int(time.time())}"


def _baseline_references(cfg: TrainConfig) -> dict[str, dict[str, float]]:
    from agents.baselines import OracleAgent, RuleAgent

    refs = {}
    for name, cls in (("rule", RuleAgent), ("oracle", OracleAgent)):
        s = summarize(
            evaluate(cls, split=cfg.eval_split, episodes=cfg.eval_episodes, seed=10_000, env_kwargs=cfg.env_kwargs())
        )
        refs[name] = {"success": s["success"]["mean"], "return": s["return"]["mean"]}
    return refs


def train(cfg: TrainConfig, run_dir: str | Path | None = None) -> Path:
    """Train a new run; returns its folder.

    Raises:
        ConfigError: Invalid configuration or hyper-parameters.
    """
    cfg.validate()
    hp = load_hyperparams(cfg.algo, cfg.env_id, cfg.hyperparams)
    run = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / run_name(cfg)
    if (run / "config.yaml").exists():
        raise ConfigError(f"{run}: a run already exists here; use resume to continue it")
    run.mkdir(parents=True, exist_ok=True)
    resolved = {**dataclasses.asdict(cfg), "resolved_hyperparams": hp}
    atomic_write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    metrics = {
        "config": resolved,
        "evals": [],
        "best": None,
        "num_timesteps": 0,
        "references": _baseline_references(cfg),
    }
    return _learn(cfg, hp, run, metrics, model=None)


def resume(run_dir: str | Path, total_timesteps: int | None = None, progress_bar: bool | None = None) -> Path:
    """Continue a run from its last checkpoint up to its (or a new) ``total_timesteps``.

    Raises:
        ConfigError: No run or no checkpoint in ``run_dir``.
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
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise ConfigError(f"{run}: no checkpoint to resume from (checkpoints/step_<n>.zip)")
    metrics_path = run / "metrics.json"
    metrics = (
        json.loads(metrics_path.read_text())
        if metrics_path.is_file()
        else {"config": resolved, "evals": [], "best": None}
    )
    steps = int(_CHECKPOINT.match(ckpt.name).group(1))  # type: ignore[union-attr]
    print(f"resuming {run} from step {steps} ({ckpt.name}) to {cfg.total_timesteps}", flush=True)
    metrics["num_timesteps"] = steps
    # Evaluations logged after the checkpoint belong to the lost part of the run.
    metrics["evals"] = [e for e in metrics["evals"] if e["num_timesteps"] <= steps]
    return _learn(cfg, hp, run, metrics, model=ckpt)


def _learn(cfg: TrainConfig, hp: dict[str, Any], run: Path, metrics: dict[str, Any], model: Path | None) -> Path:
    import torch

    torch.set_num_threads(cfg.torch_threads)
    hp = copy.deepcopy(hp)  # SB3 mutates some of it (A2C adds its optimizer class to policy_kwargs)
    n_envs = cfg.n_envs or int(hp.pop("n_envs", 1))
    hp.pop("n_envs", None)
    policy = hp.pop("policy", "MlpPolicy")
    done = int(metrics.get("num_timesteps", 0))
    # A resumed run gets fresh env seeds (offset by the steps done) so it does not replay the start.
    venv = make_train_env(cfg, n_envs, seed=cfg.seed + done)
    algo_cls = ALGOS[cfg.algo]
    try:
        if model is None:
            algo = algo_cls(
                policy, venv, seed=cfg.seed, device=cfg.device, tensorboard_log=str(run / "tb"), verbose=0, **hp
            )
        else:
            algo = algo_cls.load(model, env=venv, device=cfg.device, tensorboard_log=str(run / "tb"))
            buffer = model.parent / "replay_buffer.pkl"
            if isinstance(algo, OffPolicyAlgorithm) and buffer.is_file():
                algo.load_replay_buffer(buffer)
        evaluator = EvalAndCheckpoint(cfg, run, metrics)
        remaining = max(0, cfg.total_timesteps - algo.num_timesteps)
        if remaining:
            algo.learn(
                total_timesteps=remaining,
                callback=CallbackList([RewardTermLogger(), evaluator]),
                tb_log_name="run",
                reset_num_timesteps=model is None,
                progress_bar=cfg.progress_bar,
            )
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
