"""The kill-anywhere harness (scripts/kill_anywhere.py) as a test: 20 SIGKILLs over tiny SB3, SFT and GRPO runs,
half of them aimed at checkpoint writes; every run resumes to the uninterrupted run's counts and weights with no
corrupt file left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lm_fixtures import build_tiny_lm

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_twenty_sigkills_anywhere_leave_every_run_resumable_and_whole(tmp_path):
    from agents.collect import CollectConfig, collect

    model = build_tiny_lm(tmp_path / "tiny")
    collect(CollectConfig(episodes=16), tmp_path / "demos", progress=False)
    out = tmp_path / "kill.json"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "kill_anywhere.py"), "--model", str(model), "--data",
        str(tmp_path / "demos"), "--kills", "10", "5", "5", "--work", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["kills"] >= 20
    for job in report["jobs"]:
        assert job["ok"] and not job["corrupt"], job
        assert (job["steps"], job["updates"]) == (job["reference_steps"], job["reference_updates"])
    assert sum(job["kills_during_writes"] for job in report["jobs"]) >= 1
    assert sum(job["resumes"] for job in report["jobs"]) >= 5  # kills after the first checkpoint resumed from it
