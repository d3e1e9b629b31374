"""Behaviour cloning before RL: start an SB3 policy from a hand-written teacher's play.

``dialog-env train sb3 --bc-teacher planner_memory ...`` plays ``bc_episodes`` dialogues with the
teacher in the run's own training env (the same wrappers, so the same observations the policy will
see), then fits the policy to them before PPO starts: cross-entropy on the teacher's acts and,
for the value head, squared error to the discounted return from each step. A recurrent policy
(``RecurrentPPO``, RL²) is fitted on whole episodes through its LSTM, so what it must remember
across sessions is in what it learns from; a feed-forward one on single steps.

The teacher sees only what any agent sees (its :class:`~dialog_env.view.AgentView`); privileged
teachers (the oracle) are refused, so the hidden persona never reaches the policy through its
training targets. The demonstrations use seeds far from the training envs' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

DEMO_SEED_OFFSET = 7_000_000
"""Demonstration episodes are seeded from ``seed + DEMO_SEED_OFFSET`` on (training envs use ``seed + i``)."""


@dataclass
class Episode:
    """One teacher episode as the policy sees it."""

    obs: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def returns(self, gamma: float) -> np.ndarray:
        """Discounted return from each step to the episode's end."""
        out = np.zeros(len(self.rewards), dtype=np.float32)
        running = 0.0
        for t in range(len(self.rewards) - 1, -1, -1):
            running = self.rewards[t] + gamma * running
            out[t] = running
        return out


def check_teacher(name: str, error: type[Exception]) -> None:
    """Raise ``error`` unless ``name`` is a registered, non-privileged agent (empty: no teacher)."""
    if not name:
        return
    from agents.base import AGENTS, is_privileged, make_agent

    if name not in AGENTS:
        raise error(f"bc_teacher: unknown agent {name!r}; expected one of {sorted(AGENTS)} or empty (no cloning)")
    if is_privileged(make_agent(name)):
        raise error(f"bc_teacher: {name!r} reads the hidden persona; a teacher must be a non-privileged agent")


def play_teacher(make_env: Any, teacher: str, episodes: int, seed: int) -> list[Episode]:
    """``episodes`` dialogues of ``teacher`` in ``make_env()`` (a wrapped training env).

    The teacher acts on the innermost env's agent view; the episode records the wrapped
    observations, the env's action masks, the acts and the rewards.
    """
    from agents.base import make_agent
    from dialog_env.view import agent_view

    env: gym.Env = make_env()
    base = env.unwrapped
    inner = getattr(base, "inner", base)  # the sessions env plays its sessions in an inner env
    masks_of = env.get_wrapper_attr("action_masks")
    out = []
    try:
        for ep in range(episodes):
            agent = make_agent(teacher)
            obs, info = env.reset(seed=seed + ep)
            agent.reset(agent_view(inner), seed=seed + ep)
            episode = Episode()
            while True:
                mask = np.asarray(masks_of(), dtype=bool)
                action = int(agent.act(obs, info))
                episode.obs.append(np.asarray(obs, dtype=np.float32))
                episode.actions.append(action)
                episode.masks.append(mask)
                obs, reward, terminated, truncated, info = env.step(action)
                episode.rewards.append(float(reward))
                if terminated or truncated:
                    break
            out.append(episode)
    finally:
        env.close()
    return out


