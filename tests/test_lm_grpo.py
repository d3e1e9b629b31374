"""Multi-turn GRPO with TRL on a tiny random model: the rollout contract, masks, tokens, a training step."""

import os

import pytest
import torch

from agents.lm_grpo import SEED_KEY, DialogueRollout, build_task_dataset, env_return
from dialog_env.lm import GenerationConfig, load_lm, render_ids
from rewards import DEFAULT_WEIGHTS, to_trl
from tests.lm_fixtures import build_tiny_lm

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_grpo"))


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return load_lm(str(tiny_path))


def segments(ids, mask):
    """Runs of equal mask value: [(mask, [ids...]), ...]."""
    out = []
    for i, m in zip(ids, mask, strict=True):
        if out and out[-1][0] == m:
            out[-1][1].append(i)
        else:
            out.append((m, [i]))
    return out


def play(tiny, seeds, sample=True, seed=0, turns=3):
    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=6, do_sample=sample, temperature=1.0)
    return DialogueRollout(max_turns=turns, max_new_tokens=6).rollout(model, tok, seeds, cfg, generation_seed=seed)


def test_rollout_returns_trl_contract(tiny):
    out = play(tiny, [0, 0, 3])
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "env_return", "reward_terms", "turn_contexts"):
        assert key in out
    n = 3
    assert all(len(out[k]) == n for k in ("prompt_ids", "completion_ids", "env_mask", "env_return", "turn_contexts"))
    for ids, mask in zip(out["completion_ids"], out["env_mask"], strict=True):
        assert len(ids) == len(mask) and set(mask) <= {0, 1} and mask[0] == 1
    for terms, ret, ctxs in zip(out["reward_terms"], out["env_return"], out["turn_contexts"], strict=True):
        assert set(terms) >= {"task_success", "persona_consistency", "rejection"}
        assert len(ctxs) >= 1
        # terms are the raw episode sums; the return is their weighted sum
        assert ret == pytest.approx(sum(DEFAULT_WEIGHTS[t] * v for t, v in terms.items()))


def test_loss_mask_covers_exactly_the_agent_tokens(tiny):
    model, tok = tiny
    out = play(tiny, [1, 2])
    for ids, mask, transcript in zip(out["completion_ids"], out["env_mask"], out["transcript"], strict=True):
        agent_turns = [m["content"] for m in transcript if m["role"] == "assistant"]
        user_turns = [m["content"] for m in transcript if m["role"] == "user"][1:]  # the opening is in the prompt
        segs = segments(ids, mask)
        trained = [tok.decode(s, skip_special_tokens=True).strip() for m, s in segs if m == 1]
        assert trained == agent_turns
        masked = tok.decode([i for m, s in segs if m == 0 for i in s])
        for u in user_turns:
            assert tok.decode(tok(u, add_special_tokens=False)["input_ids"]) in masked
        for m, s in segs:  # the end-of-turn token closes each agent turn (trained when the model sampled it)
            if m == 1:
                assert tok.eos_token_id not in s[:-1]


def test_token_ids_are_the_rendered_transcript(tiny):
    model, tok = tiny
    out = play(tiny, [5, 6, 7])
    for p, c, transcript in zip(out["prompt_ids"], out["completion_ids"], out["transcript"], strict=True):
        rendered = render_ids(tok, transcript, add_generation_prompt=False)
        assert p + c == rendered[: len(p) + len(c)]
        assert len(rendered) - len(p) - len(c) <= 1  # at most the template's text after the last end-of-turn


def test_rollouts_are_reproducible(tiny):
    a, b = play(tiny, [0, 1], sample=False), play(tiny, [0, 1], sample=False)
    assert a["completion_ids"] == b["completion_ids"] and a["env_return"] == b["env_return"]
    c, d = play(tiny, [0, 1], seed=7), play(tiny, [0, 1], seed=7)
    assert c["completion_ids"] == d["completion_ids"]


def test_task_dataset_carries_the_seed(tmp_path):
    ds = build_task_dataset(3, split="test", seed=10)
    assert ds["dialog_seed"] == [10, 11, 12]
    assert [p[0][SEED_KEY] for p in ds["prompt"]] == [10, 11, 12]
    assert ds["prompt"][0][1]["role"] == "user"


def test_multi_turn_grpo_step_end_to_end(tiny_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    cfg = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=2,
        num_iterations=2,
        beta=0.0,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        max_completion_length=128,
        temperature=1.0,
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        args=cfg,
        train_dataset=build_task_dataset(4),
        processing_class=tok,
        reward_funcs=[env_return, to_trl("persona_consistency")],
        rollout_func=DialogueRollout(max_turns=3, max_new_tokens=6),
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    logs = trainer.state.log_history[0]
    assert "rewards/env_return/mean" in logs and "rewards/persona_consistency/mean" in logs
    assert logs["completions/mean_length"] <= 3 * 6 + 3  # only agent tokens count as completion length
