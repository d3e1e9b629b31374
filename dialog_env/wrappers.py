"""Observation encoders and wrappers: belief vectors, act-level control of the text env, reward-term logging."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dialog_env import acts as A
from dialog_env.envs.core import PersonaRecCore
from dialog_env.view import AgentView


class BeliefEncoder:
    """Encodes the agent-side dialogue state of a PersonaRec env as a flat float32 vector.

    Layout: the tracker's belief over every slot value; per-slot flags informed / asked /
    declined / confirmed; per-item flags recommended / rejected; the goal category (one-hot);
    the turn as a fraction of ``max_turns``; the intents of the user's last turn (multi-hot);
    then catalog features per item, computed from the informed slots' beliefs (like the
    database pointer of task-oriented dialogue systems): the expected number of known facts the
    item violates (capped at 1), the expected number it appeals to (over the most any item
    appeals to), and whether it is in the goal category. Everything comes from the tracker, i.e.
    from what the agent heard: nothing hidden.

    Args:
        core: The (unwrapped) environment whose tracker is encoded, or an agent's view of it.
    """

    def __init__(self, core: PersonaRecCore | AgentView) -> None:
        w = core.world
        n_slots, n_items, n_cats = len(w.slots), len(w.items), len(w.categories)
        self.core = core
        self.dim = w.n_values + 4 * n_slots + 2 * n_items + n_cats + 1 + len(A.USER_INTENTS) + 3 * n_items
        self.space = spaces.Box(0.0, 1.0, shape=(self.dim,), dtype=np.float32)
        self._buf = np.zeros(self.dim, dtype=np.float32)
        # The tracker updates these arrays in place; the encoder only copies them.
        self._tracker_parts: list[np.ndarray] | None = None  # views of the tracker's arrays, made on first use
        self._tail_at = w.n_values + 4 * n_slots + 2 * n_items
        self._goal_index = {c.id: c.index for c in w.categories}
        self._turn_at = n_cats
        self._intent_index = {t: n_cats + 1 + i for i, t in enumerate(A.USER_INTENTS)}
        self._catalog_at = self.dim - 3 * n_items
        self._n_items = n_items
        most = max(1, int(w.appeal.sum(axis=1).max()))
        # Violations and appeal (scaled by the most any item appeals to) stacked: one matmul.
        self._catalog = np.concatenate([w.violation, w.appeal / most]).astype(np.float32)
        self._in_category = {c.id: (w.item_category == c.index).astype(np.float32) for c in w.categories}
        self._catalog_version = -1

    def intent_index(self, intent: str) -> int:
        """Where the user-intent flag ``intent`` (one of ``dialog_env.acts.USER_INTENTS``) sits in the vector.

        Raises:
            ValueError: ``intent`` is not a user intent.
        """
        if intent not in self._intent_index:
            raise ValueError(f"intent: expected one of {list(A.USER_INTENTS)}, got {intent!r}")
        return self._tail_at + self._intent_index[intent]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the views of the tracker's arrays (pickle would copy them apart)."""
        return {**self.__dict__, "_tracker_parts": None}

    def __call__(self) -> np.ndarray:
        """The current encoding (a fresh array)."""
        core, obs, g = self.core, self._buf, self._tail_at
        t = core.tracker
        if self._tracker_parts is None:
            self._tracker_parts = [t.belief, t.slot_flags.reshape(-1), t.item_flags.reshape(-1)]
        np.concatenate(self._tracker_parts, out=obs[:g], casting="unsafe")
        # goal one-hot, turn fraction, intents: built in Python, written in one assignment.
        tail = [0.0] * (self._catalog_at - g)
        if t.goal is not None:
            tail[self._goal_index[t.goal]] = 1.0
        tail[self._turn_at] = min(1.0, core.turn / core.max_turns)
        for a in t.last_user_acts:
            k = self._intent_index.get(a.intent)
            if k is not None:
                tail[k] = 1.0
        c, n = self._catalog_at, self._n_items
        obs[g:c] = tail
        if t.version != self._catalog_version:  # catalog features change only with belief or goal
            self._catalog_version = t.version
            np.matmul(self._catalog, t.known_belief, out=obs[c : c + 2 * n])
            np.minimum(obs[c : c + n], 1.0, out=obs[c : c + n])
            obs[c + 2 * n :] = self._in_category[t.goal] if t.goal is not None else 0.0
        return obs.copy()


class DiscreteActsWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Drive ``PersonaRecText-v0`` with act-table ids and belief-vector observations.

    The act is rendered as an utterance by the env's agent templates, so it goes through the
    same text path (NLU included) as an LM agent's words. The result is SB3-compatible:
    ``Discrete`` actions, a ``Box`` observation and ``action_masks()``.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        core = env.unwrapped
        if not isinstance(core, PersonaRecCore):
            raise TypeError(f"DiscreteActsWrapper needs a PersonaRec environment, got {type(core).__name__}")
        self.core = core
        self.encoder = BeliefEncoder(core)
        self.action_space = spaces.Discrete(core.act_table.size)
        self.observation_space = self.encoder.space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset the text env; return the belief encoding."""
        _, info = self.env.reset(seed=seed, options=options)
        info["action_mask"] = self.core.action_masks()
        return self.encoder(), info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Say the act's rendering; return the belief encoding."""
        _, reward, terminated, truncated, info = self.env.step(self.core.act_to_text(action))
        info["action_mask"] = self.core.action_masks()
        return self.encoder(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The act mask of the wrapped env (for sb3-contrib's MaskablePPO)."""
        return self.core.action_masks()


class RewardTermStats(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``info["episode_reward_terms"]`` (episode sums of each reward term) at episode end.

    Handy for logging every term to TensorBoard, alongside Gymnasium's ``RecordEpisodeStatistics``.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._sums: dict[str, float] = {}

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        """Start a new episode's sums."""
        self._sums = {}
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Accumulate this turn's terms; report the sums when the episode ends."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        for k, v in info.get("reward_terms", {}).items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        if terminated or truncated:
            info["episode_reward_terms"] = dict(self._sums)
        return obs, reward, terminated, truncated, info


class PreviousActionReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """RL²'s observation: the env's vector, then the previous action (one-hot) and the previous reward.

    With them a recurrent policy can tell what it did and how it went, and so adapt within an episode
    (several sessions with one user, ``PersonaRecSessions-v0``). Both are zero after a reset. The
    reward is scaled by ``reward_scale`` and clipped to [-1, 1].

    Args:
        env: An env with a ``Box`` observation and a ``Discrete`` action space.
        reward_scale: The reward that maps to 1.
    """

    def __init__(self, env: gym.Env, reward_scale: float = 20.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, reward_scale=reward_scale)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.observation_space, spaces.Box) or not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(
                "PreviousActionReward needs a Box observation and a Discrete action space, got "
                f"{env.observation_space} and {env.action_space}"
            )
        if not reward_scale > 0:
            raise ValueError(f"reward_scale must be positive, got {reward_scale!r}")
        self.reward_scale = float(reward_scale)
        self.n = int(env.action_space.n)
        box = env.observation_space
        low = np.concatenate([box.low.ravel(), np.zeros(self.n, np.float32), [-1.0]]).astype(np.float32)
        high = np.concatenate([box.high.ravel(), np.ones(self.n, np.float32), [1.0]]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def _extend(self, obs: np.ndarray, action: int | None, reward: float) -> np.ndarray:
        extra = np.zeros(self.n + 1, dtype=np.float32)
        if action is not None:
            extra[int(action)] = 1.0
            extra[-1] = np.clip(reward / self.reward_scale, -1.0, 1.0)
        return np.concatenate([np.asarray(obs, dtype=np.float32).ravel(), extra])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        """The env's first observation, with no previous action or reward."""
        obs, info = self.env.reset(**kwargs)
        return self._extend(obs, None, 0.0), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step; the observation carries this action and its reward."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._extend(obs, action, float(reward)), reward, terminated, truncated, info


class ActionMaskObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Appends the env's action mask (0/1) to a ``Box`` observation, for policies that read it there.

    ``agents.sb3.recurrent.MaskedLstmPolicy`` takes the last ``n`` entries as the mask.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.observation_space, spaces.Box) or not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(
                "ActionMaskObservation needs a Box observation and a Discrete action space, got "
                f"{env.observation_space} and {env.action_space}"
            )
        self.n = int(env.action_space.n)
        box = env.observation_space
        low = np.concatenate([box.low.ravel(), np.zeros(self.n, np.float32)]).astype(np.float32)
        high = np.concatenate([box.high.ravel(), np.ones(self.n, np.float32)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def _extend(self, obs: np.ndarray) -> np.ndarray:
        mask = np.asarray(self.env.get_wrapper_attr("action_masks")(), dtype=np.float32)
        return np.concatenate([np.asarray(obs, dtype=np.float32).ravel(), mask])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        """The first observation, with the mask."""
        obs, info = self.env.reset(**kwargs)
        return self._extend(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step; the observation ends with the next turn's mask."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._extend(obs), reward, terminated, truncated, info
