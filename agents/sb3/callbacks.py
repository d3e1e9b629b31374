"""Training callbacks: reward-term logging, periodic evaluation and checkpoints, metrics, the learning curve."""

from __future__ import annotations

import copy
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.sb3.checkpoints import atomic_save_model, save_checkpoint
from agents.sb3.config import TrainConfig
from agents.sb3.policy import SB3Agent
from dialog_env.evaluation import METRICS, evaluate, summarize
from dialog_env.interrupt import STOP
from dialog_env.io import atomic_write_bytes, atomic_write_json

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
    """Evaluates on the held-out split, keeps the best model, writes metrics and checkpoints.

    Evaluations run when their step count is crossed (the weights only change between rollouts, so
    an evaluation mid-rollout sees the last update's). Checkpoints wait for the next rollout
    boundary, after the update of the rollout just collected, so a resume neither repeats nor loses
    an update. A stop request (:data:`dialog_env.interrupt.STOP`) checkpoints at that boundary too,
    then ends training.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.metrics = cfg, run_dir, metrics
        self.next_eval = self._next(cfg.eval_freq)
        self.next_ckpt = self._next(cfg.checkpoint_freq)
        self.checkpoint_due = False
        self.stopped_at: int | None = None

    def _next(self, freq: int) -> int:
        done = self.metrics.get("num_timesteps", 0)
        return (done // freq + 1) * freq

    def _on_rollout_start(self) -> None:
        if STOP and self.stopped_at is None:
            self.checkpoint()
            self.stopped_at = int(self.model.num_timesteps)
        elif self.checkpoint_due:
            self.checkpoint()
            self.checkpoint_due = False

    def _on_step(self) -> bool:
        if self.stopped_at is not None:
            return False
        steps = self.num_timesteps
        if steps >= self.next_eval:
            self.evaluate()
            self.next_eval += self.cfg.eval_freq
        if steps >= self.next_ckpt:
            self.checkpoint_due = True
            self.next_ckpt += self.cfg.checkpoint_freq
        return True

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Evaluate the current policy; log ``eval/*``; save ``best_model.zip`` on a new best return."""
        cfg = self.cfg
        if cfg.sessions_env:
            from dialog_env.envs.sessions import evaluate_sessions, summarize_sessions_run

            summary = summarize_sessions_run(
                evaluate_sessions(
                    lambda: SB3Agent(self.model),
                    split=cfg.eval_split,
                    episodes=cfg.eval_episodes,
                    seed=10_000,
                    env_kwargs=cfg.env_kwargs(),
                    previous_action_reward=cfg.previous_action_reward,
                )
            )
        else:
            records = evaluate(
                lambda: SB3Agent(self.model),
                split=cfg.eval_split,
                episodes=cfg.eval_episodes,
                seed=10_000,  # fixed evaluation personas: evaluations are comparable
                mode="text" if cfg.env_id.endswith("Text-v0") else "act",
                env_kwargs=cfg.env_kwargs(),
            )
            summary = summarize(records)
            summary = {m: summary[m] for m in METRICS}
        for m, v in summary.items():
            self.logger.record(f"eval/{m}", v["mean"])
        row = {"num_timesteps": int(self.num_timesteps), "time": time.time(), **summary}
        self.metrics["evals"].append(row)
        best = self.metrics.get("best")
        if best is None or summary["return"]["mean"] > best["return"]["mean"]:
            self.metrics["best"] = row
            atomic_save_model(self.model, self.run_dir / "best_model.zip")
        self.metrics["num_timesteps"] = int(self.num_timesteps)
        write_metrics(self.run_dir, self.metrics)
        return summary

    def checkpoint(self) -> Path:
        """Write a complete checkpoint (see :mod:`agents.sb3.checkpoints`) and prune old ones."""
        self.metrics["num_timesteps"] = int(self.model.num_timesteps)
        write_metrics(self.run_dir, self.metrics)
        return save_checkpoint(
            self.model, self.model.get_env(), self.run_dir, copy.deepcopy(self.metrics), self.cfg.keep_checkpoints
        )


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
