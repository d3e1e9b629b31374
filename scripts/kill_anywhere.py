"""Kill-anywhere harness: SIGKILL training runs at random moments, resume them, check what survives.

    python scripts/kill_anywhere.py --model <tiny or real LM folder> --data <demonstrations> --out runs/kill.json

For each job (a MaskablePPO run, an SFT run and a GRPO run, all tiny) it first trains an uninterrupted
reference, then trains the same configuration again and SIGKILLs it ``--kills`` times: half the kills
at a random moment of the process's life, half the moment a checkpoint write is seen in progress (a
temp file, or a Trainer checkpoint folder without its ``trainer_state.json``), each by a random
deadline. After each kill the run is resumed with ``--resume`` (or started again if the kill came
before it wrote its config); a run that completes is checked, and the next starts in a new folder
until the kills are used up. For every completed run it checks:

- every run completes (exit 0);
- the final step and update counts equal the reference's, and the final weights match it (SB3:
  exactly; LM: within float tolerance);
- no file in the run folder is corrupt (JSON/YAML parse, zips pass their CRC check, pickles, torch
  files and safetensors load, PNGs are whole, TensorBoard records are whole) and no temp file or
  partial checkpoint is left.

Prints a table and writes ``--out`` (JSON). Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "dialog_env.cli", "train"]


@dataclass
class Job:
    """One kind of run: how to start it, resume it, and read its outcome."""

    name: str
    start: list[str]
    resume: list[str]
    kind: str  # sb3 or lm


def jobs(model: str, data: str) -> list[Job]:
    """The tiny runs the harness kills (``RUN`` is replaced by the run folder)."""
    sb3 = [
        "sb3", "--algo", "maskable_ppo", "--run-dir", "RUN", "--total-timesteps", "3072", "--n-envs", "2",
        "--eval-freq", "1024", "--eval-episodes", "4", "--checkpoint-freq", "256", "--hp", "n_steps=64",
        "--hp", "batch_size=64", "--no-progress-bar",
    ]  # fmt: skip
    sft = [
        "sft", "--model", model, "--data", data, "--run-dir", "RUN", "--max-steps", "12", "--save-steps", "2",
        "--per-device-train-batch-size", "2",
    ]  # fmt: skip
    grpo = [
        "lm", "--model", model, "--run-dir", "RUN", "--max-steps", "6", "--save-steps", "1", "--tasks", "4",
        "--num-generations", "2", "--per-device-train-batch-size", "4", "--max-new-tokens", "6", "--max-turns", "2",
    ]  # fmt: skip
    return [
        Job("MaskablePPO (SB3)", sb3, ["sb3", "--resume", "RUN", "--no-progress-bar"], "sb3"),
        Job("SFT (TRL)", sft, ["sft", "--resume", "RUN"], "lm"),
        Job("GRPO (TRL)", grpo, ["lm", "--resume", "RUN"], "lm"),
    ]


def _cmd(args: list[str], run: Path) -> list[str]:
    return [*CLI, *[str(run) if a == "RUN" else a for a in args]]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _writing(run: Path) -> bool:
    """Whether a checkpoint write is visibly in progress."""
    folder = run / "checkpoints"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return False
    for n in names:
        if n.endswith(".tmp"):
            return True
        if n.startswith("checkpoint-") and not os.path.exists(folder / n / "trainer_state.json"):
            return True
    return False


# -- integrity ---------------------------------------------------------------------------------------


def _tfrecords_whole(path: Path) -> bool:
    data = path.read_bytes()
    i = 0
    while i < len(data):
        if i + 12 > len(data):
            return False
        (n,) = struct.unpack("<Q", data[i : i + 8])
        i += 12 + n + 4
    return i == len(data)


def corrupt_files(run: Path) -> list[str]:
    """Files of ``run`` that do not read back whole, and leftovers of interrupted writes."""
    import torch
    import yaml
    from safetensors import safe_open

    bad = []
    for p in sorted(run.rglob("*")):
        if p.is_dir():
            if re.match(r"^\..*", p.name) or (
                p.name.startswith("checkpoint-") and not (p / "trainer_state.json").is_file()
            ):
                bad.append(f"{p.relative_to(run)} (leftover folder)")
            continue
        rel = str(p.relative_to(run))
        try:
            if p.name.startswith(".") or p.name.endswith(".tmp"):
                raise ValueError("leftover temp file")
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                [json.loads(line) for line in p.read_text().splitlines()]
            elif p.suffix in (".yaml", ".yml"):
                yaml.safe_load(p.read_text())
            elif p.suffix == ".zip":
                with zipfile.ZipFile(p) as z:
                    if z.testzip() is not None:
                        raise ValueError("CRC mismatch")
            elif p.suffix == ".pkl":
                with open(p, "rb") as f:
                    pickle.load(f)
            elif p.suffix in (".pt", ".pth", ".bin"):
                torch.load(p, map_location="cpu", weights_only=False)
            elif p.suffix == ".safetensors":
                with safe_open(str(p), "pt") as f:
                    [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118 - safe_open has no __iter__
            elif p.suffix == ".png":
                raw = p.read_bytes()
                if not (raw.startswith(b"\x89PNG\r\n\x1a\n") and raw.endswith(b"IEND\xaeB`\x82")):
                    raise ValueError("not a whole PNG")
            elif p.name.startswith("events.out.tfevents"):
                if not _tfrecords_whole(p):
                    raise ValueError("truncated record")
        except Exception as e:  # any failure to read back is corruption
            bad.append(f"{rel} ({type(e).__name__}: {e})"[:200])
    return bad


# -- outcomes ----------------------------------------------------------------------------------------


def outcome(job: Job, run: Path) -> dict[str, Any]:
    """Step count, update count and final weights of a finished run."""
    import numpy as np

    if job.kind == "sb3":
        from agents.sb3.policy import load_model

        model = load_model(run / "final_model.zip", "maskable_ppo")
        weights = {k: v.numpy() for k, v in model.policy.state_dict().items()}
        return {"steps": int(model.num_timesteps), "updates": int(model._n_updates), "weights": weights}
    from safetensors.numpy import load_file

    last = max((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    updates = sum(1 for e in state["log_history"] if "loss" in e)
    weights = {k: np.asarray(v) for k, v in load_file(str(run / "final_model" / "model.safetensors")).items()}
    return {"steps": int(state["global_step"]), "updates": updates, "weights": weights}


def max_weight_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    import numpy as np

    return max(float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a)


@dataclass
class JobResult:
    """What the harness measured on one job."""

    job: str
    kills: int = 0
    kills_during_writes: int = 0
    starts_over: int = 0
    resumes: int = 0
    reference_seconds: float = 0.0
    completed: bool = False
    steps: int = 0
    reference_steps: int = 0
    updates: int = 0
    reference_updates: int = 0
    max_weight_difference: float = float("nan")
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check passed: completed, the reference's counts and weights, no corrupt file."""
        tolerance = 0.0 if self.job.startswith("MaskablePPO") else 1e-4
        return (
            self.completed
            and self.steps == self.reference_steps
            and self.updates == self.reference_updates
            and self.max_weight_difference <= tolerance
            and not self.corrupt
        )


