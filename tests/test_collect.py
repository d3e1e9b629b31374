"""Demonstration collection: a datasets-readable chat data set, deterministic, non-privileged."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import dialog_env  # noqa: F401 - registers the environments
from agents.base import make_agent
from agents.collect import CollectConfig, CollectError, collect, load_demonstrations
from agents.prompts import NOTES_SYSTEM, PROMPTS, prompt_messages
from dialog_env.view import agent_view
from rewards import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    cmd = [sys.executable, "-m", "dialog_env.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_collect_is_deterministic_and_loads_with_datasets(tmp_path):
    cfg = CollectConfig(episodes=16, seed=5)
    a, b = collect(cfg, tmp_path / "a", progress=False), collect(cfg, tmp_path / "b", progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "README.md").read_bytes() == (tmp_path / "b" / "README.md").read_bytes()
    ds = load_demonstrations(tmp_path / "a")
    assert len(ds) == 16 and ds["seed"] == list(range(5, 21))
    assert {"messages", "prompt_style", "prompt_messages", "outcome", "success", "return", "reward_terms"} <= set(
        ds.column_names
    )
    for row in ds:
        assert row["messages"][0] == {"role": "system", "content": NOTES_SYSTEM}
        assert set(row["reward_terms"]) == set(DEFAULT_WEIGHTS)
        weighted = sum(DEFAULT_WEIGHTS[k] * v for k, v in row["reward_terms"].items())
        assert weighted == pytest.approx(row["return"])
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        assert all("\n[" in u and u.endswith("]") for u in users)  # every user turn carries its note
    # a different seed gives different dialogues
    c = collect(CollectConfig(episodes=16, seed=6), tmp_path / "c", progress=False)
    assert c.read_bytes() != a.read_bytes()


def test_agent_turns_use_varied_phrasings(tmp_path):
    collect(CollectConfig(episodes=40), tmp_path, progress=False)
    firsts = {row["messages"][2]["content"] for row in load_demonstrations(tmp_path)}
    assert len(firsts) >= 15


@pytest.mark.parametrize("style", list(PROMPTS))
def test_prompt_messages_are_exactly_the_lm_agents_prompt(tmp_path, style):
    collect(CollectConfig(episodes=6, prompt=style), tmp_path, progress=False)
    env = gym.make("dialog_env/PersonaRecText-v0", split="train")
    for row in load_demonstrations(tmp_path):
        env.reset(seed=row["seed"])
        n = row["prompt_messages"]
        expected = prompt_messages(env.unwrapped, style=style)
        assert row["messages"][:n] == expected[:n]
        assert row["messages"][n]["content"].startswith(env.unwrapped.messages()[0]["content"])
        assert n == (1 if style == "notes" else 8)


def test_collect_refuses_privileged_agents(tmp_path):
    with pytest.raises(CollectError, match="hidden persona"):
        collect(CollectConfig(agent="oracle", episodes=2), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    path = collect(CollectConfig(agent="oracle", episodes=2, allow_privileged=True), tmp_path / "y", progress=False)
    assert len(path.read_text().splitlines()) == 2


def test_collect_from_other_agents(tmp_path):
    for agent in ("rule", "always_recommend"):
        collect(CollectConfig(agent=agent, episodes=3), tmp_path / agent, progress=False)
        assert {r["agent"] for r in load_demonstrations(tmp_path / agent)} == {agent}


def test_cli_collect_and_its_errors(tmp_path):
    out = tmp_path / "data"
    r = cli("collect", "--episodes", "3", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "wrote 3 dialogues" in r.stdout
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    r = cli("collect", "--episodes", "3", "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert cli("collect", "--episodes", "3", "--out", str(out), "--overwrite").returncode == 0
    r = cli("collect", "--agent", "oracle", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--allow-privileged" in r.stderr
    r = cli("collect", "--prompt", "verbose", "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and "prompt" in r.stderr and "notes" in r.stderr
    r = cli("collect", "--episodes", "0", "--out", str(tmp_path / "q"))
    assert r.returncode == 2 and "episodes" in r.stderr


def test_collect_against_another_user(tmp_path):
    spec = "tests.test_users:MinimalUser"
    path = collect(CollectConfig(episodes=4, seed=2, user=spec), tmp_path / "m", progress=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["user"] for r in rows] == [spec] * 4
    assert all(r["messages"][1]["content"].startswith("I want a ") for r in rows)  # MinimalUser's opening
    assert f"user `{spec}`" in (tmp_path / "m" / "README.md").read_text()
    agenda = collect(CollectConfig(episodes=4, seed=2), tmp_path / "a", progress=False)
    assert agenda.read_text() != path.read_text()
    with pytest.raises(CollectError, match="user: .*'agenda'"):
        collect(CollectConfig(user="nobody"), tmp_path / "x", progress=False)
    r = cli("collect", "--user", "nobody", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "user" in r.stderr and "agenda" in r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_load_demonstrations_errors(tmp_path):
    with pytest.raises(CollectError, match="does not exist"):
        load_demonstrations(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectError, match="holds no data set"):
        load_demonstrations(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello"}\n')
    with pytest.raises(CollectError, match="messages"):
        load_demonstrations(bad)


def test_load_demonstrations_reads_each_folder_s_own_rows(tmp_path):
    """Two data sets in folders of one name (as parallel test workers make) never share cached rows."""
    for parent, episodes in (("a", 2), ("b", 3)):
        collect(CollectConfig(episodes=episodes), tmp_path / parent / "data", progress=False)
    assert len(load_demonstrations(tmp_path / "a" / "data")) == 2
    assert len(load_demonstrations(tmp_path / "b" / "data")) == 3
    collect(CollectConfig(episodes=4, seed=9), tmp_path / "a" / "data2", progress=False)
    (tmp_path / "a" / "data").rename(tmp_path / "a" / "old")
    (tmp_path / "a" / "data2").rename(tmp_path / "a" / "data")  # the same path, collected again
    assert [r["seed"] for r in load_demonstrations(tmp_path / "a" / "data")] == [9, 10, 11, 12]


def test_roll_in_rows_are_the_teachers_replies_at_the_roll_in_policys_states(tmp_path):
    """DAgger's labels: the roll-in policy's own dialogue (unchanged by the labelling) up to each of its
    states, then the teacher's reply at that state."""
    cfg = CollectConfig(agent="planner", roll_in="rule", episodes=5, seed=3)
    a, b = collect(cfg, tmp_path / "a", progress=False), collect(cfg, tmp_path / "b", progress=False)
    assert a.read_bytes() == b.read_bytes()
    rows = list(load_demonstrations(tmp_path / "a"))
    collect(CollectConfig(agent="rule", episodes=5, seed=3), tmp_path / "rule", progress=False)
    alone = {r["seed"]: r for r in load_demonstrations(tmp_path / "rule")}
    assert {r["seed"] for r in rows} == set(alone)
    env = gym.make("dialog_env/PersonaRecText-v0", split="train")
    differs = 0
    for seed, played in alone.items():
        states = [r for r in rows if r["seed"] == seed]
        assert [r["turn"] for r in states] == list(range(played["turns"]))
        env.reset(seed=seed)
        teacher = make_agent("planner")
        teacher.reset(env, seed=seed)
        stream = random.Random(f"teacher labels {seed}")
        for row in states:
            n = row["train_from"]
            assert n == len(row["messages"]) - 1 and row["messages"][n]["role"] == "assistant"
            assert row["messages"][:n] == played["messages"][:n]  # the roll-in's dialogue, as it played alone
            assert (row["rollin"], row["agent"], row["outcome"]) == ("rule", "planner", played["outcome"])
            view = agent_view(env)
            with view.phrasing_stream(stream):
                assert row["messages"][n]["content"] == teacher.act(None, {})
            rollin_reply = played["messages"][n]["content"]
            differs += row["messages"][n]["content"] != rollin_reply
            env.step(rollin_reply)
    assert differs > len(rows) // 2  # the planner does not speak like the rule agent
    with pytest.raises(CollectError, match="roll_in.*hidden persona"):
        collect(CollectConfig(roll_in="oracle", episodes=2), tmp_path / "x", progress=False)


