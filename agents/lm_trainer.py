"""``GRPOTrainer`` whose log-prob passes skip padding: every rollout is scored at its own length.

TRL scores a batch of rollouts as one padded tensor: prompts left-padded to the longest prompt,
completions right-padded to the longest completion. Dialogues differ a lot in length (a policy that
recommends early ends in two turns, a failed dialogue runs to the turn limit; a branch point late in
a dialogue has a prompt five times longer than one at its start), so most of a padded batch can be
padding, and on a CPU the padding costs as much as real tokens. Here each rollout's real tokens are
scored on their own (no padding at all), and the log-probs are put back where TRL expects them.

With rotary position embeddings only relative positions enter attention, so dropping a row's left
padding changes nothing but rounding (tested against the padded pass).

``advantage="greedy"`` (branch mode) replaces GRPO's group-mean baseline with the return of the
policy's *greedy* reply at the same branch point (ReMax's baseline) and keeps only the positive
part: a sampled reply is reinforced by how much it beats what the greedy policy says there, and a
reply no better than that gets no gradient. GRPO's group mean compares samples with samples; at a
temperature the sampled replies include poor ones the greedy policy never says, so the group
baseline can push a reply the greedy policy says well down with them. (Measured in
docs/BENCHMARKS.md: with the planner playing on, this baseline did not stop the drift to asking less
either; the cause there is the roll-out, not the baseline.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from rewards.learned import restore_reward_states, reward_states


def unpadded_span(mask_row: torch.Tensor) -> tuple[int, int] | None:
    """``(start, end)`` of a row's real tokens when they are contiguous, else ``None``."""
    real = torch.nonzero(mask_row, as_tuple=False).flatten()
    if real.numel() == 0:
        return None
    start, end = int(real[0]), int(real[-1]) + 1
    return (start, end) if real.numel() == end - start else None


ADVANTAGES = ("group", "greedy")


def greedy_advantages(returns: Sequence[float], baselines: Sequence[float], group_size: int) -> torch.Tensor:
    """``max(0, r - b) / max(std_group(r), 1)`` per rollout: the positive part of the gain over the greedy reply.

    Args:
        returns: Each rollout's return (groups are consecutive rows).
        baselines: The return of the greedy reply at the same branch point, per rollout.
        group_size: Rollouts per branch point.

    Raises:
        ValueError: Lists of different lengths, or rows that do not split into whole groups.
    """
    if len(returns) != len(baselines):
        raise ValueError(f"returns ({len(returns)}) and baselines ({len(baselines)}) need one entry per rollout")
    if group_size < 1 or len(returns) % group_size:
        raise ValueError(f"{len(returns)} rollouts do not split into groups of {group_size}")
    r = torch.tensor(list(returns), dtype=torch.float32).view(-1, group_size)
    b = torch.tensor(list(baselines), dtype=torch.float32).view(-1, group_size)
    scale = r.std(dim=1, keepdim=True, unbiased=False).clamp(min=1.0)
    return ((r - b).clamp(min=0.0) / scale).flatten()


ROLLOUT_STATE = "rollout_state.pt"
"""File of a GRPO checkpoint with the buffered rollouts, the micro-step counter and the learned reward terms."""


class DialogueGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with padding-free log-prob passes and an optional greedy baseline (module docstring).

    Args:
        *args: ``GRPOTrainer`` arguments.
        padding_free: Score each rollout at its own length (False: TRL's padded batches).
        advantage: ``group`` (GRPO's group-normalised return) or ``greedy`` (the positive part of the gain
            over the greedy reply; needs a rollout function that keeps ``baseline`` in its ``last_output``).
        **kwargs: ``GRPOTrainer`` keyword arguments.
    """

    def __init__(self, *args: Any, padding_free: bool = True, advantage: str = "group", **kwargs: Any) -> None:
        if advantage not in ADVANTAGES:
            raise ValueError(f"advantage: expected one of {list(ADVANTAGES)}, got {advantage!r}")
        super().__init__(*args, **kwargs)
        self.padding_free, self.advantage = bool(padding_free), advantage

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # The rollouts still to be trained on (num_iterations > 1) and the micro-step counter that says
        # when to sample new ones: without them a resume would sample afresh mid-cycle and train on
        # other dialogues than the uninterrupted run. The learned reward terms (the discriminator) too:
        # without them a resume would score with an untrained one. Written before the Trainer's files, whose
        # trainer_state.json (last) marks the checkpoint complete.
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"step": self._step, "buffered_inputs": self._buffered_inputs, "reward_states": reward_states()},
                folder / ROLLOUT_STATE,
            )
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint) / ROLLOUT_STATE if checkpoint else None
        if path is not None and path.is_file():
            state = torch.load(path, map_location=self.accelerator.device, weights_only=False)
            self._step, self._buffered_inputs = state["step"], state["buffered_inputs"]
            restore_reward_states(state.get("reward_states", []))

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if self.advantage == "group" or not self.model.training:
            return output
        last = getattr(self.rollout_func, "last_output", None)
        if last is None or "baseline" not in last:
            raise ValueError("advantage 'greedy' needs a rollout that plays the greedy reply (branch mode)")
        advantages = greedy_advantages(last["env_return"], last["baseline"], self.num_generations)
        output["advantages"] = advantages.to(output["advantages"].device, output["advantages"].dtype)
        return output

    def _get_per_token_logps_and_entropies(  # type: ignore[override]
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        spans = [unpadded_span(row) for row in attention_mask]
        extra_inputs = any(v is not None for v in kwargs.values())  # images, token types: TRL's own pass
        if not self.padding_free or compute_aux_loss or extra_inputs or any(s is None for s in spans):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **kwargs,
            )  # fmt: skip
        width = input_ids.size(1)
        first = width - logits_to_keep  # padded column of the first kept position
        logps, entropies = [], []
        for row, span in enumerate(spans):
            assert span is not None
            start, end = span
            ids = input_ids[row : row + 1, start:end]
            labels = ids.clone()
            labels[:, : max(first - start, 0)] = -100  # only completion tokens are scored
            with self.accelerator.autocast():
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
            # out.log_probs[0, t] scores token t + 1 of the row; kept column j is padded column first + j.
            lo, hi = max(first, start + 1), end  # padded columns with a score
            logps.append(self._place(out.log_probs[0], lo, hi, start, first, logits_to_keep))
            if compute_entropy:
                entropies.append(self._place(out.entropy[0], lo, hi, start, first, logits_to_keep))
        return torch.stack(logps), (torch.stack(entropies) if compute_entropy else None), None

    @staticmethod
    def _place(values: torch.Tensor, lo: int, hi: int, start: int, first: int, keep: int) -> torch.Tensor:
        """Row values (indexed by trimmed position - 1) at the kept columns ``[lo, hi)``; zeros elsewhere."""
        if hi <= lo:
            return values.new_zeros(keep) + 0.0 * values.sum()  # stays in the graph
        mid = values[lo - start - 1 : hi - start - 1]
        return torch.cat([values.new_zeros(lo - first), mid, values.new_zeros(keep - (hi - first))])
