"""The benchmark: output files, pooling by label, determinism, the script, and the reward's resistance to gaming."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents import make_agent
from dialog_env.benchmark import BenchmarkConfig, leaderboard_markdown, parse_agent_entry, run_benchmark
from dialog_env.evaluation import evaluate, summarize

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def small_config(**kw):
    base = dict(
        agents=["random", "rule", "oracle", "rule2=rule", "rule2=agents.baselines:RuleAgent"],
        splits=["test", "test_unseen"],
        noise=[0.0, 0.15],
        seeds=[0, 1],
        episodes=6,
    )
    return BenchmarkConfig(**{**base, **kw})


def test_benchmark_writes_leaderboard_charts_and_transcripts(tmp_path):
    board = run_benchmark(small_config(), tmp_path)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["rows"] == json.loads(json.dumps(board["rows"]))
    conditions = {(r["split"], r["noise"]) for r in data["rows"]}
    assert conditions == {("test", 0.0), ("test", 0.15), ("test_unseen", 0.0), ("test_unseen", 0.15)}
    assert {r["agent"] for r in data["rows"]} == {"random", "rule", "oracle", "rule2"}
    episodes = {r["agent"]: r["episodes"] for r in data["rows"]}
    assert episodes == {"random": 12, "rule": 12, "oracle": 12, "rule2": 24}  # same-label specs pooled
    for r in data["rows"]:
        for m in ("success", "contradiction_rate", "consistency", "slots_discovered", "turns", "return"):
            assert set(r["metrics"][m]) == {"mean", "ci95"}
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.count("## split=") == 4 and "| oracle (privileged) |" in md and "| rule |" in md
    for m in ("success", "return", "contradiction_rate", "consistency"):
        assert (tmp_path / f"{m}.png").read_bytes()[:8] == PNG
    rows = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    assert {row["agent"] for row in rows} == {"random", "rule", "oracle", "rule2"}
    assert all(row["messages"] for row in rows)


def test_same_inputs_same_numbers(tmp_path):
    a = run_benchmark(small_config(agents=["random", "rule"]), tmp_path / "a")
    b = run_benchmark(small_config(agents=["random", "rule"]), tmp_path / "b")
    assert a["rows"] == b["rows"]
    assert (tmp_path / "a" / "leaderboard.md").read_text() == (tmp_path / "b" / "leaderboard.md").read_text()


def test_bad_benchmark_input_fails_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown agent 'nope'"):
        run_benchmark(small_config(agents=["rule", "nope"]), tmp_path)
    with pytest.raises(ValueError, match="splits: unknown split 'dev'"):
        run_benchmark(small_config(splits=["dev"]), tmp_path)
    with pytest.raises(ValueError, match=r"noise: 1.5 is outside \[0, 1\)"):
        run_benchmark(small_config(noise=[1.5]), tmp_path)
    assert not (tmp_path / "leaderboard.json").exists()


def test_parse_agent_entry():
    assert parse_agent_entry("rule") == ("rule", "rule")
    assert parse_agent_entry("mppo=sb3:runs/x") == ("mppo", "sb3:runs/x")
    assert parse_agent_entry("agents.baselines:RuleAgent") == ("agents.baselines:RuleAgent",) * 2


def test_markdown_sorts_by_return(tmp_path):
    board = run_benchmark(small_config(agents=["random", "oracle"], splits=["test"], noise=[0.0]), tmp_path)
    md = leaderboard_markdown(board)
    assert md.index("| oracle (privileged) |") < md.index("| random |")


def test_benchmark_script_with_a_trained_sb3_agent(tmp_path):
    from agents.sb3 import TrainConfig, train

    cfg = TrainConfig(
        algo="maskable_ppo",
        total_timesteps=256,
        n_envs=2,
        eval_freq=256,
        checkpoint_freq=256,
        eval_episodes=3,
        progress_bar=False,
        hyperparams={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
    )
    run_dir = train(cfg, run_dir=tmp_path / "run")
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--agents", "rule", f"ppo=sb3:{run_dir}"]
    cmd += ["--splits", "test", "--noise", "0", "0.3", "--seeds", "0", "--episodes", "5", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| ppo |" in r.stdout and "charts:" in r.stdout
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert {(row["agent"], row["noise"]) for row in rows} == {("rule", 0.0), ("rule", 0.3), ("ppo", 0.0), ("ppo", 0.3)}


def test_degenerate_policies_score_below_the_rule_agent():
    returns = {}
    for name in ("rule", "always_recommend", "ask_same_slot", "bye"):
        s = summarize(evaluate(lambda name=name: make_agent(name), split="test", episodes=400, seed=0))
        returns[name] = s["return"]
    rule = returns.pop("rule")
    for name, r in returns.items():
        assert r["mean"] + r["ci95"] < rule["mean"] - rule["ci95"], (name, r, rule)
