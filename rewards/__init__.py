"""Reward library for dialog_env: the protocol, built-in terms, a registry and a TRL adapter.

Plug a reward in by registered name, by ``"package.module:attr"`` string, or by an entry point
in the ``dialog_env.rewards`` group (see docs/REWARDS.md).
"""

from rewards.base import Reward, RewardError, call_reward, per_turn, reward_name
from rewards.builtin import (
    discovery,
    persona_consistency,
    redundancy,
    rejection,
    task_failure,
    task_success,
    turn_cost,
)
from rewards.compose import DEFAULT_WEIGHTS, WeightedReward
from rewards.registry import ENTRY_POINT_GROUP, REWARDS, get_reward, register_reward
from rewards.trl import to_trl

__all__ = [
    "DEFAULT_WEIGHTS",
    "ENTRY_POINT_GROUP",
    "REWARDS",
    "Reward",
    "RewardError",
    "WeightedReward",
    "call_reward",
    "discovery",
    "get_reward",
    "per_turn",
    "persona_consistency",
    "redundancy",
    "register_reward",
    "reward_name",
    "rejection",
    "task_failure",
    "task_success",
    "to_trl",
    "turn_cost",
]
