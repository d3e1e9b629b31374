"""Baseline agents and the agent registry, run through dialog_env.evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401 - registers the environments
from agents import AGENTS, Agent, OracleAgent, RandomAgent, RuleAgent, make_agent, register_agent
from dialog_env.evaluation import EpisodeRecord, evaluate, run_episode, summarize
from dialog_env.wrappers import DiscreteActsWrapper
from rewards import DEFAULT_WEIGHTS

MODES = {"act": "dialog_env/PersonaRec-v0", "text": "dialog_env/PersonaRecText-v0"}
BASELINES = ("random", "rule", "oracle")
EPISODES = 100


@pytest.fixture(scope="module")
def success_rates() -> dict[tuple[str, str], float]:
    """Success rate of each baseline in each mode on the same 100 'test' episodes."""
    rates = {}
    for mode in MODES:
        for name in BASELINES:
            records = evaluate(lambda name=name: make_agent(name), split="test", episodes=EPISODES, seed=0, mode=mode)
            assert len(records) == EPISODES
            assert [r.seed for r in records] == list(range(EPISODES))
            rates[mode, name] = float(np.mean([r.success for r in records]))
    return rates


@pytest.mark.parametrize("mode", list(MODES))
def test_oracle_is_the_ceiling(success_rates, mode):
    assert success_rates[mode, "oracle"] >= 0.95


@pytest.mark.parametrize("mode", list(MODES))
def test_random_is_the_floor(success_rates, mode):
    assert success_rates[mode, "random"] <= 0.25


@pytest.mark.parametrize("mode", list(MODES))
def test_rule_is_in_between(success_rates, mode):
    assert success_rates[mode, "random"] < success_rates[mode, "rule"] < success_rates[mode, "oracle"]


def test_act_and_text_mode_agree(success_rates):
    """Template agents say act_to_text(a) in text mode, so both modes play the same dialogues."""
    for name in BASELINES:
        assert success_rates["act", name] == success_rates["text", name]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", BASELINES)
def test_run_episode_record(mode, name):
    env = gym.make(MODES[mode], split="test")
    agent = make_agent(name)
    for seed in range(5):
        r = run_episode(env, agent, seed=seed)
        assert isinstance(r, EpisodeRecord)
        assert r.seed == seed
        assert 1 <= r.turns <= dialog_env.MAX_EPISODE_STEPS
        assert r.outcome in {"accepted", "left", "bye", "truncated"}
        assert r.success == (r.outcome == "accepted")
        assert set(r.reward_terms) == set(DEFAULT_WEIGHTS)
        assert r.return_ == pytest.approx(sum(DEFAULT_WEIGHTS[k] * v for k, v in r.reward_terms.items()))
        assert r.reward_terms["turn_cost"] == -r.turns
        assert 0.0 <= r.contradiction_rate <= 1.0 and 0.0 <= r.jga <= 1.0
        assert -4.0 <= r.consistency <= 1.0
        assert 0 <= r.slots_discovered <= len(env.unwrapped.world.slots)
        assert len(r.messages) == 2 * r.turns + 1
        assert [m["role"] for m in r.messages[:3]] == ["user", "assistant", "user"]
        if name == "oracle":
            assert r.success and r.turns == 1 and r.contradiction_rate == 0.0


def test_run_episode_is_deterministic_and_agents_meet_the_same_users():
    env = gym.make(MODES["text"], split="test", noise=0.15)
    a = run_episode(env, make_agent("rule"), seed=7)
    b = run_episode(env, make_agent("rule"), seed=7)
    assert a == b
    openings = {run_episode(env, make_agent(n), seed=7).messages[0]["content"] for n in BASELINES}
    assert len(openings) == 1


@pytest.mark.parametrize("name", BASELINES)
def test_agents_drive_the_discrete_acts_wrapper(name):
    """Agents pick act ids (not text) when the text env is wrapped for act-level control."""
    env = DiscreteActsWrapper(gym.make(MODES["text"], split="test"))
    act_env = gym.make(MODES["act"], split="test")
    for seed in range(5):
        wrapped = run_episode(env, make_agent(name), seed=seed)
        plain = run_episode(act_env, make_agent(name), seed=seed)
        assert wrapped.messages == plain.messages
        assert wrapped.return_ == pytest.approx(plain.return_)


def test_rule_agent_asks_before_recommending():
    env = gym.make(MODES["act"], split="test")
    agent = make_agent("rule")
    obs, info = env.reset(seed=3)
    agent.reset(env, seed=3)
    core = env.unwrapped
    first = agent.act(obs, info)
    assert core.act_table.describe(first) == f"ask({core.world.slots[0].name})"


def test_random_agent_respects_the_action_mask():
    env = gym.make(MODES["act"], split="test")
    agent = make_agent("random")
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        while True:
            a = agent.act(obs, info)
            assert info["action_mask"][a]
            obs, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                break


def test_summarize_metrics():
    records = evaluate(lambda: make_agent("oracle"), split="test", episodes=10, seed=0, mode="act")
    summary = summarize(records)
    assert summary["success"]["mean"] == pytest.approx(np.mean([r.success for r in records]))
    assert summary["turns"]["mean"] == 1.0 and summary["turns"]["ci95"] == 0.0


def test_evaluate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        evaluate(lambda: make_agent("rule"), mode="speech", episodes=1)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        evaluate(lambda: make_agent("rule"), episodes=0)


# -- registry ------------------------------------------------------------------------------------
def test_registered_baselines():
    assert {"random", "rule", "oracle"} <= set(AGENTS)
    for name, cls in (("random", RandomAgent), ("rule", RuleAgent), ("oracle", OracleAgent)):
        agent = make_agent(name)
        assert type(agent) is cls and agent.name == name
        assert isinstance(agent, Agent)


def test_make_agent_unknown_name_lists_names():
    with pytest.raises(ValueError) as err:
        make_agent("genius")
    msg = str(err.value)
    assert "unknown agent 'genius'" in msg
    for name in AGENTS:
        assert repr(name) in msg
    assert "'package.module:attr'" in msg


def test_make_agent_import_path():
    agent = make_agent("agents.baselines:RuleAgent")
    assert isinstance(agent, RuleAgent)
    r = run_episode(gym.make(MODES["act"], split="test"), agent, seed=0)
    assert r == run_episode(gym.make(MODES["act"], split="test"), make_agent("rule"), seed=0)
    with pytest.raises(ValueError, match="module 'agents.baselines' has no attribute 'NoSuchAgent'"):
        make_agent("agents.baselines:NoSuchAgent")
    with pytest.raises(ValueError, match="cannot import"):
        make_agent("agents.no_such_module:RuleAgent")


def test_make_agent_passes_instances_through_and_registers():
    agent = RuleAgent()
    assert make_agent(agent) is agent

    @register_agent("always_bye")
    class ByeAgent(RuleAgent):
        name = "always_bye"

        def choose(self) -> int:
            return self.core.act_table.bye

    try:
        r = run_episode(gym.make(MODES["text"]), make_agent("always_bye"), seed=0)
        assert r.outcome == "bye" and r.turns == 1
    finally:
        AGENTS.pop("always_bye")


# -- degenerate policies -------------------------------------------------------------------------
DEGENERATE = {
    "act": ("always_recommend", "ask_same_slot", "bye", "greet", "rule_restate"),
    "text": ("always_recommend", "ask_same_slot", "bye", "greet", "rule_restate", "silent", "name_all", "ask_all"),
}


@pytest.fixture(scope="module")
def returns_by_agent():
    """Mean return and 95% CI of rule and each degenerate policy on the same 150 'test' dialogues."""
    out = {}
    for mode, names in DEGENERATE.items():
        for name in ("rule", *names):
            records = evaluate(lambda name=name: make_agent(name), split="test", episodes=150, seed=0, mode=mode)
            s = summarize(records)["return"]
            out[mode, name] = (s["mean"], s["ci95"])
    return out


@pytest.mark.parametrize("mode,name", [(m, n) for m, names in DEGENERATE.items() for n in names])
def test_degenerate_policies_score_below_rule(returns_by_agent, mode, name):
    rule_mean, rule_ci = returns_by_agent[mode, "rule"]
    mean, ci = returns_by_agent[mode, name]
    assert mean + ci < rule_mean - rule_ci, (
        f"{name} ({mode}): {mean:.2f}±{ci:.2f} vs rule {rule_mean:.2f}±{rule_ci:.2f}"
    )


def test_text_only_degenerate_agents_choose_the_text_env():
    for name in ("silent", "name_all", "ask_all"):
        records = evaluate(lambda name=name: make_agent(name), split="test", episodes=3, mode="act")
        assert all(r.messages[1]["role"] == "assistant" for r in records)
    with pytest.raises(TypeError, match="text environment"):
        make_agent("silent").reset(gym.make(MODES["act"]))


def test_restating_earns_nothing_over_rule():
    """rule_restate plays rule's very dialogues in text mode; the restated facts only cost."""
    rule = evaluate(lambda: make_agent("rule"), split="test", episodes=40, mode="text")
    restate = evaluate(lambda: make_agent("rule_restate"), split="test", episodes=40, mode="text")
    assert [r.success for r in rule] == [r.success for r in restate]
    assert all(b.return_ <= a.return_ for a, b in zip(rule, restate, strict=True))
    assert sum(b.reward_terms["persona_consistency"] for b in restate) == 0
