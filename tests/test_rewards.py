"""The reward library: plug-in routes, validation, weighted composition, the TRL adapter, the REWARDS.md example."""

from __future__ import annotations

import json
import math
import pickle
import re
import sys
import textwrap
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401 - registers the environments
import rewards
from agents import make_agent
from dialog_env.context import TurnContext
from rewards import (
    DEFAULT_WEIGHTS,
    ENTRY_POINT_GROUP,
    REWARDS,
    RewardError,
    WeightedReward,
    call_reward,
    get_reward,
    per_turn,
    register_reward,
    to_trl,
)
from rewards.trl import TRLReward, completion_text

ACT_ID = "dialog_env/PersonaRec-v0"
TEXT_ID = "dialog_env/PersonaRecText-v0"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_registry():
    """Tests register rewards; leave the registry (and imported test modules) as they were."""
    saved = dict(REWARDS)
    modules = set(sys.modules)
    yield
    REWARDS.clear()
    REWARDS.update(saved)
    for name in set(sys.modules) - modules:
        if name.startswith("dialog_env_test_"):
            del sys.modules[name]


def contexts(n: int = 6, seed: int = 0, mode: str = TEXT_ID) -> list[TurnContext]:
    """Real turn contexts from a rule-agent dialogue."""
    env = gym.make(mode)
    agent = make_agent("rule")
    out: list[TurnContext] = []
    s = seed
    while len(out) < n:
        obs, info = env.reset(seed=s)
        agent.reset(env, seed=s)
        while len(out) < n:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            out.append(env.unwrapped.last_context)
            if terminated or truncated:
                break
        s += 1
    return out


MODULE_SOURCE = '''
from rewards import per_turn

CALLS = []


def my_reward(contexts):
    """0.25 a turn, plus 1 when the agent says please."""
    CALLS.append(len(contexts))
    return [0.25 + ("please" in c.agent_text.lower()) for c in contexts]


class Politeness:
    """A callable class: instantiated with no arguments by get_reward."""

    def __call__(self, contexts):
        return [0.5 if "please" in c.agent_text.lower() else 0.0 for c in contexts]


@per_turn
def turn_index(ctx):
    return ctx.turn
'''


def write_module(directory: Path, name: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(MODULE_SOURCE), encoding="utf-8")
    return path


# -- plug-in routes ------------------------------------------------------------------------------
def test_route_1_registered_name_in_reward_weights():
    @per_turn
    def my_reward(ctx):
        return 1.0 if "please" in ctx.agent_text.lower() else 0.0

    assert register_reward("my_reward", my_reward) is my_reward
    assert get_reward("my_reward") == ("my_reward", my_reward)
    env = gym.make(TEXT_ID, reward_weights={"my_reward": 2.0, "task_success": 20.0, "turn_cost": 1.0})
    env.reset(seed=0)
    _, reward, _, _, info = env.step("Could you please tell me about your diet?")
    assert info["reward_terms"] == {"my_reward": 1.0, "task_success": 0.0, "turn_cost": -1.0}
    assert reward == pytest.approx(2.0 * 1.0 + 20.0 * 0.0 - 1.0)
    _, reward, _, _, info = env.step("Do you have any pets?")
    assert info["reward_terms"]["my_reward"] == 0.0
    assert reward == pytest.approx(-1.0)


def test_register_reward_as_decorator_and_name_clash():
    @register_reward("decorated_reward")
    def decorated_reward(contexts):
        return [0.0] * len(contexts)

    assert REWARDS["decorated_reward"] is decorated_reward
    register_reward("decorated_reward", decorated_reward)  # same object again: fine
    with pytest.raises(ValueError, match="'decorated_reward' is already registered"):
        register_reward("decorated_reward", lambda cs: [1.0] * len(cs))
    with pytest.raises(ValueError, match="already registered"):
        register_reward("task_success", lambda cs: [1.0] * len(cs))


