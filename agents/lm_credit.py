"""Turn-level credit for multi-turn GRPO: one advantage per agent turn, not one per dialogue.

TRL's GRPO gives every token of a rollout the same advantage, the dialogue's return normalised in
its group. In a dialogue that is too coarse: a question that repeats a known fact, or a
recommendation the user turns down, shares the credit of a dialogue that succeeded anyway, and a
good question shares the blame of a dialogue that failed later. Following turn-level credit
assignment for multi-turn agents (MT-GRPO), every agent token gets

    A(token in turn t of dialogue i) = A_i + turn_credit * (r_it - mean_g) / std_g

where ``A_i`` is TRL's dialogue advantage, ``r_it`` the immediate reward of turn ``t`` (the step
reward without the terms that score the whole dialogue, :data:`agents.lm_grpo.OUTCOME_TERMS`: an
accepted recommendation keeps its success), and ``mean_g``, ``std_g`` are taken over every turn of
every dialogue in the group (the same persona task). TRL's loss takes advantages of shape (B, T) as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from agents.lm_trainer import DialogueGRPOTrainer


def turn_advantages(
    dialogue_advantages: torch.Tensor,
    token_turns: Sequence[Sequence[int]],
    turn_rewards: Sequence[Sequence[float]],
    group_size: int,
    width: int,
    turn_credit: float,
) -> torch.Tensor:
    """Per-token advantages of shape ``(B, width)``.

    Args:
        dialogue_advantages: TRL's advantage per rollout, shape ``(B,)``.
        token_turns: Per rollout, the agent turn of each completion token (-1: not an agent token).
        turn_rewards: Per rollout, the immediate reward of each agent turn.
        group_size: Rollouts per task (``num_generations``); groups are consecutive rows.
        width: Padded completion length of the batch.
        turn_credit: Weight of the turn term (0: every token gets the dialogue's advantage).

    Returns:
        The dialogue advantage on every token plus the weighted, group-normalised turn reward on
        agent tokens (padding and non-agent tokens keep the dialogue advantage; the loss masks them).

    Raises:
        ValueError: Rows that do not split into whole groups, or per-row lists of the wrong length.
    """
    rows = dialogue_advantages.shape[0]
    if len(token_turns) != rows or len(turn_rewards) != rows:
        raise ValueError(f"token_turns and turn_rewards need one entry per rollout ({rows})")
    if group_size < 1 or rows % group_size:
        raise ValueError(f"{rows} rollouts do not split into groups of {group_size}")
    out = dialogue_advantages.detach().float().unsqueeze(1).repeat(1, width)
    if turn_credit == 0:
        return out.to(dialogue_advantages.dtype)
    for start in range(0, rows, group_size):
        pooled = [r for k in range(start, start + group_size) for r in turn_rewards[k]]
        if len(pooled) < 2:
            continue
        values = torch.tensor(pooled, dtype=torch.float32)
        mean, std = values.mean(), values.std()
        if not std > 1e-6:
            continue
        for k in range(start, start + group_size):
            turns = torch.tensor(list(token_turns[k])[:width], dtype=torch.long)
            if turns.numel() == 0:
                continue
            scaled = (torch.tensor(list(turn_rewards[k]), dtype=torch.float32) - mean) / std
            agent = turns >= 0
            if agent.any() and int(turns.max()) >= scaled.numel():
                raise ValueError(f"rollout {k}: a token names turn {int(turns.max())} of {scaled.numel()}")
            bonus = torch.zeros(turns.numel())
            bonus[agent] = turn_credit * scaled[turns[agent]]
            out[k, : turns.numel()] += bonus
    return out.to(dialogue_advantages.dtype)


class TurnCreditGRPOTrainer(DialogueGRPOTrainer):
    """:class:`~agents.lm_trainer.DialogueGRPOTrainer` whose advantages are per agent turn (see the module docstring).

    Needs a rollout function that keeps its last output in ``last_output`` with ``token_turns`` and
    ``turn_rewards`` (:class:`agents.lm_grpo.DialogueRollout` does).

    Args:
        *args: ``DialogueGRPOTrainer`` arguments.
        turn_credit: Weight of the turn term.
        **kwargs: ``DialogueGRPOTrainer`` keyword arguments.
    """

    def __init__(self, *args: Any, turn_credit: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turn_credit = float(turn_credit)

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        last = getattr(self.rollout_func, "last_output", None)
        if not self.turn_credit or not self.model.training or last is None:
            return output
        advantages = output["advantages"]
        if advantages.dim() != 1:
            return output
        output["advantages"] = turn_advantages(
            advantages,
            last["token_turns"],
            last["turn_rewards"],
            self.num_generations,
            output["completion_ids"].shape[1],
            self.turn_credit,
        ).to(advantages.device)
        return output
