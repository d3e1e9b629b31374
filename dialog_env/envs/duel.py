"""``dialog_env/PersonaRecDuel-v0``: the assistant against a learning user, in PettingZoo's parallel API.

Two agents, ``"assistant"`` and ``"user"``, take turns: at even steps the assistant speaks (one act of
the act table of ``PersonaRec-v0``), at odd steps the user answers it (one act of
:class:`~dialog_env.users.adversarial.UserActTable`, within the mask that keeps it true to its
persona; an act outside it raises). The agent whose turn it is not has exactly one allowed action,
``wait`` (the last assistant id, user id 0); every step takes one action per live agent, as the
parallel API asks. The assistant's mask is advice, as in ``PersonaRec-v0`` (a pointless act is
played, not refused).

Observations are PettingZoo's masked dicts, ``{"observation": Box, "action_mask": int8 array}``:

* the assistant's observation is ``PersonaRec-v0``'s belief vector (what it heard, nothing hidden),
  so an assistant trained on ``PersonaRec-v0`` plays here unchanged;
* the user's is its own persona, goal and patience and the assistant's pending turn
  (:meth:`~dialog_env.users.adversarial.PolicyUser.observation`).

Rewards arrive at the user's step, when an exchange completes: the assistant gets
``PersonaRec-v0``'s reward for its turn (same terms, same weights); the user — general-sum, not the
negative of the assistant's — gets ``contradiction_weight`` per contradiction it drew from the
assistant this turn (:func:`rewards.builtin.consistency_counts`), ``failure_weight`` when the
dialogue ends without an accepted recommendation, minus ``turn_cost``. Both are 0 at the
assistant's step. ``info[agent]["reward_terms"]`` names the parts. The persona is never in the
assistant's observation or info.

Single-agent views for SB3 with the other side frozen: :class:`AssistantSide` and :class:`UserSide`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from dialog_env.acts import DialogueAct
from dialog_env.envs.persona_rec import PersonaRecEnv
from dialog_env.users.adversarial import PolicyUser, UserActTable
from rewards.builtin import FAILURES, consistency_counts

ASSISTANT, USER = "assistant", "user"
DUEL_ID = "dialog_env/PersonaRecDuel-v0"


class PersonaRecDuelEnv(ParallelEnv):
    """The assistant and a policy-played user in one dialogue (see the module docstring).

    Args:
        contradiction_weight: User reward per contradiction drawn from the assistant.
        failure_weight: User reward when the dialogue ends without an accepted recommendation.
        turn_cost: User cost per exchange.
        **kwargs: ``PersonaRec-v0``'s arguments (``split``, ``noise``, ``reward_weights``,
            ``max_turns``, ...); ``user`` is not one of them (the user is the second agent).

    Raises:
        ValueError: A bad argument (the message names it).
    """

    metadata = {"name": "persona_rec_duel_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(
        self,
        contradiction_weight: float = 1.0,
        failure_weight: float = 5.0,
        turn_cost: float = 0.1,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "user" in kwargs:
            raise ValueError("user: the duel's user is its second agent; user= is not an argument of PersonaRecDuel-v0")
        for name, v in (
            ("contradiction_weight", contradiction_weight),
            ("failure_weight", failure_weight),
            ("turn_cost", turn_cost),
        ):
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        self.core = PersonaRecEnv(render_mode=render_mode, **kwargs)
        self.render_mode = render_mode
        self.policy_user = PolicyUser(self.core.world)
        self.core.user = self.policy_user  # the env's user slot, played by the second agent
        self.user_table = UserActTable(self.core.world)
        self.weights = {"contradiction": float(contradiction_weight), "failure": float(failure_weight)}
        self.turn_cost = float(turn_cost)
        self.possible_agents = [ASSISTANT, USER]
        self.agents: list[str] = []
        n_assistant = self.core.act_table.size
        self.assistant_wait = n_assistant  # the last assistant id
        self._spaces = {
            ASSISTANT: (self.core.observation_space, spaces.Discrete(n_assistant + 1)),
            USER: (
                spaces.Box(0.0, 1.0, shape=(self.policy_user.obs_dim,), dtype=np.float32),
                spaces.Discrete(self.user_table.size),
            ),
        }
        self._obs_spaces = {
            a: spaces.Dict(
                {
                    "observation": box,
                    "action_mask": spaces.Box(0, 1, shape=(act.n,), dtype=np.int8),
                }
            )  # fmt: skip
            for a, (box, act) in self._spaces.items()
        }
        self._pending: int | None = None
        self._pending_acts: tuple[DialogueAct, ...] = ()

    # -- PettingZoo API -------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        """The masked-dict observation space of ``agent`` (the same object on every call)."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """``agent``'s discrete action space (its acts plus ``wait``)."""
        return self._spaces[agent][1]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Start a dialogue; ``options`` as ``PersonaRec-v0``'s (``persona``, ``goal``); the assistant speaks first."""
        options = {k: v for k, v in (options or {}).items() if k in ("persona", "goal")}
        _, info = self.core.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._pending, self._pending_acts = None, ()
        infos = {ASSISTANT: {"turn": 0, "user_text": info["user_text"]}, USER: {"turn": 0}}
        return self._observe(), infos

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """One half-exchange: the assistant speaks, or the user answers (see the module docstring).

        Raises:
            ValueError: A live agent's action is missing or not allowed (the message names the agent
                and what was allowed).
            RuntimeError: The dialogue is over (call ``reset``).
        """
        if not self.agents:
            raise RuntimeError("the dialogue is over; call reset() before step()")
        masks = self._masks()
        chosen: dict[str, int] = {}
        for agent in self.agents:
            if agent not in actions:
                raise ValueError(f"actions: no action for live agent {agent!r}")
            a = actions[agent]
            if isinstance(a, bool) or not isinstance(a, int | np.integer) or not 0 <= a < len(masks[agent]):
                raise ValueError(f"actions[{agent!r}]: expected an integer in [0, {len(masks[agent])}), got {a!r}")
            advisory = agent == ASSISTANT and self._pending is None and a != self.assistant_wait
            if not masks[agent][a] and not advisory:  # the assistant's act mask is advice, as in PersonaRec-v0
                raise ValueError(
                    f"actions[{agent!r}]: {self._name(agent, int(a))} is not allowed now; allowed: "
                    f"{[self._name(agent, int(i)) for i in np.flatnonzero(masks[agent])]}"
                )
            chosen[agent] = int(a)
        zero = dict.fromkeys(self.agents, 0.0)
        if self._pending is None:  # the assistant's half: remember its act, the user answers next
            self._pending = chosen[ASSISTANT]
            self._pending_acts = (self.core.act_from_id(self._pending),)
            infos = {ASSISTANT: {"turn": self.core.turn}, USER: {"turn": self.core.turn}}
            done = dict.fromkeys(self.agents, False)
            return self._observe(), zero, done, dict(done), infos
        self.policy_user.set_action(chosen[USER])
        _, reward, terminated, truncated, info = self.core.step(self._pending)
        ctx = self.core.last_context
        drawn = consistency_counts(ctx)[1]
        failed = (terminated or truncated) and ctx.outcome in FAILURES
        user_terms = {
            "contradiction": float(drawn),
            "failure": float(failed),
            "turn_cost": -1.0,
        }
        user_reward = self.weights["contradiction"] * drawn + self.weights["failure"] * failed - self.turn_cost
        self._pending, self._pending_acts = None, ()
        public = {k: info[k] for k in ("turn", "agent_text", "user_text", "outcome", "is_success", "reward_terms")}
        infos = {
            ASSISTANT: public,
            USER: {**public, "reward_terms": user_terms, "user_act": self.user_table.name(chosen[USER])},
        }
        rewards = {ASSISTANT: float(reward), USER: float(user_reward)}
        term = dict.fromkeys(self.agents, bool(terminated))
        trunc = dict.fromkeys(self.agents, bool(truncated))
        obs = self._observe()
        if terminated or truncated:
            self.agents = []
        return obs, rewards, term, trunc, infos

    def render(self) -> str | None:
        """``ansi``: the transcript with each turn's reward terms (``PersonaRec-v0``'s render)."""
        return self.core.render()

    def close(self) -> None:
        """Close the inner env."""
        self.core.close()

    # -- helpers --------------------------------------------------------------------------------------
    @property
    def pending_acts(self) -> tuple[DialogueAct, ...]:
        """The assistant's act the user answers next (empty at the assistant's turn)."""
        return self._pending_acts

    @property
    def user_turn(self) -> bool:
        """Whether the user answers at the next step."""
        return self._pending is not None

    def _masks(self) -> dict[str, np.ndarray]:
        n_a, n_u = self.assistant_wait + 1, self.user_table.size
        a_mask, u_mask = np.zeros(n_a, dtype=bool), np.zeros(n_u, dtype=bool)
        if self._pending is None:
            a_mask[: self.assistant_wait] = self.core.action_masks()
            u_mask[UserActTable.WAIT] = True
        else:
            a_mask[self.assistant_wait] = True
            u_mask[:] = self.policy_user.action_mask(self._pending_acts)
        return {ASSISTANT: a_mask, USER: u_mask}

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        masks = self._masks()
        return {
            ASSISTANT: {"observation": self.core._observe(), "action_mask": masks[ASSISTANT].astype(np.int8)},
            USER: {
                "observation": self.policy_user.observation(self._pending_acts),
                "action_mask": masks[USER].astype(np.int8),
            },
        }

    def _name(self, agent: str, a: int) -> str:
        if agent == USER:
            return self.user_table.name(a)
        return "wait" if a == self.assistant_wait else str(self.core.act_from_id(a))


