"""Agents see an agent's view: observation, info and a read-only tracker, never the persona."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401
from agents import AGENTS, make_agent
from dialog_env.evaluation import evaluate, run_episode
from dialog_env.persona import Persona
from dialog_env.view import AgentView, HiddenState, ReadOnlyTracker, agent_view

ACT_ID, TEXT_ID = "dialog_env/PersonaRec-v0", "dialog_env/PersonaRecText-v0"


def reachable(view: AgentView):
    """Every object reachable from the view's documented (public) attributes, one level into containers."""
    seen = []
    for name in dir(view):
        if name.startswith("_") or name == "hidden":
            continue
        value = getattr(view, name)
        seen.append(value)
        if isinstance(value, ReadOnlyTracker):
            seen += [getattr(value, n) for n in ReadOnlyTracker.READABLE]
    return seen


@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_the_view_reaches_no_hidden_state(env_id):
    env = gym.make(env_id)
    core = env.unwrapped
    env.reset(seed=4)
    env.step(env.action_space.sample() if env_id == ACT_ID else "Do you have any pets? What do you do for work?")
    view = agent_view(env)
    secrets = (core.persona, core.persona.values, core.user, core.judge, core.judge.revealed)
    for value in reachable(view):
        assert not isinstance(value, Persona)
        assert all(value is not s for s in secrets), type(value)
    with pytest.raises(PermissionError, match="declares privileged = True"):
        view.hidden  # noqa: B018
    granted = agent_view(env, privileged=True).hidden
    assert isinstance(granted, HiddenState) and granted.persona is core.persona and granted.goal == core.goal


def test_the_tracker_view_is_read_only():
    env = gym.make(ACT_ID)
    env.reset(seed=0)
    tracker = agent_view(env).tracker
    with pytest.raises(ValueError, match="read-only"):
        tracker.rejected[0] = True
    with pytest.raises(AttributeError, match="read-only"):
        tracker.goal = "x"
    with pytest.raises(AttributeError, match="has no attribute 'nlu'"):
        tracker.nlu  # noqa: B018
    assert not env.unwrapped.tracker.rejected.any()
    assert tracker.goal == env.unwrapped.tracker.goal and isinstance(tracker.belief, np.ndarray)


class Spy:
    """Records what evaluation hands an agent."""

    name = "spy"
    seen: list = []

    def reset(self, view, seed=None):
        Spy.seen.append(view)
        self.view = view

    def act(self, observation, info):
        return self.view.act_table.bye


class PrivilegedSpy(Spy):
    privileged = True


def test_evaluation_hands_agents_a_view_and_privilege_only_when_declared():
    Spy.seen = []
    record = run_episode(gym.make(ACT_ID), Spy(), seed=0)
    assert isinstance(Spy.seen[0], AgentView) and not Spy.seen[0].privileged and not record.privileged
    env = gym.make(ACT_ID)
    record = run_episode(env, PrivilegedSpy(), seed=0)
    assert Spy.seen[1].privileged and record.privileged
    assert Spy.seen[1].hidden.persona is env.unwrapped.persona


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_registered_agent_plays_from_its_view(name):
    """Every shipped agent plays whole dialogues through its view; only the oracle asks for privilege."""
    agent = make_agent(name)
    mode = getattr(agent, "mode", None) or "act"
    records = evaluate(lambda: make_agent(name), split="test", episodes=3, mode=mode)
    assert len(records) == 3
    assert all(r.privileged == (name == "oracle") for r in records)