def test_route_2_module_attr_string(tmp_path, monkeypatch):
    write_module(tmp_path, "dialog_env_test_mymod")
    monkeypatch.syspath_prepend(str(tmp_path))
    name, fn = get_reward("dialog_env_test_mymod:my_reward")
    assert name == "dialog_env_test_mymod:my_reward"
    assert callable(fn) and fn.__name__ == "my_reward"
    env = gym.make(
        ACT_ID,
        reward_weights={
            "dialog_env_test_mymod:my_reward": 1.0,
            "dialog_env_test_mymod:Politeness": 1.0,  # a class: instantiated
            "dialog_env_test_mymod:turn_index": 0.0,  # reported, not summed
            "task_success": 20.0,
        },
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step(0)
    assert info["reward_terms"] == {
        "dialog_env_test_mymod:my_reward": 0.25,
        "dialog_env_test_mymod:Politeness": 0.0,
        "dialog_env_test_mymod:turn_index": 0.0,
        "task_success": 0.0,
    }
    assert reward == pytest.approx(0.25)
    _, _, _, _, info = env.step(1)
    assert info["reward_terms"]["dialog_env_test_mymod:turn_index"] == 1.0
    assert sys.modules["dialog_env_test_mymod"].CALLS == [1, 1]


def test_route_2_errors_name_the_spec(tmp_path, monkeypatch):
    write_module(tmp_path, "dialog_env_test_mymod2")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="cannot import module 'dialog_env_test_nosuchmod'"):
        get_reward("dialog_env_test_nosuchmod:my_reward")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        get_reward("dialog_env_test_mymod2:nope")
    with pytest.raises(ValueError, match="not callable"):
        get_reward("dialog_env_test_mymod2:CALLS")


def test_route_3_entry_point(tmp_path, monkeypatch):
    write_module(tmp_path, "dialog_env_test_epmod")
    dist = tmp_path / "fakepkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nfake_ep_reward = dialog_env_test_epmod:my_reward\n"
        "fake_ep_class = dialog_env_test_epmod:Politeness\n",
        encoding="utf-8",
    )
    assert ENTRY_POINT_GROUP == "dialog_env.rewards"
    with pytest.raises(ValueError, match="unknown reward 'fake_ep_reward'"):
        get_reward("fake_ep_reward")  # not installed yet
    monkeypatch.syspath_prepend(str(tmp_path))
    name, fn = get_reward("fake_ep_reward")
    assert name == "fake_ep_reward" and fn.__name__ == "my_reward"
    assert "fake_ep_reward" not in REWARDS  # found through the entry point, not the registry
    name, obj = get_reward("fake_ep_class")
    assert type(obj).__name__ == "Politeness"
    env = gym.make(TEXT_ID, reward_weights={"fake_ep_reward": 1.0, "fake_ep_class": 2.0, "turn_cost": 1.0})
    env.reset(seed=0)
    _, reward, _, _, info = env.step("Please, what do you do for a living?")
    assert info["reward_terms"] == {"fake_ep_reward": 1.25, "fake_ep_class": 0.5, "turn_cost": -1.0}
    assert reward == pytest.approx(1.25 + 2 * 0.5 - 1.0)
    # Unknown names list the entry points found too.
    with pytest.raises(ValueError, match=r"\['fake_ep_class', 'fake_ep_reward'\]"):
        get_reward("nope")


def test_unknown_spec_lists_registry_names():
    register_reward("listed_reward", lambda cs: [0.0] * len(cs))
    with pytest.raises(ValueError) as err:
        get_reward("nope")
    msg = str(err.value)
    assert "unknown reward 'nope'" in msg
    for name in REWARDS:
        assert repr(name) in msg
    assert "'package.module:attr'" in msg and ENTRY_POINT_GROUP in msg
    with pytest.raises(ValueError, match="name, an import path or a callable"):
        get_reward(42)  # type: ignore[arg-type]


