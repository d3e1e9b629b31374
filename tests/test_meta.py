"""Meta-learned LM adaptation (agents.lm_meta): the tasks' sessions, the adaptation loss, Reptile's outer step,
resume, and ``dialog-env train meta`` as a subprocess on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.lm_meta import (
    MetaConfigError,
    MetaTrainConfig,
    encode,
    load_checkpoint,
    load_policy,
    meta_train,
    play_history,
    play_target,
    reptile_update,
    take_steps,
    trainable,
)
from agents.prompts import POLICY_FILE, get_prompt
from dialog_env.tasks import make_tasks
from dialog_env.world import load_world
from tests.lm_fixtures import build_tiny_lm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("tiny_meta")))


@pytest.fixture(scope="module")
def task():
    return make_tasks(load_world(), "meta_train", 1, sessions=3, seed=5)[0]


def test_history_is_one_returning_user(task):
    style = get_prompt("notes")
    sessions = play_history(task, [11, 12], style, "train", 20)
    assert [s.goal for s in sessions] == list(task.goals[:2])
    assert sessions[0].earlier == {}
    assert sessions[1].earlier == sessions[0].revealed  # the user remembers what it told
    truth = task.persona.values
    for s in sessions:
        assert all(truth[slot] == value for slot, value in s.revealed.items())  # the judge's facts are true
        # The chat holds what was said, and of the persona nothing that was not said in it.
        text = " ".join(m["content"] for m in s.messages)
        assert s.messages[0]["role"] == "system" and s.prompt_messages == 1
        assert "persona" not in text.lower()
    # The target session depends on how much history the planner had: with it, it asks less.
    fresh = play_target(task, [], 13, style, "train", 20)
    informed = play_target(task, sessions, 13, style, "train", 20)
    assert fresh.earlier == {} and informed.earlier == {**sessions[0].revealed, **sessions[1].revealed}
    asks = [sum(m["role"] == "assistant" and "?" in m["content"] for m in s.messages) for s in (fresh, informed)]
    assert asks[1] <= asks[0]


def test_adaptation_loss_covers_the_users_words(tiny, task):
    from dialog_env.lm import load_lm

    _, tok = load_lm(tiny)
    (session,) = play_history(task, [3], get_prompt("notes"), "train", 20)
    ids, agent_mask = encode(tok, session, False, 4096)
    ids2, whole_mask = encode(tok, session, True, 4096)
    assert ids == ids2
    assert all(w >= a for a, w in zip(agent_mask, whole_mask, strict=True))  # a superset of the agent's tokens
    extra = [t for t, a, w in zip(ids, agent_mask, whole_mask, strict=True) if w and not a]
    msgs = session.messages
    agent_at = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    between = [m["content"] for i, m in enumerate(msgs) if m["role"] == "user" and agent_at[0] < i < agent_at[-1]]
    assert between, "the demonstration should have a user reply between two agent turns"
    said = tok(between[0], add_special_tokens=False)["input_ids"]
    assert any(extra[i : i + len(said)] == said for i in range(len(extra)))  # the user's words are trained on
    assert encode(tok, session, False, 5) is None  # cut before any agent token: nothing to learn


def test_reptile_outer_step_moves_towards_the_adapted_weights(tiny, task):
    cfg = MetaTrainConfig(model=tiny, lora_r=4, lora_alpha=8)
    model, tok, _ = load_policy(cfg)
    params = trainable(model)
    assert params and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    phi = [p.detach().clone() for p in params]
    (session,) = play_history(task, [3], get_prompt("notes"), "train", 20)
    seq = encode(tok, session, True, 512)
    take_steps(model, torch.optim.Adam(params, lr=1e-2), [seq], 3)
    adapted = [p.detach().clone() for p in params]
    gap = sum(float((a - f).norm()) for a, f in zip(adapted, phi, strict=True))
    assert gap > 0
    reptile_update(params, phi, [adapted], 0.25)
    after = [p.detach().clone() for p in params]
    for p, a, f in zip(after, adapted, phi, strict=True):
        torch.testing.assert_close(p, f + 0.25 * (a - f))
    remaining = sum(float((a - p).norm()) for a, p in zip(adapted, after, strict=True))
    assert remaining == pytest.approx(0.75 * gap, rel=1e-4)
    other = [a + 1.0 for a in adapted]  # two tasks: towards their mean
    reptile_update(params, phi, [adapted, other], 1.0)
    for p, a in zip(params, adapted, strict=True):
        torch.testing.assert_close(p.detach(), a + 0.5)


@pytest.mark.parametrize("method", ["reptile", "multitask"])
def test_stopped_run_resumes_exactly(tiny, tmp_path, monkeypatch, method):
    """A stop request mid-run saves a checkpoint; the resumed run ends where an uninterrupted one does."""
    import agents.lm_meta as meta
    from dialog_env.interrupt import STOP, TrainingInterrupted

    kw = dict(
        model=tiny, method=method, outer_steps=3, train_tasks=4, history=1, meta_batch=2, save_steps=5,
        eval_tasks=0, eval_k="0,1", max_turns=4, lora_r=4, lora_alpha=8, inner_lr=1e-2,
    )  # fmt: skip
    straight = meta_train(MetaTrainConfig(**kw), run_dir=tmp_path / "a")
    real_step = meta.outer_step

    def stop_after_second(cfg, step, *args):
        out = real_step(cfg, step, *args)
        if step == 1:
            STOP.requested = True  # as SIGINT's handler does
        return out

    monkeypatch.setattr(meta, "outer_step", stop_after_second)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        meta_train(MetaTrainConfig(**kw), run_dir=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b")["step"] == 2  # saved at the stop, though save_steps is 5
    assert not (tmp_path / "b" / "final_model").exists()
    monkeypatch.setattr(meta, "outer_step", real_step)
    resumed = meta_train(MetaTrainConfig(**kw), run_dir=tmp_path / "b", resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 3
    for x, y in zip(a["weights"], b["weights"], strict=True):
        torch.testing.assert_close(x, y)
    assert [e["tasks"] for e in a["log"]] == [e["tasks"] for e in b["log"]]
    assert (method == "multitask") == (a["optimizer"] is not None)  # the baseline's optimizer carries over


def test_config_errors_name_the_field(tiny):
    for field, value, match in [
        ("method", "maml", "method"),
        ("outer_lr", 1.5, "outer_lr"),
        ("inner_lr", 0, "inner_lr"),
        ("eval_k", "0,5", "eval_k"),
        ("eval_k", "a", "eval_k"),
        ("eval_set", "meta_train", "eval_set"),
        ("history", 0, "history"),
        ("lora", False, "lora"),
    ]:
        with pytest.raises(MetaConfigError, match=match):
            MetaTrainConfig(model=tiny, **{field: value}).validate()


def run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dialog_env.cli", "train", "meta", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_train_meta_command(tiny, tmp_path):
    """As a user runs it: train, resume to more steps, meta-test, the final model usable as a policy."""
    out = tmp_path / "run"
    small = ["--train-tasks", "4", "--history", "1", "--eval-tasks", "2", "--eval-k", "0,1", "--max-new-tokens", "3",
             "--max-turns", "2", "--save-steps", "1", "--lora-r", "4", "--lora-alpha", "8"]  # fmt: skip
    r = run("--model", tiny, "--run-dir", str(out), "--outer-steps", "1", *small)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("--resume", str(out), "--outer-steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout and load_checkpoint(out)["step"] == 2
    result = json.loads((out / "adaptation.json").read_text())
    assert result["tasks"] == 2 and {r["k"] for r in result["rows"]} == {0, 1}
    assert set(result["summary"]) == {"0", "1"} and "return" in result["summary"]["1"]
    assert (out / "adaptation_curve.png").stat().st_size > 1000 and (out / "meta_curve.png").is_file()
    assert json.loads((out / "final_model" / POLICY_FILE).read_text())["trained_by"] == "meta-reptile"
    curve = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "meta_curve.py"), "--runs", f"a={out}", f"b={out}", "--out",
         str(tmp_path / "curve.png")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert curve.returncode == 0, curve.stderr[-2000:]
    assert "| a | 1 |" in curve.stdout and "+0.000 ± 0.000" in curve.stdout  # a run paired with itself
    assert (tmp_path / "curve.png").stat().st_size > 1000
    r = run("--model", tiny, "--run-dir", str(out), *small)
    assert r.returncode == 2 and "--resume" in r.stderr
    r = run("--model", tiny, "--run-dir", str(tmp_path / "x"), "--method", "maml")
    assert r.returncode == 2 and "method" in r.stderr
