"""The dialog-env CLI, run as a subprocess the way a user runs it."""

import json
import subprocess
import sys

import pytest

from dialog_env.persona import load_personas
from dialog_env.world import load_world


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dialog_env.cli", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_eval_writes_parsable_run_folder(tmp_path):
    out = tmp_path / "run"
    r = run_cli("eval", "--agents", "random", "rule", "oracle", "--episodes", "30", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "| oracle (privileged) |" in r.stdout and "success" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"random", "rule", "oracle"}
    assert results["results"]["oracle"]["success"]["mean"] == 1.0
    assert results["config"]["episodes"] == 30
    rows = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert {row["agent"] for row in rows} == {"random", "rule", "oracle"}
    assert all(row["messages"][0]["role"] == "user" for row in rows)
    assert "| rule |" in (out / "results.md").read_text()


def test_eval_paired_difference_to_a_baseline(tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "eval", "--agents", "rule", "planner", "greet", "--episodes", "40", "--baseline", "rule", "--out", str(out),
        "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "paired difference to rule" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["paired"]["baseline"] == "rule" and set(results["paired"]["difference"]) == {"planner", "greet"}
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 120 and "messages" not in episodes[0]
    by = {a: [e for e in episodes if e["agent"] == a] for a in ("rule", "planner", "greet")}
    assert [e["seed"] for e in by["rule"]] == [e["seed"] for e in by["planner"]] == list(range(40))
    for agent in ("planner", "greet"):
        diff = results["paired"]["difference"][agent]["return"]
        means = results["results"][agent]["return"]["mean"] - results["results"]["rule"]["return"]["mean"]
        assert diff["mean"] == pytest.approx(means)
        per = [a["return"] - b["return"] for a, b in zip(by[agent], by["rule"], strict=True)]
        assert diff["mean"] == pytest.approx(sum(per) / len(per))
    # Degenerate small talk is worse than rule on the same dialogues, beyond the paired CI.
    greet = results["paired"]["difference"]["greet"]["return"]
    assert greet["mean"] + greet["ci95"] < 0
    assert "## Paired difference to rule" in (out / "results.md").read_text()
    bad = run_cli("eval", "--agents", "rule", "--episodes", "2", "--baseline", "planner", "--no-progress")
    assert bad.returncode == 2 and "--baseline: expected one of the agents' labels ['rule']" in bad.stderr
    # A later run pairs with the earlier run's rule dialogues instead of playing them again: the same figures.
    again = tmp_path / "again"
    r = run_cli(
        "eval", "--agents", "planner", "--episodes", "40", "--baseline", "rule", "--baseline-from", str(out),
        "--out", str(again), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    later = json.loads((again / "results.json").read_text())["paired"]
    assert later["baseline_from"] == str(out)
    assert later["difference"]["planner"] == results["paired"]["difference"]["planner"]
    for bad_args, message in (
        (("--episodes", "30"), "episodes=40, this run with episodes=30"),
        (("--episodes", "40", "--noise", "0.15"), "noise=0.0, this run with noise=0.15"),
        (("--episodes", "40", "--baseline", "oracle"), "no dialogues of 'oracle'"),
    ):
        args = ["eval", "--agents", "planner", "--baseline", "rule", "--baseline-from", str(out), *bad_args]
        bad = run_cli(*args, "--no-progress")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    bad = run_cli("eval", "--agents", "rule", "--baseline", "rule", "--baseline-from", str(out), "--no-progress")
    assert bad.returncode == 2 and "drop it from --agents" in bad.stderr


def test_paired_difference_needs_the_same_dialogues():
    from dialog_env.evaluation import evaluate, paired_difference

    a = evaluate(lambda: __import__("agents").make_agent("rule"), episodes=5, seed=0)
    b = evaluate(lambda: __import__("agents").make_agent("rule"), episodes=5, seed=1)
    assert all(v["mean"] == 0 for v in paired_difference(a, a).values())
    with pytest.raises(ValueError, match="same dialogues in the same order"):
        paired_difference(a, b)


def test_eval_is_deterministic(tmp_path):
    a = run_cli("eval", "--agents", "rule", "--episodes", "20", "--seed", "7", "--noise", "0.15", "--no-progress")
    b = run_cli("eval", "--agents", "rule", "--episodes", "20", "--seed", "7", "--noise", "0.15", "--no-progress")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_eval_max_turns_truncates_dialogues(tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "eval", "--agents", "ask_same_slot", "--episodes", "10", "--max-turns", "3", "--out", str(out), "--no-progress"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "results.json").read_text())["results"]["ask_same_slot"]["turns"]["mean"] == 3.0
    bad = run_cli("eval", "--agents", "rule", "--max-turns", "0")
    assert bad.returncode == 2 and "--max-turns" in bad.stderr and "positive integer" in bad.stderr


def test_eval_records_the_mode_each_agent_played(tmp_path):
    """An lm: agent plays text even when eval runs in act mode: results.json says so."""
    from tests.lm_fixtures import build_tiny_lm

    tiny = build_tiny_lm(tmp_path / "tiny")
    out = tmp_path / "run"
    r = run_cli(
        "eval", "--agents", "rule", f"lm:{tiny}", "--episodes", "2", "--max-turns", "2", "--out", str(out),
        "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["modes"] == {"rule": "act", f"lm:{tiny}": "text"} and config["mode"] == "mixed"
    assert "mode=rule: act, " in r.stdout


def test_eval_with_a_plug_in_user(tmp_path):
    user = "tests.test_users:MinimalUser"
    r = run_cli("eval", "--agents", "planner", "--episodes", "5", "--user", user, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "| planner |" in r.stdout


def test_simulate_prints_transcripts_with_reward_terms():
    r = run_cli("simulate", "--agent", "rule", "--episodes", "1", "--mode", "text", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "Agent:" in r.stdout and "User:" in r.stdout
    assert "persona_consistency=" in r.stdout and "task_success=" in r.stdout


def test_play_reads_turns_from_stdin():
    r = run_cli("play", "--seed", "1", "--reveal", stdin="Do you have any pets?\nWhat do you like to eat?\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("User:") >= 3  # opening + two answers
    assert "understood: ask(pet)" in r.stdout
    assert "hidden persona was" in r.stdout


def test_personas_command_writes_valid_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    r = run_cli("personas", "--split", "test_unseen", "-n", "25", "-o", str(path))
    assert r.returncode == 0, r.stderr
    assert len(load_personas(path, load_world())) == 25


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "--agents", "nope"], "unknown agent 'nope'"),
        (["eval", "--noise", "0.5x"], "noise must be a number"),
        (["eval", "--episodes", "0"], "positive integer"),
        (["eval", "--split", "holdout"], "invalid choice: 'holdout'"),
        (["eval", "--world", "/nonexistent/world.yaml", "--episodes", "1"], "world file not found"),
        (["eval", "--user", "agend", "--episodes", "1"], "user: unknown user 'agend'; expected one of ['agenda'"),
        (["train", "lm", "--model", "runs/none/final_model"], "model: no such folder 'runs/none/final_model'"),
        (["train", "sft", "--model", "./nope", "--data", "x"], "model: no such folder './nope'"),
    ],
)
def test_bad_arguments_give_clear_errors(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    assert needle in r.stderr


def test_demo_trains_benchmarks_and_says_where_the_plots_are(tmp_path):
    r = run_cli("demo", "--steps", "512", "--episodes", "5", "--eval-episodes", "5", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| maskable_ppo |" in r.stdout and "| rule |" in r.stdout and "| oracle (privileged) |" in r.stdout
    assert "learning curve:" in r.stdout and "charts:" in r.stdout
    (demo,) = tmp_path.iterdir()
    assert (demo / "maskable_ppo" / "learning_curve.png").is_file()
    assert json.loads((demo / "benchmark" / "leaderboard.json").read_text())["rows"]