def test_callable_spec_and_duplicate_terms():
    def custom(contexts):
        return [3.0] * len(contexts)

    assert get_reward(custom) == ("custom", custom)
    wr = WeightedReward({custom: 0.5, "task_success": 1})
    assert wr.names == ["custom", "task_success"]
    totals, terms = wr(contexts(2))
    assert terms["custom"] == [3.0, 3.0]
    assert totals == [pytest.approx(1.5 + t) for t in terms["task_success"]]
    with pytest.raises(ValueError, match="appears twice"):
        WeightedReward({"task_success": 1, rewards.task_success: 2})
    with pytest.raises(ValueError, match="mapping"):
        WeightedReward(["task_success"])  # type: ignore[arg-type]
    for bad in (float("inf"), "1", True, None):
        with pytest.raises(ValueError, match="finite number"):
            WeightedReward({"task_success": bad})  # type: ignore[dict-item]


# -- validation ----------------------------------------------------------------------------------
def test_reward_that_raises_is_named():
    ctxs = contexts(2)

    def exploding(contexts):
        raise KeyError("boom")

    with pytest.raises(RewardError, match=r"reward 'exploding' raised KeyError: 'boom'") as err:
        call_reward("exploding", exploding, ctxs)
    assert isinstance(err.value.__cause__, KeyError)
    register_reward("exploding", exploding)
    env = gym.make(ACT_ID, reward_weights={"task_success": 20.0, "exploding": 1.0})
    env.reset(seed=0)
    with pytest.raises(RewardError, match="'exploding'"):
        env.step(0)
    env = gym.make(TEXT_ID, reward_weights={"exploding": 1.0})
    env.reset(seed=0)
    with pytest.raises(RewardError, match="'exploding'"):
        env.step("Hello")
    with pytest.raises(RewardError, match="'exploding'"):
        to_trl("exploding")(completions=["hi"], turn_contexts=[ctxs])


def test_reward_returning_nan_is_named():
    @per_turn
    def nan_reward(ctx):
        return math.nan

    ctxs = contexts(3)
    with pytest.raises(RewardError, match=r"reward 'nan_reward' returned NaN for context 0"):
        call_reward("nan_reward", nan_reward, ctxs)
    register_reward("nan_reward", nan_reward)
    env = gym.make(TEXT_ID, reward_weights={"nan_reward": 0.0})  # even with weight 0
    env.reset(seed=0)
    with pytest.raises(RewardError, match="nan_reward"):
        env.step("Any pets?")
    # NaN later in the batch.
    with pytest.raises(RewardError, match="returned NaN for context 2"):
        call_reward("late_nan", lambda cs: [0.0, 1.0, float("nan")], ctxs)


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_reward_returning_an_infinity_is_named(bad):
    """+inf and -inf terms would make the step reward NaN: refused like NaN, even with weight 0."""
    ctxs = contexts(3)
    with pytest.raises(RewardError, match=rf"reward 'inf_reward' returned {bad} for context 1; rewards must be finite"):
        call_reward("inf_reward", lambda cs: [0.0, bad, 1.0], ctxs)
    with pytest.raises(RewardError, match="must be finite"):
        call_reward("inf_reward", lambda cs: [bad] * 3, ctxs)  # the fast path's case too


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ([], "returned 0 values for 3 contexts"),
        ([1.0] * 4, "returned 4 values for 3 contexts"),
        (None, "must return a sequence of floats"),
        (["a", "b", "c"], "must return a sequence of floats"),
        (1.0, "must return a sequence of floats"),
    ],
)
def test_reward_returning_wrong_shape_is_named(out, match):
    ctxs = contexts(3)
    with pytest.raises(RewardError, match=f"^reward 'shaped' {re.escape(match)}"):
        call_reward("shaped", lambda cs: out, ctxs)


def test_numpy_output_is_accepted():
    ctxs = contexts(3)
    assert call_reward("np", lambda cs: np.arange(len(cs), dtype=np.float32), ctxs) == [0.0, 1.0, 2.0]


def test_reward_error_is_a_runtime_error():
    assert issubclass(RewardError, RuntimeError)