def parallel_env(**kwargs: Any) -> PersonaRecDuelEnv:
    """PettingZoo's constructor convention: ``PersonaRecDuel-v0`` with ``kwargs``."""
    return PersonaRecDuelEnv(**kwargs)


Policy = Callable[[np.ndarray, np.ndarray], int]
"""A frozen side's policy: ``(observation, action_mask) -> action`` (without the ``wait`` id)."""


class UniformPolicy:
    """Uniform over the allowed actions; reseeded with each dialogue's seed (same seed, same play)."""

    def __init__(self, seed: int | None = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        """Restart the stream (an unseeded reset keeps it going)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, mask: np.ndarray) -> int:
        """A uniformly drawn allowed action."""
        return int(self.rng.choice(np.flatnonzero(mask)))


def as_policy(policy: Any, deterministic: bool = True) -> Policy:
    """A callable policy from a callable, an SB3 model with ``predict`` (MaskablePPO), or ``None`` (uniform)."""
    if policy is None:
        return UniformPolicy()
    if hasattr(policy, "predict"):
        return lambda obs, mask: int(policy.predict(obs, action_masks=mask, deterministic=deterministic)[0])
    if callable(policy):
        return policy
    raise TypeError(f"policy: expected a callable, an SB3 model or None, got {type(policy).__name__}")


class _Side(gym.Env):
    """Shared parts of the single-agent views."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, duel: PersonaRecDuelEnv | None, agent: str, other: Any, **kwargs: Any) -> None:
        self.duel = duel if duel is not None else PersonaRecDuelEnv(**kwargs)
        self.agent, self.other_agent = agent, (USER if agent == ASSISTANT else ASSISTANT)
        self.other = as_policy(other)
        box, act = self.duel._spaces[agent]
        self.observation_space = box
        n = act.n - 1 if agent == ASSISTANT else act.n  # the assistant's wait id is its last
        self.action_space = spaces.Discrete(n)
        self._obs: dict[str, dict[str, np.ndarray]] = {}

    def action_masks(self) -> np.ndarray:
        """This side's mask (for MaskablePPO)."""
        mask = self._obs[self.agent]["action_mask"].astype(bool)
        return mask[: self.action_space.n]

    def render(self) -> str | None:
        """The duel's transcript."""
        return self.duel.render()

    def _other_act(self) -> int:
        o = self._obs[self.other_agent]
        mask = o["action_mask"].astype(bool)
        if self.other_agent == ASSISTANT:
            return self.other(o["observation"], mask[:-1])
        return self.other(o["observation"], mask)

    def _wait(self, agent: str) -> int:
        return self.duel.assistant_wait if agent == ASSISTANT else UserActTable.WAIT


class AssistantSide(_Side):
    """The assistant's side as a Gymnasium env, the user frozen (``PersonaRec-v0``'s spaces).

    Args:
        user: The user's policy: ``(obs, mask) -> act``, a MaskablePPO model, or ``None`` (uniform
            over the truthful acts).
        duel: An existing duel env; otherwise one is built from ``kwargs``.
    """

    def __init__(self, user: Any = None, duel: PersonaRecDuelEnv | None = None, **kwargs: Any) -> None:
        super().__init__(duel, ASSISTANT, user, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a dialogue; the assistant's observation."""
        super().reset(seed=seed)
        if isinstance(self.other, UniformPolicy):
            self.other.seed(seed)
        self._obs, infos = self.duel.reset(seed=seed, options=options)
        return self._obs[ASSISTANT]["observation"], {**infos[ASSISTANT], "action_mask": self.action_masks()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The assistant's act, then the frozen user's answer."""
        self._obs, *_ = self.duel.step({ASSISTANT: int(action), USER: UserActTable.WAIT})
        u = self._other_act()
        self._obs, rew, term, trunc, infos = self.duel.step({ASSISTANT: self.duel.assistant_wait, USER: u})
        info = {**infos[ASSISTANT], "action_mask": self.action_masks()}
        return self._obs[ASSISTANT]["observation"], rew[ASSISTANT], term[ASSISTANT], trunc[ASSISTANT], info


class UserSide(_Side):
    """The user's side as a Gymnasium env, the assistant frozen.

    Args:
        assistant: The assistant's policy: ``(obs, mask) -> act`` over ``PersonaRec-v0``'s act table,
            a MaskablePPO model trained there, or ``None`` (uniform over its mask).
        duel: An existing duel env; otherwise one is built from ``kwargs``.
    """

    def __init__(self, assistant: Any = None, duel: PersonaRecDuelEnv | None = None, **kwargs: Any) -> None:
        super().__init__(duel, USER, assistant, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a dialogue and let the assistant speak; the user's observation of that turn."""
        super().reset(seed=seed)
        if isinstance(self.other, UniformPolicy):
            self.other.seed(seed)
        self._obs, _ = self.duel.reset(seed=seed, options=options)
        self._obs, *_ = self.duel.step({ASSISTANT: self._other_act(), USER: UserActTable.WAIT})
        return self._obs[USER]["observation"], {"action_mask": self.action_masks()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The user's answer, then (if the dialogue goes on) the frozen assistant's next turn.

        An act outside the mask (one that would not be true to the persona) is never said: the
        user's default truthful act is said instead, and ``info["replaced_action"]`` is True.
        """
        replaced = not self.action_masks()[action]
        if replaced:
            action = self.duel.policy_user.choose(self.duel.pending_acts)
        self._obs, rew, term, trunc, infos = self.duel.step({ASSISTANT: self.duel.assistant_wait, USER: int(action)})
        info = {**infos[USER], "replaced_action": bool(replaced)}
        if not (term[USER] or trunc[USER]):
            self._obs, *_ = self.duel.step({ASSISTANT: self._other_act(), USER: UserActTable.WAIT})
        info["action_mask"] = self.action_masks()
        return self._obs[USER]["observation"], rew[USER], term[USER], trunc[USER], info