def test_a_stopped_collection_resumes_to_the_uninterrupted_data_set(tmp_path, monkeypatch):
    import agents.collect as C

    cfg = CollectConfig(episodes=10, seed=3)
    whole = collect(cfg, tmp_path / "whole", progress=False).read_bytes()
    real, calls = C.dialogue_row, []

    def dies_on_the_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as a Ctrl-C or a kill between two dialogues
        return real(*args)

    monkeypatch.setattr(C, "dialogue_row", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        collect(cfg, tmp_path / "cut", progress=False)
    journal = C.journal_path(tmp_path / "cut")
    assert not (tmp_path / "cut").exists() and len(journal.read_text().splitlines()) == 1 + 4  # header + 4 rows
    with journal.open("a") as f:
        f.write('{"seed": 9, "messa')  # a line a kill cut short is played again, not read
    monkeypatch.setattr(C, "dialogue_row", real)
    with pytest.raises(CollectError, match="other arguments.*--overwrite"):
        collect(CollectConfig(episodes=10, seed=3, noise=0.15), tmp_path / "cut", progress=False)
    resumed = collect(cfg, tmp_path / "cut", progress=False)
    assert resumed.read_bytes() == whole and not journal.exists()
    assert (tmp_path / "cut" / "README.md").read_bytes() == (tmp_path / "whole" / "README.md").read_bytes()