# -- built-ins and composition -------------------------------------------------------------------
def test_default_weights():
    # PyDial's benchmark reward (success * 20 - turns) is the core; the other terms shape it.
    assert DEFAULT_WEIGHTS["task_success"] == 20.0 and DEFAULT_WEIGHTS["turn_cost"] == 1.0
    assert {"persona_consistency", "redundancy", "discovery"} <= set(DEFAULT_WEIGHTS)
    assert all(name in REWARDS for name in DEFAULT_WEIGHTS)  # every default is a registered built-in
    assert all(isinstance(w, float) and math.isfinite(w) and w > 0 for w in DEFAULT_WEIGHTS.values())
    assert WeightedReward().weights == DEFAULT_WEIGHTS
    assert WeightedReward(None).names == list(DEFAULT_WEIGHTS)


def test_rewards_md_documents_the_default_weights():
    """The built-ins table in docs/REWARDS.md lists exactly DEFAULT_WEIGHTS, with their weights."""
    doc = (ROOT / "docs" / "REWARDS.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)`\s+\| (\d+(?:\.\d+)?)\s+\|", doc, flags=re.M)
    assert {name: float(w) for name, w in rows} == DEFAULT_WEIGHTS


def test_weighted_total_is_the_weighted_sum_of_terms():
    ctxs = contexts(40, seed=3) + contexts(20, seed=50, mode=ACT_ID)
    totals, terms = WeightedReward()(ctxs)
    assert set(terms) == set(DEFAULT_WEIGHTS)
    for i, total in enumerate(totals):
        assert total == pytest.approx(sum(w * terms[k][i] for k, w in DEFAULT_WEIGHTS.items()))
    for name, values in terms.items():
        assert values == REWARDS[name](ctxs)
    weights = {"discovery": 0.5, "persona_consistency": 3.0, "redundancy": 0.0}
    totals, terms = WeightedReward(weights)(ctxs)
    assert list(terms) == list(weights)
    for i, total in enumerate(totals):
        assert total == pytest.approx(0.5 * terms["discovery"][i] + 3.0 * terms["persona_consistency"][i])


def test_env_reward_is_the_weighted_sum_over_whole_episodes():
    env = gym.make(ACT_ID)
    agent = make_agent("rule")
    n = 0
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        while True:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            n += 1
            assert reward == pytest.approx(sum(DEFAULT_WEIGHTS[k] * v for k, v in info["reward_terms"].items()))
            if terminated or truncated:
                break
    assert n > 10


def test_builtin_semantics_on_real_turns():
    ctxs = contexts(60, seed=0)
    assert rewards.turn_cost(ctxs) == [-1.0] * len(ctxs)
    assert rewards.task_success(ctxs) == [1.0 if c.outcome == "accepted" else 0.0 for c in ctxs]
    assert any(c.outcome == "accepted" for c in ctxs)
    assert all(-4.0 <= v <= 1.0 for v in rewards.persona_consistency(ctxs))
    for c, v in zip(ctxs, rewards.discovery(ctxs), strict=True):
        assert v == pytest.approx((c.before.entropy - c.after.entropy) / rewards.builtin.max_entropy(c.world))
    assert all(v <= 0.0 for v in rewards.redundancy(ctxs))


def _said(env, text):
    return env.step(text)[-1]["reward_terms"]


def test_persona_consistency_and_redundancy_by_hand():
    env = gym.make(TEXT_ID, tracker="oracle")
    core = env.unwrapped
    world = core.world
    for seed in range(50):
        env.reset(seed=seed)
        if core.persona.traits["openness"] == "high":  # never declines
            break
    slot = world.slots[0]
    terms = _said(env, slot.questions[0])
    assert terms["redundancy"] == 0.0 and terms["persona_consistency"] == 0.0
    assert terms["discovery"] > 0
    true = world.value(slot.name, core.persona.values[slot.name])
    wrong = next(v for v in slot.values if v.id != true.id)
    # Restating what the user said earns nothing: consistent (0), and redundant.
    restated = _said(env, f"I understand that {true.you}.")
    assert restated["persona_consistency"] == 0.0 and restated["redundancy"] == -1.0
    assert _said(env, f"I understand that {wrong.you}.")["persona_consistency"] == -2.0
    # Asking a slot the tracker already knows is redundant.
    assert _said(env, slot.questions[1])["redundancy"] == -1.0


