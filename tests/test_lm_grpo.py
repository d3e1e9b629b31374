"""Multi-turn GRPO with TRL on a tiny random model: the rollout contract, masks, tokens, a training step."""

import dataclasses
import os

import gymnasium as gym
import pytest
import torch

from agents.lm import example_exchange
from agents.lm_grpo import SEED_KEY, DialogueRollout, build_task_dataset, env_return
from dialog_env.lm import GenerationConfig, load_lm, render_ids
from rewards import DEFAULT_WEIGHTS, to_trl
from tests.lm_fixtures import build_tiny_lm

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
EXAMPLE = len(example_exchange(gym.make("dialog_env/PersonaRecText-v0").unwrapped))


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


def dialogue(transcript):
    """The env's dialogue: the transcript after the system message and the prompt's worked example."""
    return transcript[1 + EXAMPLE :]


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
        agent_turns = [m["content"] for m in dialogue(transcript) if m["role"] == "assistant"]
        user_turns = [m["content"] for m in dialogue(transcript) if m["role"] == "user"][1:]  # opening: in the prompt
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


def test_kv_cache_reuse_gives_the_same_dialogues_as_re_encoding(tiny):
    """Greedy: the incremental batch (KV cache kept, shared prefixes, finished rows dropped) plays
    exactly what re-encoding every turn and one dialogue at a time play."""
    model, tok = tiny
    rollout = DialogueRollout(max_turns=4, max_new_tokens=5)
    cfg = GenerationConfig(max_new_tokens=5)
    seeds = [0, 0, 1, 2, 3, 4, 5, 5]  # repeated seeds: GRPO groups share their whole prompt
    cached = rollout.rollout(model, tok, seeds, cfg)
    naive = rollout.rollout(model, tok, seeds, cfg, batch_size=1, reuse_cache=False)
    chunked = rollout.rollout(model, tok, seeds, cfg, batch_size=3)
    for key in ("prompt_ids", "completion_ids", "env_mask", "env_return", "transcript"):
        assert cached[key] == naive[key] == chunked[key], key
    turns = [sum(m["role"] == "assistant" for m in dialogue(t)) for t in cached["transcript"]]
    assert len(set(turns)) > 1 or max(turns) == 4  # some dialogues ended early and left the batch
    with pytest.raises(ValueError, match="batch_size"):
        rollout.rollout(model, tok, seeds, cfg, batch_size=-1)


def test_incremental_batch_shares_prefixes_and_grows_in_place(tiny):
    from dialog_env.lm import IncrementalBatch, _prefix_groups

    model, tok = tiny
    a, b = list(range(10, 40)), list(range(10, 30)) + [5, 6, 7]
    c = [1, 2, 3]
    # identical rows share all but the token fed next; a third row joins when that encodes fewer tokens
    assert _prefix_groups([a, a, c], min_shared=16) == [([0, 1], 29)]
    assert _prefix_groups([a, a, b, c], min_shared=16) == [([2, 0, 1], 20)]  # 20 + 3 + 10 + 10 < 23 + 29 + 1 + 1
    assert _prefix_groups([a, a, b, c], min_shared=21) == [([0, 1], 29)]
    assert _prefix_groups([a, c], min_shared=1) == []
    batch = IncrementalBatch(model, tok, [a, a, b, c])
    first = batch.generate(GenerationConfig(max_new_tokens=4))
    assert first[0] == first[1]
    layer = batch.cache.layers[0]
    assert layer.keys.data_ptr() == layer._kbuf.data_ptr()  # a view of the growing buffer, not a fresh concat
    batch.keep([3, 0])
    batch.append([[4, 5], []])
    assert len(batch) == 2 and batch.ids.shape[1] == batch.mask.shape[1]
    with pytest.raises(ValueError, match="one token list per row"):
        batch.append([[1]])
    with pytest.raises(ValueError, match="non-empty"):
        IncrementalBatch(model, tok, [[]])


