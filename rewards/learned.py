"""A learned reward: a discriminator between a teacher's turns and the policy's (GDPL / AIRL style).

:class:`DiscriminatorReward` scores each agent turn by ``log D - log(1 - D)`` (the logit of ``D``, AIRL's
reward), where ``D(s, a)`` is a small MLP's probability that the turn came from the teacher's
dialogues rather than from the policy being trained. It learns *while it scores*: every turn the env
asks it about is kept as a policy sample, and every ``update_every`` turns ``D`` takes a few gradient
steps telling those from the teacher's turns — the reward model updated during training through the
env's own reward call, for SB3 and for GRPO alike (``rewards.to_trl``).

The features of a turn are agent-side only (:func:`turn_features`): what the tracker knew before it
(known, asked, declined slots, rejected items, the turn), what the agent did (intents, slots asked
or referred to) and what the catalog says of a recommended item against the known facts. The
teacher's turns come from dialogues the teacher (``planner`` by default, any non-privileged agent)
plays in act mode on ``split`` personas when the reward is built.

Envs of one process built with the same arguments share one discriminator (so a vectorised SB3 run
trains one model on every env's turns). Under ``SubprocVecEnv`` each process has its own.

It is state that training must not lose: :func:`reward_states` returns every discriminator of the
process (weights, optimiser, the kept policy turns, counters, random generator) and
:func:`restore_reward_states` puts them back, so the trainers' checkpoints (SB3's ``train sb3``, GRPO's
``train lm``, ``train adversarial``) carry it and a resumed run is the uninterrupted one.
:func:`clear_reward_states` forgets them, so a fresh run starts from an untrained discriminator.

Use as a weighted term::

    reward_weights = {**DEFAULT_WEIGHTS, "rewards.learned:DiscriminatorReward": {"weight": 1.0, "kwargs": {}}}
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from dialog_env import acts as A
from dialog_env.context import TurnContext
from dialog_env.world import World

_SHARED: dict[tuple, DiscriminatorReward] = {}
_LOCK = threading.Lock()


def feature_dim(world: World) -> int:
    """Length of :func:`turn_features`' vectors."""
    s = len(world.slots)
    return 5 * s + len(A.AGENT_INTENTS) + 6


def turn_features(ctx: TurnContext) -> np.ndarray:
    """Agent-side features of one turn: the state before it and what the agent did (see the module docstring)."""
    w, before = ctx.world, ctx.before
    s = len(w.slots)
    f = np.zeros(feature_dim(w), dtype=np.float32)
    slot_of = w.slot
    for slot in before.known:
        f[slot_of[slot].index] = 1.0
    for slot in before.asked:
        f[s + slot_of[slot].index] = 1.0
    for slot in before.declined:
        f[2 * s + slot_of[slot].index] = 1.0
    at = 5 * s
    rec = None
    for a in ctx.agent_acts:
        f[at + A.AGENT_INTENTS.index(a.intent)] = 1.0
        if a.intent == A.ASK:
            f[3 * s + slot_of[a.slot].index] = 1.0  # type: ignore[index]
        elif a.intent in (A.CONFIRM, A.INFORM):
            f[4 * s + slot_of[a.slot].index] = 1.0  # type: ignore[index]
        elif a.intent == A.RECOMMEND and rec is None:
            rec = w.item[a.value]  # type: ignore[index]
    at += len(A.AGENT_INTENTS)
    f[at] = min(1.0, ctx.turn / 20)
    f[at + 1] = min(1.0, len(before.rejected) / 3)
    if rec is not None:
        known = before.known
        f[at + 2] = float(rec.category == ctx.goal)  # the goal is the user's opening request
        f[at + 3] = min(1.0, len(rec.violated_slots(known)))
        f[at + 4] = min(1.0, len(rec.appealing_slots(known)) / 3)
        f[at + 5] = float(rec.id in before.rejected)
    return f


def teacher_features(teacher: str, episodes: int, split: str, seed: int) -> np.ndarray:
    """The turn features of ``episodes`` act-mode dialogues played by ``teacher`` (non-privileged)."""
    from agents import make_agent
    from agents.base import is_privileged
    from dialog_env.driver import AgentPolicy, DialogueDriver
    from dialog_env.envs.persona_rec import PersonaRecEnv

    agent = make_agent(teacher)
    if is_privileged(agent):
        raise ValueError(f"teacher: {teacher!r} reads the hidden persona; a discriminator learns from what is heard")
    rows: list[np.ndarray] = []
    seeds = range(seed, seed + episodes)
    DialogueDriver([PersonaRecEnv(split=split)]).play(
        AgentPolicy([agent]), seeds, on_step=lambda step: rows.append(turn_features(step.context))
    )
    return np.stack(rows)


