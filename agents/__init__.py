"""Agents for dialog_env: the protocol, a registry and baseline policies."""

from agents.base import AGENTS, Agent, make_agent, register_agent
from agents.baselines import OracleAgent, RandomAgent, RuleAgent
from agents.degenerate import AlwaysRecommendAgent, AskSameSlotAgent, ByeAgent
from agents.planner import PlannerAgent

__all__ = [
    "AGENTS",
    "AlwaysRecommendAgent",
    "Agent",
    "AskSameSlotAgent",
    "ByeAgent",
    "OracleAgent",
    "PlannerAgent",
    "RandomAgent",
    "RuleAgent",
    "make_agent",
    "register_agent",
]