# -- TRL adapter ---------------------------------------------------------------------------------
def _noop(*args, **kwargs):
    return None


def _dialog_with_a_revealed_fact():
    """A seeded text-env dialogue in which the user has revealed at least one fact."""
    env = gym.make(TEXT_ID)
    core = env.unwrapped
    for seed in range(100):
        env.reset(seed=seed)
        for slot in core.world.slots[:3]:
            _, _, terminated, _, _ = env.step(slot.questions[0])
            if terminated:
                break
        if core.judge.revealed and not terminated:
            return env, seed
    raise AssertionError("no seed revealed a fact")


def _trl_call(fn, prompts, completions, **columns):
    """Exactly how GRPOTrainer._calculate_rewards calls a reward function (TRL 1.16)."""
    completion_ids = [[101, 102, 103 + i] for i in range(len(completions))]
    reward_kwargs = dict(columns)
    reward_kwargs["trainer_state"] = None
    reward_kwargs["log_extra"] = _noop
    reward_kwargs["log_metric"] = _noop
    return fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **reward_kwargs)


def _direct(state, text, term):
    env = gym.make(TEXT_ID, **state["env_kwargs"])
    env.reset(seed=state["seed"], options=state["options"] or None)
    for turn in state["agent_turns"]:
        env.step(turn)
    return env.step(text)[-1]["reward_terms"][term]


def test_to_trl_single_turn_dialog_state_column():
    env, seed = _dialog_with_a_revealed_fact()
    core = env.unwrapped
    state = core.dialog_state()
    assert state["seed"] == seed and len(state["agent_turns"]) >= 1
    json.dumps(state)  # a dataset column must be serialisable
    slot, value = next(iter(core.judge.revealed.items()))
    true = core.world.value(slot, value)
    wrong = next(v for v in core.world.slot[slot].values if v.id != value)
    consistent = f"I understand that {true.you}."
    contradicting = f"I understand that {wrong.you}."
    texts = [consistent, contradicting, "Lovely weather lately, isn't it?", f"So {wrong.you}, right?"]
    prompt = [{"role": "system", "content": "You recommend things."}, *core.messages()]
    f = to_trl("persona_consistency")
    assert f.__name__ == "persona_consistency"
    for completions in (
        [[{"role": "assistant", "content": t}] for t in texts],  # conversational
        texts,  # plain strings
    ):
        scores = _trl_call(
            f,
            prompts=[prompt] * len(texts),
            completions=completions,
            dialog_state=[state] * (len(texts) - 1) + [json.dumps(state)],  # dicts or JSON strings
        )
        assert len(scores) == len(texts)
        assert all(isinstance(s, float) for s in scores)
        assert scores == [_direct(state, t, "persona_consistency") for t in texts]
        assert scores[0] > scores[1]
        assert scores[0] == 0.0 and scores[1] == -2.0 and scores[2] == 0.0
    # Other terms through the same adapter agree with the env too.
    for term in ("discovery", "redundancy", "turn_cost", "task_success"):
        got = _trl_call(to_trl(term), prompts=[prompt] * 2, completions=texts[:2], dialog_state=[state] * 2)
        assert got == [_direct(state, t, term) for t in texts[:2]]


def test_to_trl_scores_a_consistent_recommendation_above_a_contradicting_one():
    env, _ = _dialog_with_a_revealed_fact()
    core = env.unwrapped
    state = core.dialog_state()
    revealed = core.judge.revealed
    goal = core.goal
    fits = [i for i in core.world.items if i.category == goal and not i.violated_slots(revealed)]
    clashes = [i for i in core.world.items if i.category != goal]
    texts = [f"How about {fits[0].name}?", f"How about {clashes[0].name}?"]
    scores = _trl_call(to_trl("persona_consistency"), [[]] * 2, texts, dialog_state=[state] * 2)
    assert scores[0] > scores[1]


