"""Bad input found by trying the project as a new user would: each gets a clear error, nothing is lost."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from dialog_env.lm import model_spec_problem, save_pretrained_atomic
from dialog_env.world import DEFAULT_WORLD_PATH, WorldError, parse_world


@pytest.fixture(scope="module")
def world_data():
    return yaml.safe_load(DEFAULT_WORLD_PATH.read_text())


def first(mapping):
    return next(iter(mapping.values()))


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["items"][0].__setitem__("exclude", {}),
         r"items\[0\]\.exclude: unknown field 'exclude' \(did you mean 'excludes'\?\)"),
        (lambda d: d.__setitem__("catgories", {}),
         r"top level\.catgories: unknown field 'catgories' \(did you mean 'categories'\?\)"),
        (lambda d: first(d["slots"]).__setitem__("held", []), r"unknown field 'held' \(did you mean 'held_out'\?\)"),
        (lambda d: first(d["categories"]).__setitem__("nouns", "x"), r"unknown field 'nouns'"),
    ],
)  # fmt: skip
def test_world_file_with_an_unknown_key_is_refused(world_data, edit, needle):
    """A misspelt key used to load silently and drop what it meant (e.g. an item's hard constraint)."""
    data = copy.deepcopy(world_data)
    edit(data)
    with pytest.raises(WorldError, match=needle):
        parse_world(data, "w.yaml")
    parse_world(copy.deepcopy(world_data), "w.yaml")  # the shipped world has none


def test_model_specs_that_read_as_missing_paths_are_named(tmp_path):
    assert model_spec_problem("smollm2") is None
    assert model_spec_problem("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # a hub id: left to transformers
    for bad in ("runs/x/final_model", "./model", "/abs/model", "~/m", "a//b"):
        assert "model: no such folder" in model_spec_problem(bad), bad
    (tmp_path / "empty").mkdir()
    assert "holds no saved model (no config.json)" in model_spec_problem(str(tmp_path / "empty"))
    (tmp_path / "file").write_text("x")
    assert "is a file" in model_spec_problem(str(tmp_path / "file"))
    assert "expected 'smollm2'" in model_spec_problem("")


class _Saver:
    def __init__(self, text, name="weights.txt"):
        self.text, self.name = text, name

    def save_pretrained(self, folder):
        (folder / self.name).write_text(self.text)


def test_atomic_model_save_keeps_the_old_folder_until_the_new_one_is_in(tmp_path, monkeypatch):
    folder = tmp_path / "final_model"
    save_pretrained_atomic(_Saver("old"), _Saver("tok", "tokenizer.txt"), folder)
    assert (folder / "weights.txt").read_text() == "old"

    real = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder is aside; moving the new one in fails
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        save_pretrained_atomic(_Saver("new"), _Saver("tok", "tokenizer.txt"), folder)
    monkeypatch.setattr(os, "replace", real)
    assert (folder / "weights.txt").read_text() == "old"  # put back whole
    save_pretrained_atomic(_Saver("new"), _Saver("tok", "tokenizer.txt"), folder)
    assert (folder / "weights.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_model"]  # no leftovers


def test_an_sb3_model_trained_on_another_observation_width_gets_a_clear_error():
    """A model saved before the observation gained the challenge intent (354 wide) is refused by name."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import PPO

    from agents.sb3.policy import SB3Agent

    class Narrow(gym.Env):
        observation_space = gym.spaces.Box(0.0, 1.0, (354,), np.float32)
        action_space = gym.spaces.Discrete(70)

    agent = SB3Agent(PPO("MlpPolicy", Narrow(), n_steps=8, batch_size=8, device="cpu"))
    env = gym.make("dialog_env/PersonaRec-v0", split="test")
    obs, info = env.reset(seed=0)
    agent.reset(env, seed=0)
    with pytest.raises(ValueError, match=r"trained on observations of shape \(354,\), this env gives \(355,\)"):
        agent.act(obs, info)
