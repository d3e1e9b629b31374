"""An LSTM policy that respects the env's action mask (RL² with masks).

sb3-contrib's ``RecurrentPPO`` has no action masking, which ``MaskablePPO`` has; against a masked
memoryless baseline an unmasked recurrent policy spends its first hundred thousand steps learning
which acts are pointless. :class:`MaskedLstmPolicy` reads the mask from the observation's last
``n`` entries (appended by :class:`dialog_env.wrappers.ActionMaskObservation`) and gives the masked
acts no probability, in rollouts, in the loss and at evaluation.
"""

from __future__ import annotations

from typing import Any

import torch as th
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.distributions import Distribution

MASKED_LOGIT = -1e8


class MaskedLstmPolicy(RecurrentActorCriticPolicy):
    """``MlpLstmPolicy`` whose action distribution excludes the acts the observation's mask forbids."""

    _mask: th.Tensor | None = None

    def _stash(self, obs: th.Tensor) -> None:
        n = int(self.action_space.n)  # type: ignore[attr-defined]
        self._mask = obs.reshape(obs.shape[0], -1)[:, -n:] > 0.5

    def forward(self, obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
        """As the parent's, with the mask of ``obs`` applied."""
        self._stash(obs)
        return super().forward(obs, *args, **kwargs)

    def get_distribution(self, obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
        """As the parent's, with the mask of ``obs`` applied."""
        self._stash(obs)
        return super().get_distribution(obs, *args, **kwargs)

    def evaluate_actions(self, obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
        """As the parent's, with the mask of ``obs`` applied (padding rows allow every act)."""
        self._stash(obs)
        if self._mask is not None:
            self._mask = self._mask | ~self._mask.any(dim=1, keepdim=True)
        return super().evaluate_actions(obs, *args, **kwargs)

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Distribution:
        logits = self.action_net(latent_pi)
        if self._mask is not None and self._mask.shape == logits.shape:
            logits = logits.masked_fill(~self._mask, MASKED_LOGIT)
        return self.action_dist.proba_distribution(action_logits=logits)


POLICIES = {"MaskedLstmPolicy": MaskedLstmPolicy}
"""Policy names the hyper-parameter files may use beside SB3's own."""