def test_to_trl_returns_none_when_the_dialogue_already_ended():
    env = gym.make(TEXT_ID)
    env.reset(seed=4)
    env.step("Goodbye!")
    state = env.unwrapped.dialog_state()
    assert _trl_call(to_trl("turn_cost"), [[]], ["Hello"], dialog_state=[state]) == [None]


def test_to_trl_replay_keeps_text_env_kwargs():
    env = gym.make(TEXT_ID, max_utterance_chars=30, noise=0.15)
    env.reset(seed=8)
    env.step("Do you have any pets? And what do you do for a living?")
    state = env.unwrapped.dialog_state()
    assert state["env_kwargs"]["max_utterance_chars"] == 30 and state["env_kwargs"]["noise"] == 0.15
    text = "Lovely weather lately. Do you have any allergies?"  # the question is cut off at 30 chars
    got = _trl_call(to_trl("discovery"), [[]], [text], dialog_state=[state])
    assert got == [_direct(state, text, "discovery")]


def test_to_trl_turn_contexts_column():
    env = gym.make(TEXT_ID)
    agent = make_agent("rule")
    episodes, sums = [], []
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        ctxs, total = [], 0.0
        while True:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            ctxs.append(env.unwrapped.last_context)
            total += info["reward_terms"]["persona_consistency"]
            if terminated or truncated:
                break
        episodes.append(ctxs)
        sums.append(total)
    episodes.append([])
    sums.append(0.0)
    f = to_trl("persona_consistency")
    got = _trl_call(
        f, prompts=[[]] * 4, completions=[[{"role": "assistant", "content": ""}]] * 4, turn_contexts=episodes
    )
    assert got == pytest.approx(sums)


def test_to_trl_is_picklable_and_named():
    f = to_trl("persona_consistency")
    assert isinstance(f, TRLReward) and callable(f)
    env, _ = _dialog_with_a_revealed_fact()
    state = env.unwrapped.dialog_state()
    before = _trl_call(f, [[]] * 2, ["Hello", "Any pets?"], dialog_state=[state] * 2)
    g = pickle.loads(pickle.dumps(f))  # after use too: cached envs are dropped
    assert g.__name__ == f.__name__ == "persona_consistency"
    assert _trl_call(g, [[]] * 2, ["Hello", "Any pets?"], dialog_state=[state] * 2) == before
    assert to_trl(rewards.discovery).__name__ == "discovery"
    assert pickle.loads(pickle.dumps(to_trl("discovery"))).__name__ == "discovery"


def test_to_trl_errors():
    f = to_trl("turn_cost")
    with pytest.raises(ValueError, match="'dialog_state' column.*'turn_contexts'"):
        _trl_call(f, [[]], ["hi"])
    with pytest.raises(ValueError, match="unknown reward"):
        to_trl("nope")
    with pytest.raises(TypeError, match="completion"):
        completion_text(42)  # type: ignore[arg-type]
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]) == "a"


@pytest.mark.slow
def test_to_trl_inside_trls_own_calculate_rewards():
    """Run TRL's real GRPOTrainer._calculate_rewards (on a stand-in trainer) with a to_trl reward."""
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    torch = pytest.importorskip("torch")
    env, _ = _dialog_with_a_revealed_fact()
    core = env.unwrapped
    state = core.dialog_state()
    slot, value = next(iter(core.judge.revealed.items()))
    wrong = next(v for v in core.world.slot[slot].values if v.id != value)
    texts = [f"I understand that {core.world.value(slot, value).you}.", f"I understand that {wrong.you}."]
    funcs = [to_trl("persona_consistency"), to_trl("turn_cost")]
    trainer = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        args=types.SimpleNamespace(report_to=[]),
        state=types.SimpleNamespace(global_step=0),
        reward_funcs=funcs,
        reward_processing_classes=[None, None],
        reward_func_names=[f.__name__ for f in funcs],
        _log_completion_extra=_noop,
        _log_metric=_noop,
        environments=None,
    )
    prompts = [core.messages()] * 2
    inputs = [{"prompt": p, "dialog_state": json.dumps(state)} for p in prompts]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    out = grpo.GRPOTrainer._calculate_rewards(trainer, inputs, prompts, completions, [[1], [2]])
    assert out.tolist() == [[0.0, -1.0], [-2.0, -1.0]]


