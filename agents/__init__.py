"""Agents for dialog_env: the protocol, a registry and baseline policies."""

from agents.base import AGENTS, Agent, make_agent, register_agent
from agents.baselines import OracleAgent, RandomAgent, RuleAgent
from agents.degenerate import (
    AlwaysRecommendAgent,
    AskAllAgent,
    AskSameSlotAgent,
    ByeAgent,
    GreetAgent,
    NameAllAgent,
    RuleRestateAgent,
    SilentAgent,
)
from agents.planner import PlannerAgent

__all__ = [
    "AGENTS",
    "AlwaysRecommendAgent",
    "Agent",
    "AskAllAgent",
    "AskSameSlotAgent",
    "ByeAgent",
    "GreetAgent",
    "NameAllAgent",
    "OracleAgent",
    "PlannerAgent",
    "RandomAgent",
    "RuleAgent",
    "RuleRestateAgent",
    "SilentAgent",
    "make_agent",
    "register_agent",
]