class DiscriminatorReward:
    """The learned term (see the module docstring).

    Args:
        teacher: The agent whose turns count as demonstrations.
        episodes: Teacher dialogues.
        split: Their persona split.
        seed: Seed of the teacher's dialogues and of the discriminator.
        update_every: Scored policy turns between updates.
        steps: Gradient steps per update (batches of ``batch`` teacher and ``batch`` policy turns).
        batch: Turns of each side per gradient step.
        lr: Adam learning rate.
        clip: The reward is the logit clipped to ``[-clip, clip]``.
        buffer: Most recent policy turns kept.

    Raises:
        ValueError: A bad argument (the message names it).
    """

    __name__ = "discriminator"

    def __new__(cls, **kwargs: Any) -> DiscriminatorReward:
        """One shared instance per argument set within a process."""
        key = tuple(sorted(kwargs.items()))
        with _LOCK:
            if key not in _SHARED:
                inst = super().__new__(cls)
                inst._built, inst._kwargs = False, dict(kwargs)
                _SHARED[key] = inst
            return _SHARED[key]

    def __init__(
        self,
        *,
        teacher: str = "planner",
        episodes: int = 300,
        split: str = "train",
        seed: int = 0,
        update_every: int = 2048,
        steps: int = 20,
        batch: int = 256,
        lr: float = 1e-3,
        clip: float = 5.0,
        buffer: int = 20_000,
    ) -> None:
        if self._built:
            return
        for name, v in (("episodes", episodes), ("update_every", update_every), ("steps", steps), ("batch", batch),
                        ("buffer", buffer)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not (lr > 0 and clip > 0):
            raise ValueError(f"lr and clip must be positive, got {lr!r}, {clip!r}")
        import torch

        self.demos = teacher_features(teacher, episodes, split, seed)
        self.update_every, self.steps, self.batch, self.clip = update_every, steps, batch, float(clip)
        gen = torch.Generator().manual_seed(seed)
        dim = self.demos.shape[1]
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if p.dim() > 1 else 0.0))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.rng = np.random.default_rng(seed)
        self.policy = np.zeros((buffer, dim), dtype=np.float32)
        self.n_policy = 0  # turns seen (the buffer is a ring)
        self.since_update = 0
        self.updates = 0
        self._sync()
        self._built = True

    def _sync(self) -> None:
        """Copy the weights to numpy: scoring one turn is a few small matmuls, cheaper without torch."""
        self._layers = [
            (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
            for m in self.net
            if hasattr(m, "weight")
        ]

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """``log D - log(1 - D)`` of each row of ``feats`` (unclipped)."""
        h = feats
        for i, (w, b) in enumerate(self._layers):
            h = h @ w + b
            if i < len(self._layers) - 1:
                h = np.tanh(h)
        return h[:, 0]

    def __reduce__(self) -> tuple:
        """Pickles as its arguments: another process builds (or shares) its own discriminator."""
        return (_rebuild, (self._kwargs,))

    def __call__(self, contexts: Sequence[TurnContext]) -> list[float]:
        """The clipped logit of ``D`` for each turn; the turns are kept to train ``D`` on."""
        feats = np.stack([turn_features(c) for c in contexts])
        logits = self.logits(feats)
        for row in feats:
            self.policy[self.n_policy % len(self.policy)] = row
            self.n_policy += 1
        self.since_update += len(contexts)
        if self.since_update >= self.update_every:
            self.update()
        return [float(np.clip(v, -self.clip, self.clip)) for v in logits]

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes as it learns: weights, optimiser, kept policy turns, counters, generator."""
        import copy

        n = min(self.n_policy, len(self.policy))
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "opt": copy.deepcopy(self.opt.state_dict()),
            "policy": self.policy[:n].copy(),
            "n_policy": self.n_policy,
            "since_update": self.since_update,
            "updates": self.updates,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state_dict` (of a discriminator built with the same arguments).

        Raises:
            ValueError: The kept turns do not fit this discriminator's buffer or features.
        """
        rows = np.asarray(state["policy"], dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.policy.shape[1] or len(rows) > len(self.policy):
            raise ValueError(
                f"discriminator state: kept turns of shape {rows.shape} do not fit a buffer of {self.policy.shape}"
            )
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.policy[:] = 0.0
        self.policy[: len(rows)] = rows
        self.n_policy, self.since_update, self.updates = (
            int(state[k]) for k in ("n_policy", "since_update", "updates")
        )
        self.rng.bit_generator.state = state["rng"]
        self._sync()

    def update(self) -> float:
        """A few gradient steps of teacher turns (label 1) against kept policy turns (label 0); returns the loss."""
        import torch

        self.since_update = 0
        n = min(self.n_policy, len(self.policy))
        if n == 0:
            return float("nan")
        loss_fn = torch.nn.BCEWithLogitsLoss()
        loss = torch.zeros(())
        for _ in range(self.steps):
            d = torch.from_numpy(self.demos[self.rng.integers(0, len(self.demos), self.batch)])
            p = torch.from_numpy(self.policy[self.rng.integers(0, n, self.batch)])
            logits = self.net(torch.cat([d, p])).squeeze(-1)
            labels = torch.cat([torch.ones(len(d)), torch.zeros(len(p))])
            loss = loss_fn(logits, labels)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self.updates += 1
        self._sync()
        return loss.item()


def _rebuild(kwargs: dict[str, Any]) -> DiscriminatorReward:
    return DiscriminatorReward(**kwargs)


def reward_states() -> list[dict[str, Any]]:
    """The state of every discriminator built in this process, each with the arguments that build it."""
    with _LOCK:
        built = [inst for inst in _SHARED.values() if inst._built]
    return [{"kwargs": dict(inst._kwargs), "state": inst.state_dict()} for inst in built]


def restore_reward_states(states: Sequence[dict[str, Any]]) -> int:
    """Build (or find) each saved discriminator and load its state; returns how many were restored.

    Raises:
        ValueError: A state that does not fit the discriminator its arguments build.
    """
    for saved in states:
        DiscriminatorReward(**saved["kwargs"]).load_state_dict(saved["state"])
    return len(states)


def clear_reward_states() -> None:
    """Forget this process's discriminators: envs built afterwards start untrained ones."""
    with _LOCK:
        _SHARED.clear()
