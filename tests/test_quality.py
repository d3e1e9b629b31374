"""Text-quality metrics: distinct-n, BLEU against demonstrations, engagement, perplexity, and ``eval --quality``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agents.base import make_agent
from agents.collect import CollectConfig, collect
from dialog_env.evaluation import evaluate
from dialog_env.quality import BleuReferences, distinct_n, load_references, perplexity, quality
from tests.lm_fixtures import build_tiny_lm

ROOT = Path(__file__).resolve().parents[1]


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n(["Hello there", "hello THERE!"], 1) == pytest.approx(2 / 4)  # case and punctuation folded
    assert distinct_n([], 2) == 0.0 and distinct_n(["one"], 2) == 0.0


def test_bleu():
    refs = BleuReferences(["do you have a pet", "what do you like to drink"])
    assert refs.corpus_bleu(["do you have a pet"]) == pytest.approx(1.0)
    assert refs.corpus_bleu(["zebra quantum"]) == 0.0
    partial = refs.corpus_bleu(["do you have a drink"])
    assert 0.0 < partial < 1.0
    # Brevity: a correct but short hypothesis is penalised against the closest reference length (5).
    assert refs.corpus_bleu(["do you have"]) < refs.corpus_bleu(["do you have a pet"])
    # Clipping: repeating a reference word does not pay.
    assert refs.corpus_bleu(["pet pet pet pet pet"]) < 0.5
    with pytest.raises(ValueError, match="references"):
        BleuReferences([])


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demos")
    collect(CollectConfig(episodes=10), folder, progress=False)
    return folder


def test_quality_separates_a_degenerate_policy(demos):
    refs = load_references(str(demos))
    planner = quality(evaluate(lambda: make_agent("planner"), split="test", episodes=10, mode="text"), refs)
    same = quality(evaluate(lambda: make_agent("ask_same_slot"), split="test", episodes=10, mode="text"), refs)
    silent = quality(evaluate(lambda: make_agent("silent"), split="test", episodes=10, mode="text"), refs)
    assert planner["distinct_2"] > 3 * same["distinct_2"]  # one question over and over
    assert silent["words"] == 0.0 and silent["bleu"] == 0.0
    assert same["left_rate"] == 1.0 and planner["left_rate"] < 0.5  # the user walks out on repetition
    assert same["turns_before_leaving"] > 0 and math.isnan(planner["perplexity"])
    assert planner["bleu"] > 0.5  # the planner speaks the demonstrators' phrasings


def test_perplexity_on_a_tiny_model(tmp_path):
    tiny = str(build_tiny_lm(tmp_path / "tiny"))
    records = evaluate(lambda: make_agent("planner"), split="test", episodes=3, mode="text")
    ppl = perplexity([r.messages for r in records], tiny)
    vocab = 1000  # a random model: perplexity near the vocabulary size, finite and > 1
    assert 1.0 < ppl < 10 * vocab


def test_eval_quality_command(demos, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "planner", "silent", "--mode", "text",
           "--episodes", "4", "--quality", "--references", str(demos), "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "distinct-2" in r.stdout and "BLEU-4 vs demos" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["quality"]) == {"planner", "silent"} and "Text quality" in (out / "results.md").read_text()
    cmd = [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "planner", "--episodes", "2",
           "--references", str(demos)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "--quality" in r.stderr and "--quality-nli" in r.stderr
    cmd = [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "planner", "--episodes", "2", "--quality",
           "--references", str(tmp_path / "none")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "--references" in r.stderr


def test_benchmark_quality_table_and_charts(demos, tmp_path):
    from dialog_env.benchmark import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig(agents=["planner", "ask_same_slot"], splits=["test"], noise=[0.0], seeds=[0], episodes=4,
                          mode="text", quality=True, references=str(demos))  # fmt: skip
    board = run_benchmark(cfg, tmp_path / "bench")
    q = {r["agent"]: r["quality"] for r in board["rows"]}
    assert q["planner"]["distinct_2"] > q["ask_same_slot"]["distinct_2"] and q["planner"]["bleu"] > 0.5
    md = (tmp_path / "bench" / "leaderboard.md").read_text()
    assert "Text quality" in md and "BLEU-4 vs demos" in md
    for m in ("distinct_2", "words", "bleu", "left_rate"):
        assert (tmp_path / "bench" / f"quality_{m}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "bench" / "quality_perplexity.png").exists()  # not measured: no chart
    with pytest.raises(ValueError, match="references, quality_lm and quality_nli: set quality"):
        run_benchmark(BenchmarkConfig(agents=["rule"], references=str(demos)), tmp_path / "b2")
    with pytest.raises(ValueError, match="references: "):
        run_benchmark(
            BenchmarkConfig(agents=["rule"], quality=True, references=str(tmp_path / "none")), tmp_path / "b3"
        )
    with pytest.raises(ValueError, match="quality_lm: "):
        run_benchmark(
            BenchmarkConfig(agents=["rule"], quality=True, quality_lm=str(tmp_path / "none")), tmp_path / "b4"
        )
