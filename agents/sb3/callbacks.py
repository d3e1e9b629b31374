"""Training callbacks: reward-term logging, periodic evaluation and checkpoints, metrics, the learning curve."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.sb3.checkpoints import CHECKPOINT_NAME, atomic_save_model
from agents.sb3.config import TrainConfig
from agents.sb3.policy import SB3Agent
from dialog_env.evaluation import METRICS, evaluate, summarize
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
        found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))
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
