"""Output folders (eval, benchmark, collect) are published whole: all of one run's files or none."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dialog_env.io import atomic_write_text, publish_folder

ROOT = Path(__file__).resolve().parents[1]
FILES = ("a.json", "b.json", "c.json")


def publish(out: Path, run: str) -> None:
    with publish_folder(out, FILES) as staging:
        for name in FILES:
            atomic_write_text(staging / name, json.dumps({"run": run, "pad": "x" * 20_000}))


def writer(out: str, name: str, times: int) -> None:
    for k in range(times):
        publish(Path(out), f"{name}-{k}")
        time.sleep(0.005)  # let the reader run between publishes on a loaded machine (else it may see only the last)


def snapshot(out: Path) -> set[str] | None:
    """The runs a reader sees, reading every file through one handle on the folder (as a careful reader does)."""
    try:
        fd = os.open(out, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        runs = set()
        for name in FILES:
            with open(name, opener=lambda p, f: os.open(p, f, dir_fd=fd)) as fh:
                runs.add(json.load(fh)["run"])
        return runs
    except FileNotFoundError:  # the folder was replaced and its old files deleted under the reader: it saw none
        return None
    finally:
        os.close(fd)


def test_two_runs_publishing_together_never_mix_files(tmp_path):
    out = tmp_path / "results"
    publish(out, "first")
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            s = snapshot(out)
            if s is not None:
                seen.append(s)

    reader = threading.Thread(target=read)
    reader.start()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=writer, args=(str(out), name, 40)) for name in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    stop.set()
    reader.join()
    assert all(p.exitcode == 0 for p in procs)
    mixed = [s for s in seen if len(s) != 1]
    assert len(seen) > 20 and not mixed, mixed[:5]
    assert len({r for s in seen for r in s}) > 3  # the reader saw several runs' folders, each whole
    final = snapshot(out)
    assert final is not None and len(final) == 1 and final.pop() in {"A-39", "B-39"}
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["results"]  # no staging or old folders left behind


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "results"
    publish(out, "good")
    with pytest.raises(RuntimeError), publish_folder(out, FILES) as staging:
        atomic_write_text(staging / "a.json", json.dumps({"run": "bad"}))
        raise RuntimeError("the run failed halfway")
    assert snapshot(out) == {"good"} and [p.name for p in tmp_path.iterdir()] == ["results"]


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match=r"out: .*mine holds files this command does not write \(thesis.tex\)"):
        publish(out, "x")
    assert (out / "thesis.tex").read_text() == "precious" and [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_eval_refuses_a_foreign_out_folder_before_playing(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    r = subprocess.run(
        [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "rule", "--episodes", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "--out" in r.stderr and "notes.txt" in r.stderr
    assert "split=" not in r.stdout  # failed before any dialogue
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "rule", "--episodes", "2", "--out", str(out)]
    for _ in range(2):  # a second run replaces the first's folder whole
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["episodes.jsonl", "results.json", "results.md", "transcripts.jsonl"]
