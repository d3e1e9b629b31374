"""Alternating adversarial training: a tiny-budget run, its resume, its errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agents.adversarial import AdversarialConfig, AdversarialError, train_adversarial

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--adversary-steps", "256", "--assistant-steps", "256", "--eval-episodes", "4", "--n-envs", "2"]


def cli(*args):
    cmd = [sys.executable, "-m", "dialog_env.cli", "train", "adversarial", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_train_adversarial_smoke_run_and_resume_continue_the_round_count(tmp_path):
    run = tmp_path / "adv"
    r = cli("--rounds", "1", *TINY, "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    assert "round 1:" in r.stdout
    for name in ("config.yaml", "metrics.json", "state.json", "rounds.png", "final_model.zip", "adversary.zip"):
        assert (run / name).is_file(), name
    assert (run / "rounds" / "round_1" / "assistant.zip").is_file()
    assert any((run / "tb").rglob("events.out.tfevents*"))
    r = cli("--resume", str(run), "--rounds", "2")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "after round 1 of 2" in r.stdout and "round 2:" in r.stdout
    state = json.loads((run / "state.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert state["rounds_done"] == 2
    assert state["pool"] == ["rounds/round_1/adversary.zip", "rounds/round_2/adversary.zip"]
    assert [row["round"] for row in metrics["rounds"]] == [0, 1, 2]
    assert metrics["rounds"][2]["assistant_timesteps"] > metrics["rounds"][1]["assistant_timesteps"]
    for key in ("before_vs_adversary", "after_vs_adversary", "after_vs_agenda"):
        assert 0.0 <= metrics["rounds"][2][key]["success"]["mean"] <= 1.0
    # The trained adversary plugs into every env.
    r = subprocess.run(
        [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "rule", f"hardened=sb3:{run / 'final_model.zip'}",
         f"round1=sb3:{run / 'rounds' / 'round_1' / 'assistant.zip'}", "--user", f"adv:{run / 'adversary.zip'}",
         "--episodes", "3", "--split", "test", "--out", str(tmp_path / "ev")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| hardened |" in r.stdout and "| round1 |" in r.stdout


def test_a_partial_round_is_redone_on_resume_as_the_uninterrupted_run_played_it(tmp_path):
    from agents.sb3.policy import load_model

    small = {"adversary_steps": 256, "assistant_steps": 256, "eval_episodes": 3, "n_envs": 2}
    reference = train_adversarial(AdversarialConfig(rounds=2, **small), tmp_path / "reference")
    run = tmp_path / "adv"
    train_adversarial(AdversarialConfig(rounds=1, **small), run)
    # A kill during round 2 leaves its adversary written but the round not counted.
    (run / "rounds" / "round_2").mkdir()
    (run / "rounds" / "round_2" / "adversary.zip").write_bytes(b"partial")
    train_adversarial(None, run, resume=True, rounds=2)
    assert json.loads((run / "state.json").read_text())["rounds_done"] == 2
    assert (run / "rounds" / "round_2" / "adversary.zip").read_bytes() != b"partial"
    for name in ("final_model.zip", "adversary.zip"):
        got, want = load_model(run / name, "maskable_ppo"), load_model(reference / name, "maskable_ppo")
        assert got._n_updates == want._n_updates and got.num_timesteps == want.num_timesteps
        a, b = got.policy.state_dict(), want.policy.state_dict()
        assert all((a[k] == b[k]).all() for k in a), name
    rounds = json.loads((run / "metrics.json").read_text())["rounds"]
    assert rounds == json.loads((reference / "metrics.json").read_text())["rounds"]


def test_attack_only_trains_best_responses_to_a_frozen_assistant(tmp_path):
    """assistant_steps 0: every round's adversary trains against the same, unchanged assistant."""
    from agents.sb3.policy import load_model

    small = {"adversary_steps": 256, "eval_episodes": 3, "n_envs": 2}
    start = train_adversarial(AdversarialConfig(rounds=1, assistant_steps=256, **small), tmp_path / "start")
    given = start / "final_model.zip"
    run = train_adversarial(
        AdversarialConfig(assistant=str(given), rounds=2, assistant_steps=0, **small), tmp_path / "a"
    )
    got, want = load_model(run / "final_model.zip", "maskable_ppo"), load_model(given, "maskable_ppo")
    assert got.num_timesteps == want.num_timesteps
    a, b = got.policy.state_dict(), want.policy.state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    rounds = json.loads((run / "metrics.json").read_text())["rounds"]
    first, second = (r["adversary_timesteps"] for r in rounds[1:])
    assert 0 < first < second  # the adversary trained on in round 2 (SB3 rounds steps up to whole rollouts)
    assert all(r["after_vs_adversary"] == r["before_vs_adversary"] for r in rounds[1:])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rounds": 0}, "rounds"),
        ({"agenda_fraction": 1.5}, "agenda_fraction"),
        ({"agenda_fraction": True}, "agenda_fraction"),
        ({"assistant_reward_weights": {"no_such_term": 1}}, "assistant_reward_weights"),
        ({"assistant_reward_weights": "{persona_consistency: "}, "assistant_reward_weights"),
        ({"split": "nope"}, "split"),
        ({"assistant": "/no/such/run"}, "assistant"),
        ({"noise": 1.0}, "noise"),
        ({"assistant_steps": -1}, "assistant_steps"),
        ({"assistant_steps": 0}, "assistant"),  # attack only needs an assistant to attack
    ],
)
def test_bad_arguments_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(AdversarialError, match=f"^{field}: "):
        train_adversarial(AdversarialConfig(**kwargs), tmp_path / "r")