def test_incremental_batch_rows_leave_and_join_without_changing_their_continuations(tiny):
    """Rows leaving (and their columns compacted away) or joining mid-way continue exactly as alone."""
    from dialog_env.lm import IncrementalBatch, generate_from_ids

    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=4)
    long, short, late = list(range(10, 110)), [7, 8, 9], list(range(20, 60))
    batch = IncrementalBatch(model, tok, [long, short])
    first = batch.generate(cfg)
    width = batch.ids.shape[1]
    batch.keep([1])  # the long row leaves: its columns are dropped
    assert batch.ids.shape[1] < width - 50 and batch.cache.get_seq_length() < width - 50
    batch.append([[11, 12]])
    batch.extend([late])
    seqs = [short + first[1] + [11, 12], late]
    assert batch.generate(cfg) == generate_from_ids(model, tok, seqs, cfg)


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


def test_padding_free_log_probs_equal_the_padded_pass(tiny_path, tmp_path):
    """Scoring each rollout at its own length gives TRL's padded log-probs (and gradients flow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from agents.lm_trainer import DialogueGRPOTrainer, unpadded_span

    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    cfg = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1, report_to=[],
        use_cpu=True, save_strategy="no", beta=0.0,
    )  # fmt: skip
    trainer = DialogueGRPOTrainer(
        model=model, args=cfg, train_dataset=build_task_dataset(2), processing_class=tok, reward_funcs=[env_return],
        rollout_func=DialogueRollout(max_turns=2, max_new_tokens=4),
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    prompts, completions = [11, 4, 7], [9, 3, 12]  # left-padded prompts, right-padded completions
    width_p, keep = max(prompts), max(completions)
    ids = torch.zeros(3, width_p + keep, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[r, width_p - p : width_p + c] = torch.randint(5, 200, (p + c,), generator=g)
        mask[r, width_p - p : width_p + c] = 1
    assert unpadded_span(mask[1]) == (width_p - 4, width_p + 3) and unpadded_span(torch.tensor([1, 0, 1])) is None
    trainer.padding_free = False
    padded, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep)
    trainer.padding_free = True
    free, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep)
    assert free.shape == padded.shape == (3, keep)
    real = mask[:, width_p:].bool()
    torch.testing.assert_close(free[real], padded[real], rtol=1e-4, atol=1e-4)
    assert (free[~real] == 0).all()
    free.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())


def test_rollout_cut_by_the_token_budget_is_a_failure(tiny):
    """A dialogue cut by max_completion_length is charged like one that ran out of turns."""
    model, tok = tiny
    rollout = DialogueRollout(split="train", max_turns=6, max_new_tokens=8)
    config = GenerationConfig(max_new_tokens=8)
    full = rollout.rollout(model, tok, [0, 1], config)
    cut = rollout.rollout(model, tok, [0, 1], config, max_completion_tokens=12)
    for k in range(2):
        assert full["reward_terms"][k]["task_failure"] == -1.0  # six turns of noise: out of turns
        assert cut["reward_terms"][k]["task_failure"] == -1.0  # cut after the first turn: still a failure
        assert cut["env_return"][k] < 0


def test_rollout_in_the_notes_style_shows_the_notes(tiny):
    model, tok = tiny
    out = DialogueRollout(split="train", max_turns=2, max_new_tokens=4, prompt="notes").rollout(
        model, tok, [0], GenerationConfig(max_new_tokens=4)
    )
    users = [m["content"] for m in out["transcript"][0] if m["role"] == "user"]
    assert all("\n[" in u for u in users)
    assert "Catalog" not in tok.decode(out["prompt_ids"][0])


def test_rollout_marks_each_agent_token_with_its_turn(tiny):
    out = play(tiny, [0, 1, 2])
    for mask, turns, rewards, ret, terms in zip(
        out["env_mask"], out["token_turns"], out["turn_rewards"], out["env_return"], out["reward_terms"], strict=True
    ):
        assert len(turns) == len(mask)
        assert all((t >= 0) == bool(m) for t, m in zip(turns, mask, strict=True))
        agent_turns = sorted({t for t in turns if t >= 0})
        assert agent_turns == list(range(len(rewards)))  # every played turn has tokens and one immediate reward
        outcome = DEFAULT_WEIGHTS["task_failure"] * terms["task_failure"]  # the dialogue's, not a turn's
        assert sum(rewards) + outcome == pytest.approx(ret)
        if terms["task_success"]:  # the accepting turn keeps its success
            assert rewards[-1] >= DEFAULT_WEIGHTS["task_success"] - 10


def test_turn_advantages_blame_the_turn_that_earned_the_penalty():
    from agents.lm_credit import turn_advantages

    adv = torch.tensor([1.0, -1.0, 0.5, 0.5])
    token_turns = [[0, 0, -1, 1, 1], [0, -1, 1], [0, 0], [0]]
    turn_rewards = [[-1.0, -6.0], [-1.0, -1.0], [-1.0], [-1.0]]  # group 2: all equal, no turn term
    out = turn_advantages(adv, token_turns, turn_rewards, group_size=2, width=6, turn_credit=1.0)
    assert out.shape == (4, 6)
    pooled = torch.tensor([-1.0, -6.0, -1.0, -1.0])
    z = (pooled - pooled.mean()) / pooled.std()
    assert out[0, :2].tolist() == pytest.approx([1.0 + z[0].item()] * 2)
    assert out[0, 3:5].tolist() == pytest.approx([1.0 + z[1].item()] * 2)  # the costly turn is blamed
    assert out[0, 2].item() == pytest.approx(1.0) and out[0, 5].item() == pytest.approx(1.0)  # user token, pad
    assert out[1, 0].item() == pytest.approx(-1.0 + z[2].item())
    assert out[0, 3] < out[0, 0]  # the rejected turn is below its dialogue's good turn
    assert torch.equal(out[2:], torch.full((2, 6), 0.5))  # constant immediate rewards: dialogue advantage only
    plain = turn_advantages(adv, token_turns, turn_rewards, group_size=2, width=6, turn_credit=0.0)
    assert torch.equal(plain, adv.unsqueeze(1).repeat(1, 6))
    with pytest.raises(ValueError, match="groups of 3"):
        turn_advantages(adv, token_turns, turn_rewards, group_size=3, width=6, turn_credit=1.0)


def test_turn_credit_trainer_trains_with_per_token_advantages(tiny_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from agents.lm_credit import TurnCreditGRPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    cfg = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_steps=1, num_iterations=1,
        beta=0.0, learning_rate=1e-3, logging_steps=1, report_to=[], use_cpu=True, max_completion_length=128,
        temperature=1.0, save_strategy="no", seed=0,
    )  # fmt: skip
    rollout = DialogueRollout(max_turns=3, max_new_tokens=6)
    trainer = TurnCreditGRPOTrainer(
        model=model, args=cfg, train_dataset=build_task_dataset(4), processing_class=tok,
        reward_funcs=[env_return], rollout_func=rollout, turn_credit=1.0,
    )  # fmt: skip
    seen = []
    original = TurnCreditGRPOTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = original(self, inputs)
        seen.append(out["advantages"])
        return out

    trainer._generate_and_score_completions = spy.__get__(trainer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert seen and seen[0].dim() == 2 and seen[0].shape[0] == 4
    assert rollout.last_output is not None


def test_branch_rollout_trains_one_turn_and_scores_the_return_to_go(tiny):
    """Branch mode replays a prefix, trains only the next turn, and rewards the rest of the dialogue.

    Greedy throughout, so branching a greedy dialogue at turn 1 must replay it exactly: the trained
    tokens are that dialogue's turn-1 tokens and the reward is its return minus turn 0's reward.
    """
    model, tok = tiny
    full = play(tiny, [0, 3], sample=False, turns=4)
    prefixes = [[m["content"] for m in dialogue(t) if m["role"] == "assistant"][:1] for t in full["transcript"]]
    branch = DialogueRollout(max_turns=4, max_new_tokens=6, explore_turns=1).rollout(
        model, tok, [0, 3], GenerationConfig(max_new_tokens=6), prefixes=prefixes
    )
    for k in range(2):
        turns, ids = full["token_turns"][k], full["completion_ids"][k]
        first = turns.index(1)
        turn1 = [i for i, t in zip(ids, turns, strict=True) if t == 1]
        assert branch["completion_ids"][k][: len(turn1)] == turn1
        assert len(branch["completion_ids"][k]) - len(turn1) <= 1  # at most the closing end-of-turn
        assert branch["prompt_ids"][k] == full["prompt_ids"][k] + ids[: first - 0]
        assert set(branch["env_mask"][k][: len(turn1)]) == {1}
        assert branch["env_return"][k] == pytest.approx(full["env_return"][k] - full["turn_rewards"][k][0])
        assert branch["transcript"][k] == full["transcript"][k]  # the greedy rest is the same dialogue


def test_branch_rollout_samples_the_branch_turn_and_plays_on_greedily(tiny):
    model, tok = tiny
    rollout = DialogueRollout(max_turns=3, max_new_tokens=6, explore_turns=1)
    sampled = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=1.0)
    outs = [rollout.rollout(model, tok, [2] * 4, sampled, generation_seed=s) for s in (1, 2)]
    assert outs[0]["completion_ids"] != outs[1]["completion_ids"]  # the branch turn is sampled
    for out in outs:
        assert all(max(t) == 0 for t in out["token_turns"])  # the completion is the branch turn only
        for ids, transcript in zip(out["completion_ids"], out["transcript"], strict=True):
            said = [m["content"] for m in dialogue(transcript) if m["role"] == "assistant"]
            assert said[0] == tok.decode(ids, skip_special_tokens=True).strip() or len(said[0]) < 2
    with pytest.raises(ValueError, match="explore_turns"):
        DialogueRollout(explore_turns=0)


def test_branch_rollout_handed_on_to_the_planner_scores_the_reply_under_its_play(tiny):
    """With a continuation agent the LM speaks only the branch turn; the planner plays the rest.

    The planner's turns are its own utterances on the same state, so the reward equals the return of
    a scripted dialogue (the LM's reply, then the planner's), and one reply always earns one return.
    """
    from agents.base import make_agent
    from dialog_env.driver import DialogueDriver, ScriptedPolicy

    model, tok = tiny
    rollout = DialogueRollout(max_turns=5, max_new_tokens=6, explore_turns=1, continuation="planner")
    sampled = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=1.0)
    out = rollout.rollout(model, tok, [7] * 6, sampled, generation_seed=3)
    assert all(max(t) == 0 for t in out["token_turns"])  # only the branch turn is trained
    said = [[m["content"] for m in dialogue(t) if m["role"] == "assistant"] for t in out["transcript"]]
    by_reply: dict[str, float] = {}
    for ids, lines, ret in zip(out["completion_ids"], said, out["env_return"], strict=True):
        assert lines[0] == tok.decode(ids, skip_special_tokens=True).strip()
        assert by_reply.setdefault(lines[0], ret) == pytest.approx(ret)  # same reply, same return
        env = gym.make("dialog_env/PersonaRecText-v0", max_turns=5)
        (record,) = DialogueDriver([env]).play(ScriptedPolicy([lines]), [7])
        assert record.return_ == pytest.approx(ret) and record.turns == len(lines)
        # After the branch turn the planner speaks: its utterance on the replayed state is the second line.
        if len(lines) > 1:
            planner = make_agent("planner")
            check = gym.make("dialog_env/PersonaRecText-v0", max_turns=5)
            (again,) = DialogueDriver([check]).play(_FirstThenAgent(lines[0], planner), [7])
            assert again.messages == record.messages
    with pytest.raises(ValueError, match="continuation: 'oracle' reads the hidden persona"):
        DialogueRollout(explore_turns=1, continuation="oracle")
    with pytest.raises(ValueError, match="continuation: unknown agent 'wizard'"):
        DialogueRollout(explore_turns=1, continuation="wizard")
    with pytest.raises(ValueError, match="only branch mode"):
        DialogueRollout(continuation="planner")


class _FirstThenAgent:
    """Says ``first``, then lets ``agent`` speak (as a branch-mode rollout with a continuation does)."""

    def __init__(self, first, agent):
        from dialog_env.driver import AgentPolicy

        self.first, self.inner, self.said = first, AgentPolicy(agent), False

    def begin(self, slot, start):
        self.inner.begin(slot, start)

    def act(self, slots):
        if not self.said:
            self.said = True
            return [self.first for _ in slots]
        return self.inner.act(slots)

    def observe(self, slot, step):
        return self.inner.observe(slot, step)


def test_branch_dataset_has_one_row_per_agent_turn_of_the_greedy_dialogues(tiny):
    from agents.lm_grpo import PREFIX_KEY, build_branch_dataset

    model, tok = tiny
    ds = build_branch_dataset(model, tok, 3, split="train", seed=4, max_turns=3, max_new_tokens=6)
    full = play(tiny, [4, 5, 6], sample=False)
    assert len(ds) == sum(len([m for m in dialogue(t) if m["role"] == "assistant"]) for t in full["transcript"])
    assert sorted(set(ds["dialog_seed"])) == [4, 5, 6]
    for row in ds:
        first = row["prompt"][0]
        assert first[SEED_KEY] == row["dialog_seed"] and len(first[PREFIX_KEY] or []) == row["turn"]
        assert row["prompt"][-1]["role"] == "user"  # the policy speaks next
    with pytest.raises(ValueError, match="branch point"):  # a prefix that ends the dialogue has no turn left
        DialogueRollout(max_turns=1, max_new_tokens=6, explore_turns=1).rollout(
            model, tok, [4], GenerationConfig(max_new_tokens=6), prefixes=[["hello"]]
        )


def test_greedy_advantages_reward_only_the_gain_over_the_greedy_reply():
    from agents.lm_trainer import greedy_advantages

    adv = greedy_advantages([5.0, 1.0, 3.0, -2.0, 10.0, 10.0], [3.0, 3.0, 3.0, -4.0, -4.0, -4.0], group_size=3)
    std0 = torch.tensor([5.0, 1.0, 3.0]).std(unbiased=False)
    torch.testing.assert_close(adv[:3], torch.tensor([2.0 / std0, 0.0, 0.0]))  # no better than greedy: no gradient
    std1 = torch.tensor([-2.0, 10.0, 10.0]).std(unbiased=False)
    torch.testing.assert_close(adv[3:], torch.tensor([2.0, 14.0, 14.0]) / std1)
    same = greedy_advantages([4.0, 4.0], [1.0, 1.0], group_size=2)  # no spread: the scale floor of 1 holds
    torch.testing.assert_close(same, torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match="do not split into groups"):
        greedy_advantages([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], group_size=2)
    with pytest.raises(ValueError, match="one entry per rollout"):
        greedy_advantages([1.0, 2.0], [0.0], group_size=2)


def test_greedy_baseline_is_the_greedy_reply_s_return_at_each_branch_point(tiny):
    model, tok = tiny
    rollout = DialogueRollout(max_turns=4, max_new_tokens=6, explore_turns=1, continuation="planner")
    seeds, prefixes = [3, 3, 8, 8], [["Hello."], ["Hello."], [], []]
    baseline = rollout.greedy_returns(model, tok, seeds, prefixes)
    greedy = rollout.rollout(model, tok, [3, 8], GenerationConfig(max_new_tokens=6), prefixes=[["Hello."], []])
    assert baseline == [greedy["env_return"][0]] * 2 + [greedy["env_return"][1]] * 2
    with pytest.raises(ValueError, match="greedy_baseline: only branch mode"):
        DialogueRollout(greedy_baseline=True)


def test_branch_mode_grpo_run_end_to_end(tiny_path, tmp_path):
    from agents.lm_train import LMTrainConfig, train_lm

    cfg = LMTrainConfig(
        model=str(tiny_path), mode="branch", tasks=2, max_steps=2, num_generations=2, per_device_train_batch_size=4,
        num_iterations=1, max_turns=3, max_new_tokens=6, temperature=1.0, save_steps=10, lora=True, dtype="float32",
    )  # fmt: skip
    run = train_lm(cfg, tmp_path / "run")
    assert (run / "final_model" / "config.json").exists()
    logs = [r for r in __import__("json").loads((run / "train_log.json").read_text()) if "reward" in r]
    assert logs and all(r["completions/mean_length"] <= 6 + 1 for r in logs)  # one agent turn per completion
    # The planner plays on after the sampled reply, and the advantage is the gain over the greedy reply.
    handed = dataclasses.replace(cfg, continuation="planner", advantage="greedy", padding_free=False)
    run = train_lm(handed, tmp_path / "run_planner")
    assert (run / "final_model" / "config.json").exists()
    assert "continuation: planner" in (run / "config.yaml").read_text()
