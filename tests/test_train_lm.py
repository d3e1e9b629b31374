"""scripts/train_lm.py as a subprocess on a tiny random model: both modes, resume, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.lm_fixtures import build_tiny_lm

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--tasks", "4", "--num-generations", "2", "--per-device-train-batch-size", "4", "--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("tiny_train")))


def run(*args):
    cmd = [sys.executable, str(ROOT / "scripts" / "train_lm.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def global_step(run_dir, step):
    return json.loads((run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())[
        "global_step"
    ]


def test_multi_turn_training_writes_a_run_and_resumes(tiny_path, tmp_path):
    run_dir = tmp_path / "run"
    r = run(
        "--model",
        tiny_path,
        *SMALL,
        "--max-turns",
        "2",
        "--max-steps",
        "2",
        "--save-steps",
        "1",
        "--run-dir",
        str(run_dir),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["mode"] == "multi"
    assert (run_dir / "final_model" / "config.json").is_file()  # LoRA merged: a plain model folder
    assert any((run_dir / "tb").iterdir())
    assert global_step(run_dir, 2) == 2
    curve = json.loads((run_dir / "train_log.json").read_text())
    # rollout metrics are logged on the steps that generate (every num_iterations=2 steps)
    assert [e["step"] for e in curve] == [1] and all("rewards/persona_consistency/mean" in e for e in curve)
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    r = run("--resume", str(run_dir), "--max-steps", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert global_step(run_dir, 3) == 3  # continued from checkpoint-2, not from scratch
    cmd = [
        sys.executable,
        "-m",
        "dialog_env.cli",
        "eval",
        "--agents",
        f"lm:{run_dir / 'final_model'}",
        "--episodes",
        "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final_model" in r.stdout


def test_rollouts_against_another_user(tiny_path, tmp_path):
    # GRPO rollouts against a policy-played user (the cooperative one; `adv:<run>` plugs in the same way).
    run_dir = tmp_path / "run"
    user = "dialog_env.users.adversarial:PolicyUser"
    r = run(
        "--model", tiny_path, *SMALL, "--max-turns", "2", "--max-steps", "1", "--user", user, "--run-dir", str(run_dir)
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["user"] == user
    assert (run_dir / "final_model" / "config.json").is_file()


def test_single_turn_path_scores_replies_with_registered_rewards(tiny_path, tmp_path):
    run_dir = tmp_path / "run"
    r = run("--model", tiny_path, "--mode", "single", *SMALL, "--max-steps", "1", "--run-dir", str(run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rewards/persona_consistency/mean" in r.stdout + r.stderr
    assert (run_dir / "final_model" / "config.json").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mode", "offline"], "mode: expected one of ['multi', 'branch', 'single']"),
        (["--num-generations", "3", "--per-device-train-batch-size", "4"], "must be a multiple of num_generations"),
        (["--num-generations", "1"], "at least 2 rollouts"),
        (["--split", "dev"], "unknown split 'dev'"),
        (["--dtype", "float64"], "dtype: expected float32 or bfloat16"),
        (["--time-limit-min", "-1"], "time_limit_min: expected minutes >= 0"),
        (["--temperature", "0"], "temperature: GRPO samples its rollouts"),
        (["--lora-layers", "-1"], "lora_layers: expected an integer >= 0"),
        (["--loss-type", "ppo"], "loss_type: expected one of ['dapo', 'grpo'"),
        (["--prompt", "verbose"], "prompt: expected one of ['catalog', 'notes']"),
        (["--turn-credit", "-1"], "turn_credit: expected a finite number >= 0"),
        (["--turn-credit", "1", "--mode", "single"], "turn_credit: turn-level advantages need mode multi"),
        (["--top-p", "0"], "top_p: expected a number in (0, 1]"),
        (["--continuation", "planner"], "continuation: only mode branch"),
        (["--mode", "branch", "--continuation", "oracle"], "continuation: 'oracle' reads the hidden persona"),
        (["--mode", "branch", "--continuation", "wizard"], "continuation: unknown agent 'wizard'"),
        (["--advantage", "greedy"], "advantage: greedy compares replies at a branch point: needs mode branch"),
        (["--advantage", "mean"], "advantage: expected one of ['group', 'greedy']"),
        (["--user", "nobody"], "user: unknown user 'nobody'"),
        (["--user", "adv:/no/such/run"], "no MaskablePPO user policy found"),
    ],
)
def test_bad_arguments(tmp_path, args, needle):
    r = run(*args, "--run-dir", str(tmp_path / "r"))
    assert r.returncode == 2 and needle in r.stderr
    assert not (tmp_path / "r").exists()


def test_time_limit_stops_and_saves(tiny_path, tmp_path):
    run_dir = tmp_path / "run"
    r = run("--model", tiny_path, *SMALL, "--max-turns", "1", "--max-steps", "50", "--save-steps", "100",
            "--time-limit-min", "0.0001", "--run-dir", str(run_dir))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert global_step(run_dir, 1) == 1  # stopped after the first step, and saved it
    assert (run_dir / "final_model" / "config.json").is_file()


def test_runs_under_accelerate_launch_with_two_processes(tiny_path, tmp_path):
    """The same script under `accelerate launch` with 2 processes (on this CPU machine: torch.distributed over
    gloo, the path multi-GPU runs take with NCCL): data-parallel GRPO writing one run folder."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "scripts" / "train_lm.py"),
           "--model", tiny_path, *SMALL, "--per-device-train-batch-size", "2", "--max-turns", "2", "--max-steps", "2",
           "--save-steps", "2", "--run-dir", str(run_dir)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run folder:") == 2  # both processes trained to the end
    assert global_step(run_dir, 2) == 2
    assert (run_dir / "final_model" / "config.json").is_file() and (run_dir / "train_log.json").is_file()


def test_resume_without_a_run(tmp_path):
    r = run("--resume", str(tmp_path))
    assert r.returncode == 2 and "not a run folder" in r.stderr


def test_lora_layers_adapt_only_the_top_blocks_and_the_backward_stops_there(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agents.lm_runs import lora_targets
    from agents.lm_train import LMConfigError

    model = AutoModelForCausalLM.from_pretrained(build_tiny_lm(tmp_path / "m", layers=4))
    assert lora_targets(model, 0) == ("all-linear", None)
    with pytest.raises(LMConfigError, match="lora_layers: the model has 4 transformer blocks, got 5"):
        lora_targets(model, 5, LMConfigError)
    targets, layers = lora_targets(model, 1)
    assert layers == [3] and "q_proj" in targets and "down_proj" in targets and "lm_head" not in targets
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, layers_to_transform=layers))
    trained = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trained and all(".layers.3." in n and "lora_" in n for n in trained)
    assert {n.split(".layers.3.")[1].split(".lora_")[0] for n in trained} >= {"self_attn.q_proj", "mlp.down_proj"}
    seen = []

    def record(i):
        return lambda module, args, out: seen.append((i, (out[0] if isinstance(out, tuple) else out).requires_grad))

    for i, block in enumerate(peft_model.base_model.model.model.layers):
        block.register_forward_hook(record(i))
    peft_model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    assert seen == [(0, False), (1, False), (2, False), (3, True)]
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad)
