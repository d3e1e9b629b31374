"""SFT on demonstrations: the loss mask, the trainer's labels, and the pipeline collect -> SFT -> GRPO -> eval
as subprocesses on tiny models of two architectures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.collect import CollectConfig, collect, load_demonstrations
from agents.prompts import POLICY_FILE
from agents.sft import SFTConfigError, SFTTrainConfig, build_sft_trainer, tokenize_dialogue
from dialog_env.lm import after_eos_text, load_lm
from tests.lm_fixtures import build_tiny_lm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demos")
    collect(CollectConfig(episodes=12), folder, progress=False)
    return folder


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_path(request, tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp(f"tiny_{request.param}"), arch=request.param))


def check_mask(tok, messages, n_prompt, exact=True):
    """``exact``: compare decoded text (a real tokenizer); else re-tokenised ids (a word-level tokenizer decodes
    with spaces and unknown words as <|unk|>)."""
    ids, mask = tokenize_dialogue(tok, messages, n_prompt)
    assert len(ids) == len(mask)
    agent = [m["content"] for m in messages[n_prompt:] if m["role"] == "assistant"]
    # The masked tokens are exactly the agent's turns, each closed by the end-of-turn token...
    trained = [t for t, k in zip(ids, mask, strict=True) if k]
    assert trained == [t for a in agent for t in tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    if exact:
        assert tok.decode(trained) == "".join(a + tok.eos_token for a in agent)
    # ... and the whole sequence is the chat as the template renders it, up to the last agent turn.
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    rendered = tok.apply_chat_template(list(messages[: last + 1]), tokenize=False)
    tail = after_eos_text(tok)
    expected = rendered[: len(rendered) - len(tail)] if tail else rendered
    if exact:
        assert tok.decode(ids) == expected
    else:
        assert ids == tok(expected, add_special_tokens=False)["input_ids"]


def test_loss_mask_covers_exactly_the_agent_tokens(tiny_path, data):
    _, tok = load_lm(tiny_path)
    for row in load_demonstrations(data):
        check_mask(tok, row["messages"], row["prompt_messages"], exact=False)


@pytest.mark.real_model
def test_loss_mask_on_the_real_tokenizer(data, tmp_path):
    _, tok = load_lm("smollm2")
    for row in load_demonstrations(data):
        check_mask(tok, row["messages"], row["prompt_messages"])
    # In the catalog style the worked example's agent turns are prompt, not targets.
    collect(CollectConfig(episodes=3, prompt="catalog"), tmp_path, progress=False)
    for row in load_demonstrations(tmp_path):
        assert row["prompt_messages"] == 8
        check_mask(tok, row["messages"], row["prompt_messages"])


def test_trainer_labels_follow_the_mask(tiny_path, data, tmp_path):
    cfg = SFTTrainConfig(model=tiny_path, data=str(data), max_steps=1)
    trainer, style = build_sft_trainer(cfg, tmp_path)
    assert style == "notes"
    _, tok = load_lm(tiny_path)
    rows = load_demonstrations(data)
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        ids, mask = tokenize_dialogue(tok, row["messages"], row["prompt_messages"])
        assert example["input_ids"] == ids
        assert example["labels"] == [t if k else -100 for t, k in zip(ids, mask, strict=True)]


def test_teacher_labels_train_only_the_teachers_reply(tiny_path, data, tmp_path):
    """DAgger rows (collect --roll-in): the roll-in policy's turns are laid out as a rollout holds them but
    masked; the teacher's reply is the only target; demonstrations and labels train together."""
    labels = tmp_path / "labels"
    collect(CollectConfig(agent="planner", roll_in=f"lm:{tiny_path}", episodes=3, max_turns=3), labels, progress=False)
    _, tok = load_lm(tiny_path)
    rows = list(load_demonstrations(labels))
    assert len(rows) >= 3 and {r["rollin"] for r in rows} == {f"lm:{tiny_path}"}
    for row in rows:
        messages, n = row["messages"], row["train_from"]
        ids, mask = tokenize_dialogue(tok, messages, row["prompt_messages"], n)
        full, _ = tokenize_dialogue(tok, messages, row["prompt_messages"])
        assert ids == full  # the same layout as a dialogue row
        reply = tok(messages[n]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert [t for t, k in zip(ids, mask, strict=True) if k] == reply
        assert mask[-len(reply) :] == [1] * len(reply) and sum(mask) == len(reply)
    cfg = SFTTrainConfig(model=tiny_path, data=f"{data},{labels}", max_steps=1)
    trainer, style = build_sft_trainer(cfg, tmp_path / "run")
    assert style == "notes" and len(trainer.train_dataset) == len(load_demonstrations(data)) + len(rows)
    with pytest.raises(SFTConfigError, match="after its last assistant turn"):
        tokenize_dialogue(tok, rows[0]["messages"], 1, len(rows[0]["messages"]))
    with pytest.raises(SFTConfigError, match="comma-separated"):
        build_sft_trainer(SFTTrainConfig(model=tiny_path, data=f"{data},", max_steps=1), tmp_path / "run2")


def test_dialogue_without_agent_turn_is_an_error(tiny_path):
    _, tok = load_lm(tiny_path)
    with pytest.raises(SFTConfigError, match="no assistant turn"):
        tokenize_dialogue(tok, [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}])


def run(*args, script="train_sft.py"):
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args] if script else [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_collect_sft_grpo_eval_pipeline(tiny_path, tmp_path):
    """The whole recipe as a user runs it, on a tiny model: demonstrations, SFT (with a resume), GRPO, eval."""
    data = tmp_path / "data"
    r = run("-m", "dialog_env.cli", "collect", "--episodes", "8", "--out", str(data), "--no-progress", script="")
    assert r.returncode == 0, r.stderr[-3000:]
    sft = tmp_path / "sft"
    small = ["--per-device-train-batch-size", "4", "--save-steps", "1"]
    r = run("--model", tiny_path, "--data", str(data), "--run-dir", str(sft), "--max-steps", "2", *small)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((sft / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    r = run("--resume", str(sft), "--max-steps", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((sft / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    final = sft / "final_model"
    assert json.loads((final / POLICY_FILE).read_text())["prompt"] == "notes"
    assert (final / "config.json").is_file() and (sft / "learning_curve.png").stat().st_size > 1000
    assert any((sft / "tb").iterdir()) and json.loads((sft / "train_log.json").read_text())
    grpo = tmp_path / "grpo"
    r = run(
        "--model", str(final), "--run-dir", str(grpo), "--max-steps", "1", "--tasks", "4", "--num-generations", "2",
        "--per-device-train-batch-size", "4", "--max-new-tokens", "6", "--max-turns", "2",
        script="train_lm.py",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((grpo / "final_model" / POLICY_FILE).read_text())["prompt"] == "notes"  # kept from the SFT model
    r = run(
        "-m", "dialog_env.cli", "eval", "--agents", f"sft=lm:{final}", f"grpo=lm:{grpo / 'final_model'}",
        "--episodes", "2", "--max-turns", "2", "--mode", "text",
        script="",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| sft |" in r.stdout and "| grpo |" in r.stdout


def test_sft_argument_errors(tmp_path):
    r = run("--run-dir", str(tmp_path / "x"))
    assert r.returncode == 2 and "data" in r.stderr
    r = run("--data", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "y"), "--dtype", "float16")
    assert r.returncode == 2 and "dtype" in r.stderr
    r = run("--data", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "z"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run("--resume", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a run folder" in r.stderr
    with pytest.raises(SFTConfigError, match="epochs"):
        SFTTrainConfig(data="d", epochs=0).validate()