# -- docs/REWARDS.md -----------------------------------------------------------------------------
def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block."""
    blocks, lang, lines = [], None, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, "unclosed code fence"
    return blocks


def test_rewards_md_examples_run(tmp_path, monkeypatch):
    doc = (ROOT / "docs" / "REWARDS.md").read_text(encoding="utf-8")
    fenced = fenced_blocks(doc)
    # Every fenced block is python (runnable), text or toml (shown only).
    assert {lang for lang, _ in fenced} == {"python", "text", "toml"}
    blocks = [code for lang, code in fenced if lang == "python"]
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    namespace: dict = {"__name__": "rewards_md"}
    try:
        for i, block in enumerate(blocks):
            code = compile(block, f"docs/REWARDS.md[python block {i}]", "exec")
            exec(code, namespace)  # noqa: S102 - the doc's own assertions run here
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith("my_rewards"):
                del sys.modules[name]
    assert (tmp_path / "my_rewards.py").is_file()  # the doc wrote its module into the cwd
    assert namespace["scores"][0] > namespace["scores"][1]


# -- reward specs with parameters ------------------------------------------------------------------
PC = "persona_consistency"


def get_length_penalty(per_char: float = 0.01):
    """A TRL-style factory: returns the reward (picklable: a partial of a module function)."""
    import functools

    return functools.partial(_length_penalty, per_char=per_char)


def _length_penalty(contexts, per_char):
    return [-per_char * len(c.agent_text) for c in contexts]


class Scaled:
    """A reward class with constructor parameters."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, contexts):
        return [self.scale for _ in contexts]


def _contradiction_terms(reward_weights):
    env = gym.make(TEXT_ID, tracker="oracle", reward_weights=reward_weights)
    core = env.unwrapped
    for seed in range(50):
        env.reset(seed=seed)
        if core.persona.traits["openness"] == "high":
            break
    slot = core.world.slots[0]
    _said(env, slot.questions[0])
    true = core.persona.values[slot.name]
    wrong = next(v for v in slot.values if v.id != true)
    return _said(env, f"I understand that {wrong.you}.")


def test_reward_specs_take_parameters_in_every_form():
    mapping = {"persona_consistency": {"weight": 1.0, "kwargs": {"penalty": 3.0}}, "task_success": 20}
    listed = [
        {"name": "persona_consistency", "weight": 1.0, "kwargs": {"penalty": 3.0}},
        {"name": "task_success", "weight": 20},
    ]
    assert _contradiction_terms(mapping)["persona_consistency"] == -3.0
    assert _contradiction_terms(listed)["persona_consistency"] == -3.0
    assert _contradiction_terms(None)["persona_consistency"] == -2.0  # the default penalty
    floored = [{"name": "persona_consistency", "weight": 1, "kwargs": {"penalty": 3.0, "floor": -1.0}}]
    assert _contradiction_terms(floored)["persona_consistency"] == -1.0


def test_parameterised_terms_pickle_and_reach_trl():
    import pickle

    term = get_reward("persona_consistency", {"penalty": 5.0})[1]
    again = pickle.loads(pickle.dumps(term))
    assert again.params == {"penalty": 5.0} and again.__name__ == "persona_consistency"
    assert pickle.loads(pickle.dumps(get_reward("persona_consistency")[1])) is get_reward("persona_consistency")[1]
    f = pickle.loads(pickle.dumps(to_trl("persona_consistency", penalty=5.0)))
    assert f.__name__ == "persona_consistency" and f.fn.params == {"penalty": 5.0}


