"""The evaluation agent of a trained SB3 model (``sb3:<run>``) and model loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.sb3.checkpoints import latest_checkpoint
from agents.sb3.config import ALGOS, ConfigError
from dialog_env.view import AgentView, agent_view

# -- the evaluation agent ----------------------------------------------------------------------


class SB3Agent:
    """An SB3 model as a dialog_env agent (deterministic actions; masks for MaskablePPO).

    Args:
        model: A trained model, or a path: a ``.zip`` file or a run folder (its
            ``best_model.zip``, else ``final_model.zip``, else the last checkpoint).
        algo: The algorithm name when loading a bare ``.zip`` with no ``config.yaml`` beside it.
    """

    name = "sb3"

    def __init__(self, model: BaseAlgorithm | str | Path, algo: str | None = None) -> None:
        self.model = model if isinstance(model, BaseAlgorithm) else load_model(model, algo)
        self.masked = isinstance(self.model, MaskablePPO)
        self.recurrent = isinstance(self.model, RecurrentPPO)
        from agents.sb3.recurrent import MaskedLstmPolicy

        self.mask_in_observation = isinstance(self.model.policy, MaskedLstmPolicy)

    def reset(self, env: gym.Env | AgentView, seed: int | None = None) -> None:
        """Take the agent's view; a recurrent policy starts from a fresh state (once per episode)."""
        self.core = agent_view(env)
        self._state: Any = None
        self._episode_start = True
        self._shape_checked = False
        self.text_mode = self.core.text_actions
        self.encoder = None
        if self.text_mode:
            from dialog_env.wrappers import BeliefEncoder

            self.encoder = BeliefEncoder(self.core)

    def act(self, observation: Any, info: dict[str, Any]) -> int | str:
        """The model's deterministic action (rendered as text in the text env)."""
        obs = self.encoder() if self.encoder is not None else observation
        if self.mask_in_observation:  # the policy reads the mask where training put it: after the observation
            obs = np.concatenate(
                [np.asarray(obs, dtype=np.float32).ravel(), self.core.action_masks().astype(np.float32)]
            )
        want = self.model.observation_space.shape
        if not self._shape_checked and want is not None and np.shape(obs) != want:
            raise ValueError(
                f"sb3 model: trained on observations of shape {want}, this env gives {np.shape(obs)}; it was trained "
                "on another env or world (models from before the observation gained the `challenge` user intent "
                "have 354 values where PersonaRec-v0 now has 355): train it again on this env"
            )
        self._shape_checked = True  # once a dialogue: the width does not change within one
        kwargs = {}
        if self.masked:
            kwargs["action_masks"] = self.core.action_masks() if self.text_mode else info["action_mask"]
        if self.recurrent:
            kwargs = {"state": self._state, "episode_start": np.array([self._episode_start])}
            self._episode_start = False
        action, state = self.model.predict(obs, deterministic=True, **kwargs)
        if self.recurrent:
            self._state = state
        a = int(action)
        return self.core.act_to_text(a) if self.text_mode else a


def load_model(path: str | Path, algo: str | None = None, env: VecEnv | None = None) -> BaseAlgorithm:
    """Load a model from a ``.zip`` or a run folder.

    Raises:
        ConfigError: Nothing loadable at ``path`` or the algorithm cannot be determined.
    """
    path = Path(path)
    zip_path = path
    if path.is_dir():
        candidates = [path / "best_model.zip", path / "final_model.zip"]
        last = latest_checkpoint(path)
        zip_path = next((c for c in candidates if c.is_file()), last)
        if zip_path is None:
            raise ConfigError(f"{path}: no best_model.zip, final_model.zip or checkpoint in this run folder")
    if not zip_path.is_file():
        raise ConfigError(f"{zip_path}: model file not found")
    if algo is None:
        for folder in list(zip_path.parents)[:3]:  # the run folder: beside the zip, or above checkpoints/ or rounds/k/
            cfg = folder / "config.yaml"
            if cfg.is_file():
                algo = (yaml.safe_load(cfg.read_text()) or {}).get("algo")
                break
    if algo not in ALGOS:
        raise ConfigError(f"{zip_path}: cannot tell the algorithm; pass algo= one of {list(ALGOS)}")
    return ALGOS[algo].load(zip_path, env=env, device="cpu")
