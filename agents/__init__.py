"""Agents for dialog_env: the protocol, a registry and baseline policies."""

from agents.base import AGENTS, Agent, make_agent, register_agent
from agents.baselines import OracleAgent, RandomAgent, RuleAgent

__all__ = ["AGENTS", "Agent", "OracleAgent", "RandomAgent", "RuleAgent", "make_agent", "register_agent"]