def run_job(job: Job, root: Path, kills: int, rng: random.Random, log: Any = print) -> JobResult:
    """Reference run, then runs of the same configuration killed and resumed until ``kills`` SIGKILLs landed.

    A run that completes before the kills are used up is checked, and the next one starts in a new
    folder; every completed run must match the reference.
    """
    result = JobResult(job.name)
    ref = root / f"{job.kind}_{len(list(root.iterdir()))}_reference"
    t0 = time.perf_counter()
    r = subprocess.run(_cmd(job.start, ref), capture_output=True, text=True, cwd=ROOT, env=_env())
    result.reference_seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{job.name}: the reference run failed:\n{r.stderr[-3000:]}")
    want = outcome(job, ref)
    result.reference_steps, result.reference_updates = want["steps"], want["updates"]
    result.max_weight_difference, result.completed = 0.0, True
    attempt = 0
    while result.kills < kills:
        attempt += 1
        run = ref.with_name(ref.name.replace("_reference", f"_killed_{attempt}"))
        while True:
            args = job.resume if (run / "config.yaml").is_file() else job.start  # no config yet: not a run
            proc = subprocess.Popen(
                _cmd(args, run), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            if result.kills < kills:
                # Every other kill waits for a checkpoint write in progress; all of them fire by a random
                # deadline (later for those, as start-up takes much of a tiny run's time).
                targeted = result.kills % 2 == 1
                span = (0.8, 1.5) if targeted else (0.3, 1.0)
                deadline = time.perf_counter() + rng.uniform(*span) * result.reference_seconds
                while proc.poll() is None:
                    if (targeted and _writing(run)) or time.perf_counter() >= deadline:
                        proc.kill()
                        break
                    time.sleep(0.001 if targeted else 0.01)
            out, err = proc.communicate()
            if proc.returncode == -9:
                result.kills += 1
                inside = _writing(run) or any(run.rglob(".*.tmp"))
                result.kills_during_writes += int(inside)
                log(f"  {job.name}: SIGKILL {result.kills}{' inside a checkpoint write' if inside else ''}")
                continue
            result.resumes += out.count("resuming ")
            result.starts_over += out.count("starting over")
            if proc.returncode != 0:
                raise RuntimeError(f"{job.name}: a run exited with {proc.returncode}:\n{err[-3000:]}")
            break
        got = outcome(job, run)
        result.steps, result.updates = got["steps"], got["updates"]
        result.max_weight_difference = max(
            result.max_weight_difference, max_weight_difference(got["weights"], want["weights"])
        )
        result.corrupt += [f"{run.name}/{c}" for c in corrupt_files(run)]
        result.completed = result.completed and (got["steps"], got["updates"]) == (want["steps"], want["updates"])
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the harness; returns 0 when every job passes every check."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="LM folder for the SFT and GRPO jobs (a tiny model is fine)")
    p.add_argument("--data", required=True, help="demonstrations for the SFT job (dialog-env collect --out)")
    p.add_argument("--kills", type=int, nargs=3, default=[8, 6, 6], help="kills per job: SB3, SFT, GRPO")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    import tempfile

    rng = random.Random(args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="kill_anywhere_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = [run_job(job, work, k, rng) for job, k in zip(jobs(args.model, args.data), args.kills, strict=True)]
    print("| job | SIGKILLs | of them inside a write | resumed | started over | steps (ref) | updates (ref) "
          "| max weight diff | corrupt files | ok |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.job} | {r.kills} | {r.kills_during_writes} | {r.resumes} | {r.starts_over} | "
            f"{r.steps} ({r.reference_steps}) | {r.updates} ({r.reference_updates}) | "
            f"{r.max_weight_difference:.2g} | {len(r.corrupt)} | {'yes' if r.ok else 'NO'} |"
        )
        for c in r.corrupt:
            print(f"  corrupt: {c}")
    total = sum(r.kills for r in results)
    print(f"{total} SIGKILLs, {sum(r.kills_during_writes for r in results)} inside writes, "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    if args.out:
        from dialog_env.io import atomic_write_json

        atomic_write_json(args.out, {"kills": total, "jobs": [{**asdict(r), "ok": r.ok} for r in results]})
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
