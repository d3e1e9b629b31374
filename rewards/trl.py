"""Adapter from dialog_env rewards to TRL's ``reward_funcs`` convention.

TRL calls ``reward_func(prompts=..., completions=..., completion_ids=..., **columns)`` and wants
one float (or ``None``) per completion. :func:`to_trl` wraps any dialog_env reward so that it can
be passed to ``GRPOTrainer(reward_funcs=[...])``. Two ways to give it the dialogue:

* a ``dialog_state`` column (single-turn data sets): a dict or JSON string as returned by
  :meth:`PersonaRecTextEnv.dialog_state` -- env kwargs, the reset seed and options, and the agent
  turns so far. The adapter replays the dialogue (deterministic under the seed), says the
  completion to the simulated user and scores that turn;
* a ``turn_contexts`` column (multi-turn rollouts): the :class:`TurnContext` list of each whole
  episode; the adapter scores every turn and returns the episode's sum.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dialog_env.context import TurnContext
from rewards.base import call_reward
from rewards.registry import get_reward

TEXT_ENV_ID = "dialog_env/PersonaRecText-v0"


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The agent's text in a TRL completion: a plain string, or the assistant messages' content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        parts = [
            m.get("content", "")
            for m in completion
            if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant"
        ]
        return "\n".join(p if isinstance(p, str) else str(p) for p in parts)
    raise TypeError(f"completion must be a str or a list of chat messages, got {type(completion).__name__}")


class TRLReward:
    """A dialog_env reward in TRL's ``reward_funcs`` shape (picklable, with ``__name__``).

    Args:
        reward: Any reward spec accepted by :func:`rewards.get_reward`.
        kwargs: Its parameters (see :func:`rewards.get_reward`).
    """

    def __init__(self, reward: str | Callable, kwargs: Mapping[str, Any] | None = None) -> None:
        self.spec, self.kwargs = reward, dict(kwargs or {})
        self.name, self.fn = get_reward(reward, self.kwargs)
        self.__name__ = self.name
        self._envs: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_envs"] = {}
        return state

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """Score each completion; ``None`` where the dialogue state says there is nothing to score.

        Raises:
            ValueError: Neither a ``dialog_state`` nor a ``turn_contexts`` column is present.
            rewards.RewardError: The wrapped reward raised or returned NaN.
        """
        if "turn_contexts" in columns:
            return [
                sum(call_reward(self.name, self.fn, list(ctxs))) if ctxs else 0.0 for ctxs in columns["turn_contexts"]
            ]
        if "dialog_state" not in columns:
            raise ValueError(
                f"reward {self.name!r} needs a 'dialog_state' column (single-turn data) or a "
                f"'turn_contexts' column (multi-turn rollouts); got columns {sorted(columns)}"
            )
        if completions is None:
            raise ValueError(f"reward {self.name!r}: 'completions' is required")
        contexts: list[TurnContext | None] = [
            self._replay(state, completion_text(c))
            for state, c in zip(columns["dialog_state"], completions, strict=True)
        ]
        live = [c for c in contexts if c is not None]
        scores = iter(call_reward(self.name, self.fn, live)) if live else iter(())
        return [next(scores) if c is not None else None for c in contexts]

    def _replay(self, state: Mapping[str, Any] | str, text: str) -> TurnContext | None:
        import gymnasium as gym

        import dialog_env  # noqa: F401 - registers the environments
        from dialog_env.driver import DialogueDriver, PrefixEndedError, ScriptedPolicy

        if isinstance(state, str):
            state = json.loads(state)
        kwargs = dict(state.get("env_kwargs") or {})
        key = json.dumps(kwargs, sort_keys=True)
        if key not in self._envs:
            self._envs[key] = gym.make(TEXT_ENV_ID, **kwargs).unwrapped
        env = self._envs[key]
        options = state.get("options") or None
        driver = DialogueDriver([env], sessions=(lambda index, seed: options) if options else None)
        said: list[TurnContext] = []
        try:
            driver.play(
                ScriptedPolicy([[text]]),
                [state["seed"]],
                prefixes=[list(state.get("agent_turns", []))],
                on_step=lambda step: said.append(step.context),
            )
        except PrefixEndedError:
            return None
        return said[0]


def to_trl(reward: str | Callable, **kwargs: Any) -> TRLReward:
    """Wrap a dialog_env reward as a TRL reward function.

    Args:
        reward: A registered name, entry point, ``"module:attr"`` path or callable.
        **kwargs: The reward's parameters (a built-in's, a class's, a ``get_*`` factory's).

    Returns:
        A picklable callable ``f(prompts, completions, completion_ids, **columns) -> list[float | None]``
        whose ``__name__`` is the reward's name (TRL logs it under ``rewards/<name>``).

    Example:
        >>> f = to_trl("persona_consistency")
        >>> f.__name__
        'persona_consistency'
    """
    return TRLReward(reward, kwargs)
