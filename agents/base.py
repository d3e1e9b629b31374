"""The agent protocol and the agent registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from dialog_env.plugins import import_path
from dialog_env.view import AgentView, declares_privileged


@runtime_checkable
class Agent(Protocol):
    """A dialogue policy.

    ``reset`` is called after each ``env.reset`` with the agent's view of the env
    (:class:`dialog_env.view.AgentView`: the world, the act table, the spaces, a read-only tracker,
    the action mask and, in text mode, the dialogue and its notes; never the persona). ``act``
    returns an action for ``env.step``: an act id in ``PersonaRec-v0``, a string in
    ``PersonaRecText-v0``. An agent that reads hidden state (the persona, the goal) declares it with
    a class attribute ``privileged = True`` (:func:`is_privileged`): its view then has ``hidden``,
    the leaderboard marks its rows, and demonstration collection refuses it. Agents also accept a
    plain env and make their view of it (:func:`dialog_env.view.agent_view`).
    """

    name: str

    def reset(self, view: AgentView, seed: int | None = None) -> None:
        """Prepare for a new dialogue seen through ``view``."""
        ...

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        """Choose the next action."""
        ...


def is_privileged(agent: Any) -> bool:
    """Whether an agent declares that it reads hidden state (``privileged = True``)."""
    return declares_privileged(agent)


AgentFactory = Callable[..., Agent]
AGENTS: dict[str, AgentFactory] = {}
#: ``prefix:argument`` specs: ``sb3:runs/<run>`` loads a trained SB3 model, ``lm:<model>`` an LM agent.
AGENT_PREFIXES: dict[str, str] = {"sb3": "agents.sb3:SB3Agent", "lm": "agents.lm:LMAgent"}


def register_agent(name: str) -> Callable[[AgentFactory], AgentFactory]:
    """Class decorator: register an agent factory under ``name``."""

    def add(factory: AgentFactory) -> AgentFactory:
        AGENTS[name] = factory
        return factory

    return add


def make_agent(spec: str | Agent, **kwargs: Any) -> Agent:
    """Build an agent from a registered name or an import path ``"package.module:attr"``.

    Args:
        spec: A name in :data:`AGENTS`; ``sb3:<run folder or .zip>``; an import path to an agent
            class/factory (``"package.module:attr"``); or an agent (returned as is).
        **kwargs: Passed to the factory.

    Raises:
        ValueError: The spec matches nothing; the message lists what is allowed.
    """
    if not isinstance(spec, str):
        return spec
    if spec in AGENTS:
        return AGENTS[spec](**kwargs)
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in AGENT_PREFIXES:
        module_name, _, attr = AGENT_PREFIXES[prefix].partition(":")
        return getattr(importlib.import_module(module_name), attr)(arg, **kwargs)
    if ":" in spec:
        return import_path(spec, "agent")(**kwargs)
    raise ValueError(
        f"unknown agent {spec!r}; expected one of {sorted(AGENTS)} or an import path 'package.module:attr'"
    )