def test_factories_and_classes_take_kwargs():
    ctxs = contexts(3)
    _, fn = get_reward("tests.test_rewards:get_length_penalty", {"per_char": 1.0})
    assert call_reward("len", fn, ctxs) == [-float(len(c.agent_text)) for c in ctxs]
    _, fn = get_reward("tests.test_rewards:get_length_penalty")  # a get_* factory is called even without kwargs
    assert call_reward("len", fn, ctxs) == [-0.01 * len(c.agent_text) for c in ctxs]
    _, cls = get_reward("tests.test_rewards:Scaled", {"scale": 2.5})
    assert call_reward("scaled", cls, ctxs) == [2.5] * 3
    spec = {"name": "tests.test_rewards:Scaled", "weight": 2.0, "kwargs": {"scale": 0.5}}
    env = gym.make(TEXT_ID, reward_weights=[spec])
    env.reset(seed=0)
    _, reward, *_ = env.step("Hello")
    assert reward == 1.0


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ({PC: {"weight": 1, "kwargs": {"penalti": 1}}}, r"parameter 'penalti'; allowed: \['floor', 'penalty'\]"),
        ({PC: {"weight": 1, "kwargs": {"penalty": "x"}}}, "parameter 'penalty' must be a finite number"),
        ({"task_success": {"weight": 1, "kwargs": {"x": 1}}}, "unknown parameter 'x'; allowed: \\[\\]"),
        ({"tests.test_rewards:_length_penalty": {"weight": 1, "kwargs": {"x": 1}}}, "takes no parameters"),
        ({"tests.test_rewards:Scaled": {"weight": 1, "kwargs": {"size": 1}}}, "cannot build it with kwargs"),
        ({"task_success": {"wieght": 1}}, r"'task_success': unknown key\(s\) \['wieght'\]"),
        ([{"name": "task_success"}], r"\[0\]: unknown key\(s\) \[\], missing \['weight'\]"),
        ([{"name": "task_success", "weight": 1, "kwargs": [1]}], r"\[0\]\.kwargs: expected a mapping"),
        ([{"name": "task_success", "weight": float("inf")}], r"\[0\]\.weight: .* must be a finite number"),
        ("task_success", "expected a mapping of reward -> weight or a list"),
    ],
)  # fmt: skip
def test_malformed_reward_specs_name_the_entry(specs, match):
    with pytest.raises(ValueError, match=match):
        WeightedReward(specs)
    with pytest.raises(ValueError, match="reward_weights: "):
        gym.make(TEXT_ID, reward_weights=specs)


def test_reward_specs_are_settable_in_every_training_and_benchmark_config():
    from agents.collect import CollectConfig, CollectError
    from agents.lm_train import LMConfigError, LMTrainConfig
    from agents.sb3 import ConfigError, TrainConfig
    from dialog_env.benchmark import BenchmarkConfig
    from rewards.compose import reward_specs_from_config

    text = '{"task_success": 30, "persona_consistency": {"weight": 1, "kwargs": {"penalty": 4}}}'
    want = [
        {"name": "task_success", "weight": 30.0, "kwargs": {}},
        {"name": "persona_consistency", "weight": 1.0, "kwargs": {"penalty": 4}},
    ]
    assert reward_specs_from_config(text) == want
    assert reward_specs_from_config("") is None and reward_specs_from_config(None) is None
    for cls, err in ((TrainConfig, ConfigError), (LMTrainConfig, LMConfigError), (CollectConfig, CollectError)):
        cfg = cls(reward_weights=text)
        cfg.validate()
        assert cfg.reward_weights == want, cls
        with pytest.raises(err, match="reward_weights: unknown reward 'task_sucess'"):
            cls(reward_weights={"task_sucess": 1}).validate()
    bench = BenchmarkConfig(agents=["rule"], reward_weights=want)
    bench.validate()
    assert bench.env_kwargs(0.15) == {"noise": 0.15, "reward_weights": want}
    sb3 = TrainConfig(reward_weights=text)
    sb3.validate()
    assert sb3.env_kwargs() == {"noise": 0.0, "reward_weights": want}
    assert TrainConfig().env_kwargs() == {"noise": 0.0}
