"""Alternating adversarial training: an assistant and a truthful-but-tricky user, round by round.

``dialog-env train adversarial --assistant runs/mppo --rounds 4 --run-dir runs/adv`` plays rounds of

1. **the adversary**: a MaskablePPO user (:class:`~dialog_env.envs.duel.UserSide`) trained against the
   frozen assistant, continuing from the last round's adversary, rewarded for the contradictions and
   failures it draws (``PersonaRecDuel-v0``'s user reward); it joins a pool of the last
   ``pool_size`` adversaries;
2. **the assistant**: the MaskablePPO assistant trained on a mix of dialogues with the agenda user
   (``agenda_fraction`` of the envs) and with adversaries drawn from the pool per dialogue, so it
   neither forgets earlier attacks nor the ordinary user (``agenda_fraction`` 1 is the same-steps
   control: the assistant trains against the agenda user only, in the same schedule);
3. **evaluation** on ``eval_split`` personas (fixed seeds): the assistant before and after its update
   against the round's adversary, and after it against the agenda user.

Every round is written whole before it counts (``rounds/round_<k>/{adversary,assistant}.zip``, with
``reward_states.pkl`` when the assistant's reward has a learned term such as the discriminator, then
``state.json``); ``metrics.json``, TensorBoard scalars (``tb/``) and ``rounds.png`` follow the rounds.
``--resume RUN`` continues after the last complete round (``--rounds`` may raise the total). The
final assistant is ``final_model.zip`` (``sb3:<run>``), the final adversary ``adversary.zip``
(``user="adv:<run>/adversary.zip"``).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.callbacks import BaseCallback

from dialog_env.interrupt import STOP, TrainingInterrupted, stop_on_signals
from dialog_env.persona import SPLITS
from dialog_env.users.adversarial import AdversarialUser

ADVERSARY_HYPERPARAMS: dict[str, Any] = {
    "n_steps": 256,
    "batch_size": 256,
    "n_epochs": 5,
    "learning_rate": 3e-4,
    "ent_coef": 0.01,
    "gamma": 0.99,
}
"""MaskablePPO settings of the adversary (the assistant keeps its own run's, or the project's tuned ones)."""

METRICS = ("success", "contradiction_rate", "return", "turns")
EVAL_SEED = 20_000
"""First seed of the evaluation dialogues (the same every round, so rounds compare)."""
REWARD_STATES = "reward_states.pkl"
"""File of a round with the assistant's learned reward terms (a discriminator's state), when it has any."""


class AdversarialError(ValueError):
    """Invalid arguments of the alternating trainer; the message names the field."""


@dataclass
class AdversarialConfig:
    """Arguments of ``dialog-env train adversarial`` (one field, one docstring)."""

    assistant: str = ""
    """the starting assistant: a MaskablePPO run folder or .zip trained on PersonaRec-v0 (empty: a fresh one)"""
    rounds: int = 4
    """alternating rounds (adversary, then assistant)"""
    adversary_steps: int = 50_000
    """user-side environment steps per round"""
    assistant_steps: int = 50_000
    """assistant-side environment steps per round (0: attack only, the assistant stays frozen and each
    round's adversary is a best response to it)"""
    pool_size: int = 4
    """past adversaries the assistant keeps training against"""
    agenda_fraction: float = 0.5
    """share of the assistant's training envs whose user is the agenda user (1: a control that never meets an
    adversary)"""
    n_envs: int = 4
    """the adversary's training envs (the assistant keeps its own run's count)"""
    split: str = "train"
    """persona split of training"""
    eval_split: str = "valid"
    """persona split of the per-round evaluation"""
    eval_episodes: int = 200
    """dialogues per evaluation"""
    seed: int = 0
    """random seed"""
    contradiction_weight: float = 1.0
    """adversary reward per contradiction drawn"""
    failure_weight: float = 5.0
    """adversary reward per failed dialogue"""
    turn_cost: float = 0.1
    """adversary cost per exchange"""
    noise: float = 0.0
    """semantic error rate of the user channel in training and evaluation (0 / 0.15 / 0.3)"""
    assistant_reward_weights: Any = None
    """the assistant's reward terms in training, as train sb3's --reward-weights (e.g. a larger persona_consistency
    weight); empty: the default weights"""
    torch_threads: int = 1
    """torch threads"""

    def validate(self) -> None:
        """Raise :class:`AdversarialError` naming the bad field and what is allowed."""
        for name in ("rounds", "adversary_steps", "assistant_steps", "pool_size", "n_envs", "eval_episodes"):
            v, least = getattr(self, name), 0 if name == "assistant_steps" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                what = "a non-negative integer (0: attack only)" if least == 0 else "a positive integer"
                raise AdversarialError(f"{name}: expected {what}, got {v!r}")
        if self.assistant_steps == 0 and not self.assistant:
            raise AdversarialError("assistant: attack only (assistant_steps 0) needs a trained assistant to attack")
        if (
            isinstance(self.agenda_fraction, bool)
            or not isinstance(self.agenda_fraction, int | float)
            or not 0.0 <= self.agenda_fraction <= 1.0
        ):
            raise AdversarialError(f"agenda_fraction: expected a number in [0, 1], got {self.agenda_fraction!r}")
        from rewards.compose import reward_specs_from_config

        self.assistant_reward_weights = reward_specs_from_config(
            self.assistant_reward_weights, "assistant_reward_weights", AdversarialError
        )
        for name in ("split", "eval_split"):
            if getattr(self, name) not in (*SPLITS, "all"):
                raise AdversarialError(f"{name}: expected one of {[*SPLITS, 'all']}, got {getattr(self, name)!r}")
        if isinstance(self.noise, bool) or not isinstance(self.noise, int | float) or not 0.0 <= self.noise < 1.0:
            raise AdversarialError(f"noise: expected a semantic error rate in [0, 1), got {self.noise!r}")
        if self.assistant and not Path(self.assistant).exists():
            raise AdversarialError(f"assistant: {self.assistant!r} does not exist (a MaskablePPO run folder or .zip)")

    def duel_kwargs(self) -> dict[str, float]:
        """The user-reward arguments of ``PersonaRecDuel-v0``."""
        return {
            "contradiction_weight": self.contradiction_weight,
            "failure_weight": self.failure_weight,
            "turn_cost": self.turn_cost,
        }


class PoolUser(AdversarialUser):
    """An adversarial user that plays one policy of a pool per dialogue (drawn from the dialogue's user stream)."""

    def __init__(self, world: Any, pool: Sequence[Any]) -> None:
        super().__init__(world, pool[-1])
        self.pool = list(pool)

    def reset(self, persona: Any, goal: str, rng: random.Random, judge: Any = None) -> Any:
        """Draw this dialogue's adversary, then start as any policy user."""
        self.policy = self.pool[rng.randrange(len(self.pool))]
        return super().reset(persona, goal, rng, judge)


# -- the loop ---------------------------------------------------------------------------------------


class _StopOnSignal(BaseCallback):
    """Ends ``learn`` at the next step once a stop is requested (:mod:`dialog_env.interrupt`)."""

    def _on_step(self) -> bool:
        return not STOP


def _evaluate(assistant: Any, cfg: AdversarialConfig, user: str) -> dict[str, Any]:
    from agents.sb3.policy import SB3Agent
    from dialog_env.evaluation import evaluate, summarize

    records = evaluate(
        lambda: SB3Agent(assistant),
        split=cfg.eval_split,
        episodes=cfg.eval_episodes,
        seed=EVAL_SEED,
        mode="act",
        env_kwargs={"user": user, "noise": cfg.noise},
    )
    s = summarize(records)
    return {m: s[m] for m in METRICS}


def _assistant_envs(cfg: AdversarialConfig, pool: Sequence[Any], seed: int, n_envs: int) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dialog_env.envs.persona_rec import PersonaRecEnv
    from dialog_env.wrappers import RewardTermStats

    # At least one env of each kind (all agenda while the pool is empty, and in the control).
    mixed = pool and cfg.agenda_fraction < 1.0
    n_agenda = min(n_envs - 1, max(1, round(cfg.agenda_fraction * n_envs))) if mixed else n_envs
    weights = {"reward_weights": cfg.assistant_reward_weights} if cfg.assistant_reward_weights else {}

    def make(i: int) -> Any:
        env = PersonaRecEnv(split=cfg.split, noise=cfg.noise, **weights)
        if i >= n_agenda:
            env.user = PoolUser(env.world, pool)  # the env's user slot, played by the pool
        return Monitor(RewardTermStats(env))

    venv = DummyVecEnv([lambda i=i: make(i) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def _adversary_envs(cfg: AdversarialConfig, assistant: Any, seed: int) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from dialog_env.envs.duel import UserSide

    venv = DummyVecEnv([
        lambda: Monitor(UserSide(assistant=assistant, split=cfg.split, noise=cfg.noise, **cfg.duel_kwargs()))
        for _ in range(cfg.n_envs)
    ])  # fmt: skip
    venv.seed(seed)
    return venv


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from dialog_env.io import atomic_write_bytes

    r = [row["round"] for row in rows if row["round"] > 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (
        ("before_vs_adversary", "before its update, vs the round's adversary"),
        ("after_vs_adversary", "after, vs the round's adversary"),
        ("after_vs_agenda", "after, vs the agenda user"),
    ):
        for ax, m in zip(axes, ("success", "contradiction_rate"), strict=True):
            vals = [row[key][m] for row in rows if row["round"] > 0]
            means, cis = [v["mean"] for v in vals], [v["ci95"] for v in vals]
            ax.errorbar(r, means, yerr=cis, marker="o", capsize=3, label=label)
    for ax, m in zip(axes, ("success", "contradiction rate"), strict=True):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"assistant {m}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def train_adversarial(
    cfg: AdversarialConfig | None, run_dir: str | Path, resume: bool = False, rounds: int | None = None
) -> Path:
    """Run (or continue) the alternating rounds in ``run_dir``; returns the folder.

    Args:
        cfg: The run's arguments (ignored on resume: the run's own are read back).
        run_dir: The run folder.
        resume: Continue the run in ``run_dir`` after its last complete round.
        rounds: On resume, a new total of rounds (more than the run's).

    Raises:
        AdversarialError: Bad arguments, an existing run without ``resume``, or nothing to resume.
    """
    import torch
    from sb3_contrib import MaskablePPO
    from torch.utils.tensorboard import SummaryWriter

    from agents.sb3.checkpoints import atomic_save_model
    from agents.sb3.config import load_hyperparams
    from dialog_env.io import atomic_write_bytes, atomic_write_json, atomic_write_text
    from rewards.learned import clear_reward_states, restore_reward_states, reward_states

    run = Path(run_dir)
    state_path, metrics_path = run / "state.json", run / "metrics.json"
    if resume:
        if not (run / "config.yaml").is_file():
            raise AdversarialError(f"run_dir: {run} is not an adversarial run (no config.yaml)")
        saved = yaml.safe_load((run / "config.yaml").read_text())
        saved.pop("algo", None)
        cfg = AdversarialConfig(**{**saved, "rounds": max(saved["rounds"], rounds or 0)})
    elif (run / "config.yaml").exists():
        raise AdversarialError(f"run_dir: {run} already holds a run; pass --resume to continue it")
    if cfg is None:
        raise AdversarialError("cfg: a new run needs its arguments")
    cfg.validate()
    torch.set_num_threads(cfg.torch_threads)
    run.mkdir(parents=True, exist_ok=True)
    # ``algo`` lets ``sb3:<run>`` and ``load_model`` read the assistant's zips like any SB3 run's.
    record = {**dataclasses.asdict(cfg), "algo": "maskable_ppo"}
    atomic_write_text(run / "config.yaml", yaml.safe_dump(record, sort_keys=False))
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rounds_done": 0, "pool": []}
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {"rounds": []}
    metrics["rounds"] = [r for r in metrics["rounds"] if r["round"] <= state["rounds_done"]]  # drop a partial round
    done = state["rounds_done"]
    clear_reward_states()  # learned reward terms start untrained, or come back with the last round
    if done:
        print(f"resuming {run} after round {done} of {cfg.rounds}", flush=True)
        saved_terms = run / f"rounds/round_{done}/{REWARD_STATES}"
        if saved_terms.is_file():
            restore_reward_states(pickle.loads(saved_terms.read_bytes()))
        assistant = MaskablePPO.load(run / f"rounds/round_{done}/assistant.zip", device="cpu")
        adversary = MaskablePPO.load(run / f"rounds/round_{done}/adversary.zip", device="cpu")
    elif cfg.assistant:
        from agents.sb3.policy import load_model

        assistant, adversary = load_model(cfg.assistant, "maskable_ppo"), None
    else:
        hp = load_hyperparams("maskable_ppo", "dialog_env/PersonaRec-v0")
        n = int(hp.pop("n_envs", cfg.n_envs))
        policy = hp.pop("policy", "MlpPolicy")
        assistant = MaskablePPO(policy, _assistant_envs(cfg, [], cfg.seed, n), seed=cfg.seed, device="cpu", **hp)
        adversary = None
    assistant.tensorboard_log = str(run / "tb")
    writer = SummaryWriter(str(run / "tb" / "rounds"))
    pool = [MaskablePPO.load(run / p, device="cpu") for p in state["pool"]]
    if not metrics["rounds"]:
        metrics["rounds"].append({"round": 0, "after_vs_agenda": _evaluate(assistant, cfg, "agenda")})
        atomic_write_json(metrics_path, metrics)
    stop = _StopOnSignal()
    resume_cmd = f"dialog-env train adversarial --resume {run}"
    announce = "stopping at the next rollout boundary; the last complete round is the checkpoint"
    with closing(writer), stop_on_signals(announce):
        for k in range(done + 1, cfg.rounds + 1):
            seed = cfg.seed + 1000 * k
            folder = run / "rounds" / f"round_{k}"
            # 1. The adversary against the frozen assistant. Every round seeds its own generators, so
            # a round redone after a resume is the round the uninterrupted run played.
            venv = _adversary_envs(cfg, assistant, seed)
            if adversary is None:
                adversary = MaskablePPO(
                    "MlpPolicy", venv, seed=cfg.seed, device="cpu", tensorboard_log=str(run / "tb"),
                    verbose=0, **ADVERSARY_HYPERPARAMS,
                )  # fmt: skip
            else:
                adversary.set_env(venv)
                adversary.tensorboard_log = str(run / "tb")
            adversary.set_random_seed(seed)
            adversary.learn(cfg.adversary_steps, callback=stop, reset_num_timesteps=False, tb_log_name="adversary")
            venv.close()
            if STOP:
                raise TrainingInterrupted(run, resume_cmd)
            atomic_save_model(adversary, folder / "adversary.zip")
            adv_spec = f"adv:{folder / 'adversary.zip'}"
            before = _evaluate(assistant, cfg, adv_spec)
            pool = [*pool, MaskablePPO.load(folder / "adversary.zip", device="cpu")][-cfg.pool_size :]
            # 2. The assistant against the agenda user and the pool (attack only: it stays frozen).
            if cfg.assistant_steps:
                venv = _assistant_envs(cfg, pool, seed + 1, assistant.n_envs)  # it keeps its own env count
                assistant.set_env(venv)
                assistant.set_random_seed(seed + 1)
                assistant.learn(cfg.assistant_steps, callback=stop, reset_num_timesteps=False, tb_log_name="assistant")
                venv.close()
                if STOP:
                    raise TrainingInterrupted(run, resume_cmd)
            atomic_save_model(assistant, folder / "assistant.zip")
            # 3. Evaluate, then make the round count.
            row = {
                "round": k,
                "before_vs_adversary": before,
                "after_vs_adversary": _evaluate(assistant, cfg, adv_spec) if cfg.assistant_steps else before,
                "after_vs_agenda": _evaluate(assistant, cfg, "agenda"),
                "assistant_timesteps": int(assistant.num_timesteps),
                "adversary_timesteps": int(adversary.num_timesteps),
            }
            terms = reward_states()  # the assistant's learned reward terms (a discriminator), if any
            if terms:
                atomic_write_bytes(folder / REWARD_STATES, pickle.dumps(terms))
            metrics["rounds"].append(row)
            for key in ("before_vs_adversary", "after_vs_adversary", "after_vs_agenda"):
                for m in METRICS:
                    writer.add_scalar(f"{key}/{m}", row[key][m]["mean"], k)
            writer.flush()
            atomic_write_json(metrics_path, metrics)
            state = {"rounds_done": k, "pool": [*state["pool"], str(folder.relative_to(run) / "adversary.zip")]}
            state["pool"] = state["pool"][-cfg.pool_size :]
            atomic_write_json(state_path, state)
            _plot(metrics["rounds"], run / "rounds.png")
            print(_round_line(row), flush=True)
    atomic_save_model(assistant, run / "final_model.zip")
    if adversary is not None:
        atomic_save_model(adversary, run / "adversary.zip")
    return run


def _round_line(row: dict[str, Any]) -> str:
    def f(key: str, m: str) -> str:
        return f"{row[key][m]['mean']:.3f}"

    return (
        f"round {row['round']}: vs its adversary success {f('before_vs_adversary', 'success')} -> "
        f"{f('after_vs_adversary', 'success')}, contradiction rate {f('before_vs_adversary', 'contradiction_rate')} -> "
        f"{f('after_vs_adversary', 'contradiction_rate')}; vs agenda success {f('after_vs_agenda', 'success')}"
    )


# -- command line -----------------------------------------------------------------------------------


def build_adversarial_parser(parser: Any) -> Any:
    """Flags of ``dialog-env train adversarial``."""
    from dialog_env.cliargs import add_dataclass_arguments

    add_dataclass_arguments(parser, AdversarialConfig)
    parser.add_argument("--run-dir", default=None, help="run folder (default: runs/adversarial__<seed>)")
    parser.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue a run after its last complete round"
    )
    parser.add_argument("--config", default=None, help="YAML file of the fields above; flags override it")
    return parser


def run_from_args(args: Any) -> Path:
    """Run ``train adversarial`` from parsed arguments (errors exit with status 2 through the CLI)."""
    from dialog_env.cliargs import dataclass_values

    values = dataclass_values(AdversarialConfig, args, AdversarialError)
    if args.resume:
        return train_adversarial(None, args.resume, resume=True, rounds=values.get("rounds"))
    cfg = AdversarialConfig(**values)
    return train_adversarial(cfg, args.run_dir or f"runs/adversarial__{cfg.seed}")


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m agents.adversarial``: the same as ``dialog-env train adversarial``."""
    import argparse

    parser = build_adversarial_parser(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    return run_from_args(parser.parse_args(argv))