def behaviour_clone(
    algo: Any,
    episodes: list[Episode],
    epochs: int,
    lr: float,
    batch_episodes: int = 32,
    value_coef: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``algo.policy`` to the teacher's episodes; returns the last epoch's loss and act accuracy.

    Args:
        algo: A fresh SB3 algorithm (``RecurrentPPO`` is fitted on whole episodes, others on steps).
        episodes: :func:`play_teacher`'s output.
        epochs: Passes over the episodes.
        lr: Adam learning rate.
        batch_episodes: Episodes per gradient step.
        value_coef: Weight of the value head's squared error (in units of the returns' variance).
        seed: Order of the batches.
    """
    import torch as th
    from sb3_contrib import RecurrentPPO

    policy = algo.policy
    policy.set_training_mode(True)
    device = policy.device
    optimizer = th.optim.Adam(policy.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    gamma = float(getattr(algo, "gamma", 0.99))
    recurrent = isinstance(algo, RecurrentPPO)
    # The value head's error is measured in units of the returns' variance, so it does not swamp the acts' loss.
    scale = float(np.var(np.concatenate([e.returns(gamma) for e in episodes]))) + 1e-6
    stats: dict[str, float] = {}
    passes = _recurrent_pass if recurrent else _flat_pass
    for epoch in range(epochs):
        last = epoch == epochs - 1  # the accuracy is reported for the last epoch only: one extra forward pass
        order = rng.permutation(len(episodes))
        losses, hits, steps = [], 0, 0
        for start in range(0, len(order), batch_episodes):
            batch = [episodes[i] for i in order[start : start + batch_episodes]]
            log_prob, values, returns, weight, greedy_hits = passes(policy, batch, gamma, device, last)
            n = weight.sum()
            value_error = (((values - returns) ** 2) * weight).sum() / (n * scale)
            loss = -(log_prob * weight).sum() / n + value_coef * value_error
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            optimizer.step()
            losses.append(float(loss.detach()))
            if greedy_hits is not None:
                hits += int((greedy_hits * weight).sum())
            steps += int(n)
        stats = {"loss": float(np.mean(losses)), "accuracy": hits / max(1, steps)}
    policy.set_training_mode(False)
    return stats


def _greedy_hits(policy: Any, obs: Any, actions: Any, **kwargs: Any) -> Any:
    import torch as th

    with th.no_grad():
        dist = policy.get_distribution(obs, **kwargs)
        dist = dist[0] if isinstance(dist, tuple) else dist
        return (dist.distribution.probs.argmax(-1) == actions).float()


def _flat_pass(policy: Any, batch: list[Episode], gamma: float, device: Any, measure: bool) -> tuple[Any, ...]:
    """Single steps: log-probabilities, values, returns, weights and (``measure``) greedy hits of the teacher's acts."""
    import torch as th

    obs = th.as_tensor(np.concatenate([np.stack(e.obs) for e in batch]), device=device)
    actions = th.as_tensor(np.concatenate([e.actions for e in batch]), device=device)
    returns = th.as_tensor(np.concatenate([e.returns(gamma) for e in batch]), device=device)
    kwargs = {"action_masks": np.concatenate([np.stack(e.masks) for e in batch])} if _takes_masks(policy) else {}
    values, log_prob, _ = policy.evaluate_actions(obs, actions, **kwargs)
    hits = _greedy_hits(policy, obs, actions, **kwargs) if measure else None
    return log_prob, values.flatten(), returns, th.ones_like(returns), hits


def _takes_masks(policy: Any) -> bool:
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    return isinstance(policy, MaskableActorCriticPolicy)


def _recurrent_pass(policy: Any, batch: list[Episode], gamma: float, device: Any, measure: bool) -> tuple[Any, ...]:
    """As :func:`_flat_pass`, on whole episodes side by side, padded to the longest (padding: weight 0, at the end)."""
    import torch as th
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    n_seq, length = len(batch), max(len(e.actions) for e in batch)
    dim = batch[0].obs[0].shape[0]
    obs = np.zeros((n_seq, length, dim), dtype=np.float32)
    actions = np.zeros((n_seq, length), dtype=np.int64)
    returns = np.zeros((n_seq, length), dtype=np.float32)
    weight = np.zeros((n_seq, length), dtype=np.float32)
    for i, e in enumerate(batch):
        t = len(e.actions)
        obs[i, :t], actions[i, :t], returns[i, :t], weight[i, :t] = np.stack(e.obs), e.actions, e.returns(gamma), 1.0
    starts = np.zeros((n_seq, length), dtype=np.float32)
    starts[:, 0] = 1.0
    # Sequence-major order: RecurrentActorCriticPolicy reshapes to (n_seq, length, ...) and swaps axes.
    obs_t = th.as_tensor(obs.reshape(n_seq * length, dim), device=device)
    actions_t = th.as_tensor(actions.reshape(-1), device=device)
    starts_t = th.as_tensor(starts.reshape(-1), device=device)
    lstm = policy.lstm_actor
    zeros = th.zeros(lstm.num_layers, n_seq, lstm.hidden_size, device=device)
    states = RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))
    values, log_prob, _ = policy.evaluate_actions(obs_t, actions_t, states, starts_t)
    hits = _greedy_hits(policy, obs_t, actions_t, lstm_states=states.pi, episode_starts=starts_t) if measure else None
    returns_t = th.as_tensor(returns.reshape(-1), device=device)
    return log_prob, values.flatten(), returns_t, th.as_tensor(weight.reshape(-1), device=device), hits