def test_existing_run_and_missing_run_errors(tmp_path):
    r = cli("--resume", str(tmp_path / "none"))
    assert r.returncode == 2 and "not an adversarial run" in r.stderr
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("rounds: 1\n")
    r = cli("--run-dir", str(tmp_path / "r"), *TINY)
    assert r.returncode == 2 and "--resume" in r.stderr


def test_sigint_stops_at_a_rollout_boundary_and_prints_the_resume_command(tmp_path):
    import signal
    import time

    run = tmp_path / "adv"
    cmd = [
        sys.executable, "-m", "dialog_env.cli", "train", "adversarial", "--rounds", "3", "--adversary-steps",
        "1000000", "--assistant-steps", "256", "--eval-episodes", "2", "--n-envs", "2", "--run-dir", str(run),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not any((run / "tb").glob("adversary_*")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"dialog-env train adversarial --resume {run}" in err and "Traceback" not in err
    assert not (run / "state.json").exists() and not (run / "final_model.zip").exists()  # no round counted


def test_the_channel_noise_reaches_both_sides_training_envs():
    from agents.adversarial import _adversary_envs, _assistant_envs

    cfg = AdversarialConfig(noise=0.15, n_envs=1)
    adversary_side = _adversary_envs(cfg, None, 0)
    assert adversary_side.envs[0].unwrapped.duel.core.noise == 0.15
    assistant_side = _assistant_envs(cfg, [], 0, 2)
    assert [e.unwrapped.noise for e in assistant_side.envs] == [0.15, 0.15]


def test_resume_keeps_the_assistants_learned_reward_term(tmp_path):
    """An assistant rewarded by the discriminator: each round keeps its state, so a resume is the uninterrupted run."""
    from agents.sb3.policy import load_model

    disc = {"episodes": 20, "update_every": 64, "steps": 4, "batch": 32, "seed": 3}
    weights = json.dumps({"task_success": 20, "discriminator": {"weight": 1.0, "kwargs": disc}})
    small = {"adversary_steps": 256, "assistant_steps": 512, "eval_episodes": 3, "n_envs": 2}
    reference = train_adversarial(
        AdversarialConfig(rounds=2, assistant_reward_weights=weights, **small), tmp_path / "reference"
    )
    run = tmp_path / "adv"
    train_adversarial(AdversarialConfig(rounds=1, assistant_reward_weights=weights, **small), run)
    assert (run / "rounds" / "round_1" / "reward_states.pkl").is_file()
    train_adversarial(None, run, resume=True, rounds=2)
    got, want = (
        load_model(run / "final_model.zip", "maskable_ppo"),
        load_model(reference / "final_model.zip", "maskable_ppo"),
    )
    a, b = got.policy.state_dict(), want.policy.state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    assert json.loads((run / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())


def test_the_control_never_meets_an_adversary_and_reward_weights_reach_the_assistant():
    """agenda_fraction 1: the same schedule against the agenda user only; assistant_reward_weights: its reward."""
    from agents.adversarial import PoolUser, _assistant_envs
    from dialog_env.users.agenda import AgendaUser

    def users(cfg, pool):
        venv = _assistant_envs(cfg, pool, seed=0, n_envs=4)
        envs = [e.unwrapped for e in venv.envs]
        return [type(e.user) for e in envs], envs

    pool = [object()]  # a stand-in policy: only its presence matters here
    mixed, _ = users(AdversarialConfig(agenda_fraction=0.5), pool)
    assert mixed.count(PoolUser) == 2 and mixed.count(AgendaUser) == 2
    cfg = AdversarialConfig(agenda_fraction=1.0, assistant_reward_weights='{"persona_consistency": 5}')
    cfg.validate()
    control, envs = users(cfg, pool)
    assert control == [AgendaUser] * 4
    assert all(e.reward_fn.weights["persona_consistency"] == 5 for e in envs)
    _, default_envs = users(AdversarialConfig(), pool)
    assert default_envs[0].reward_fn.weights["persona_consistency"] == 1


def test_harden_table_pairs_the_shared_users_and_pools_the_seeds(tmp_path):
    """scripts/harden_table.py on eval folders with known records: paired, unpaired and pooled figures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("harden_table", ROOT / "scripts" / "harden_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def episode(agent, seed, success, contradiction_rate):  # a row as `dialog-env eval --out` writes it
        rest = {"consistency": 0.0, "slots_discovered": 1, "turns": 2, "return": 0.0, "jga": 1.0, "outcome": "bye"}
        return {
            "agent": agent,
            "seed": seed,
            "success": bool(success),
            "contradiction_rate": contradiction_rate,
            **rest,
        }

    success = {"fixed": [0, 0, 1, 1], "control": [0, 1, 0, 1], "hardened": [1, 1, 1, 1]}
    folders = []
    for k in range(2):
        for user in script.USERS:
            cell = tmp_path / f"s{k}" / user
            cell.mkdir(parents=True)
            rows = [
                episode(a, i, v, 0.1 if a == "control" else 0.0) for a, vs in success.items() for i, v in enumerate(vs)
            ]
            (cell / "episodes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        folders.append(tmp_path / f"s{k}")
    t = script.main([str(f) for f in folders] + ["--out", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text())["shared_paired"] == t["shared_paired"]
    assert t["shared_paired"]["agenda"]["success"]["mean"] == pytest.approx(0.5)
    assert t["shared_paired"]["agenda"]["success"]["n"] == 8  # two seeds of four dialogues, paired
    assert t["shared_paired"]["agenda"]["contradiction_rate"]["mean"] == pytest.approx(-0.1)
    assert t["own_attack"]["fixed"]["success"]["mean"] == pytest.approx(0.5)
    assert t["own_attack_hardened-control"]["success"]["mean"] == pytest.approx(0.5)
    assert t["hardened-fixed"]["agenda"]["success"]["mean"] == pytest.approx(0.5)
    assert t["hardened-fixed"]["own_attack"]["success"]["mean"] == pytest.approx(0.5)
    suite = t["attack_suite"]  # three attacks a seed, two seeds, four dialogues each, paired
    assert suite["hardened-fixed"]["success"]["n"] == 24
    assert suite["hardened-control"]["contradiction_rate"]["mean"] == pytest.approx(-0.1)
    assert suite["of_each"]["control"]["success"]["mean"] == pytest.approx(0.5)
    # across seeds: two identical seeds, so the per-seed differences agree and the t interval is 0
    assert t["across_seeds"]["own_attack"]["success"]["mean"] == pytest.approx(0.5)
    assert t["across_seeds"]["own_attack"]["success"]["ci95"] == pytest.approx(0.0)
    assert t["across_seeds"]["agenda"]["contradiction_rate"]["mean"] == pytest.approx(-0.1)
    assert t["across_seeds"]["agenda"]["success"]["n"] == 2
    spread = script.across_seeds([1.0, 2.0, 3.0])  # sd 1 over 3 seeds: t(2) = 4.303
    assert spread["mean"] == pytest.approx(2.0) and spread["ci95"] == pytest.approx(4.303 / 3**0.5)
    assert math.isnan(script.across_seeds([1.0])["ci95"])
    (tmp_path / "s1" / "r1" / "episodes.jsonl").write_text(json.dumps(episode("fixed", 0, 1, 0.0)))
    with pytest.raises(SystemExit):
        script.main([str(f) for f in folders])  # agents missing: a clear error, not a KeyError
