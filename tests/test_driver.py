"""The one batched dialogue loop: hooks, prefixes, cuts, and that every consumer plays through it."""

import gymnasium as gym
import pytest

import dialog_env  # noqa: F401 - registers the environments
from agents import make_agent
from dialog_env.driver import (
    AgentPolicy,
    DialogueDriver,
    PrefixEndedError,
    ScriptedPolicy,
    play_agent,
    same_user,
)
from dialog_env.evaluation import evaluate, record_to_json
from dialog_env.lm import GenerationConfig, load_lm
from tests.lm_fixtures import build_tiny_lm

TEXT = "dialog_env/PersonaRecText-v0"
ACT = "dialog_env/PersonaRec-v0"


class TurnCounter:
    """A stand-in learned reward: 1 per turn; remembers what it was called with and trained on."""

    name = "learned"

    def __init__(self):
        self.calls, self.updates = [], []

    def __call__(self, contexts):
        self.calls.append(len(contexts))
        return [1.0] * len(contexts)

    def update(self, records):
        self.updates.append(list(records))


def strip(records):
    return [record_to_json(r, with_messages=True) for r in records]


@pytest.mark.parametrize("env_id", [ACT, TEXT])
def test_the_driver_plays_what_evaluation_played(env_id):
    """One env at a time, the driver is the loop every agent row is measured with."""
    agent = make_agent("planner")
    a = play_agent([gym.make(env_id, split="test")], agent, range(6))
    b = evaluate(lambda: make_agent("planner"), split="test", episodes=6, mode="act" if env_id == ACT else "text")
    assert strip(a) == strip(b)
    assert all(r.turns >= 1 for r in a) and any(r.success for r in a)


def test_a_reward_model_is_scored_per_round_added_to_the_return_and_updated():
    envs = [gym.make(TEXT, split="train") for _ in range(3)]
    seeds = range(5)
    plain = DialogueDriver(envs).play(ScriptedPolicy([["Do you have any pets?"] * 3] * 5), seeds)
    model = TurnCounter()
    scored = DialogueDriver(envs, reward_model=model, reward_model_weight=0.5).play(
        ScriptedPolicy([["Do you have any pets?"] * 3] * 5), seeds
    )
    for p, s in zip(plain, scored, strict=True):
        assert s.reward_terms["learned"] == s.turns == p.turns
        assert s.return_ == pytest.approx(p.return_ + 0.5 * s.turns)
    assert max(model.calls) == 3 and sum(model.calls) == sum(r.turns for r in scored)  # batched per round
    assert [r.seed for r in model.updates[0]] == list(seeds)  # trained on the finished dialogues


def test_sessions_put_several_dialogues_with_one_user():
    env = gym.make(TEXT, split="train")
    personas = []
    for s in (10, 20):
        env.reset(seed=s)
        personas.append(env.unwrapped.persona)
    met = []
    driver = DialogueDriver([env], sessions=same_user(3, lambda i: personas[i]))
    driver.play(
        ScriptedPolicy([["What do you do for a living?"]] * 6),
        range(6),
        on_end=lambda core, record: met.append(core.persona),
    )
    assert met == [personas[0]] * 3 + [personas[1]] * 3
    with pytest.raises(ValueError, match="dialogues"):
        same_user(0, lambda i: personas[0])


def test_a_prefix_is_replayed_uncounted_and_one_that_ends_the_dialogue_is_refused():
    env = gym.make(TEXT, split="train", max_turns=3)
    ask = "Do you have any pets?"
    whole = DialogueDriver([env]).play(ScriptedPolicy([[ask, ask, ask]]), [7])[0]
    steps = []
    branched = DialogueDriver([env]).play(ScriptedPolicy([[ask]]), [7], prefixes=[[ask, ask]], on_step=steps.append)[0]
    assert branched.turns == 1 and len(steps) == 1 and steps[0].context.turn == 2
    assert branched.messages == whole.messages  # the same dialogue, only its last turn counted
    with pytest.raises(PrefixEndedError, match="no turn left"):
        DialogueDriver([env]).play(ScriptedPolicy([[ask]]), [7], prefixes=[[ask, ask, ask]])


def test_a_policy_can_cut_a_dialogue():
    class OneTurn(AgentPolicy):
        def observe(self, slot, step):
            super().observe(slot, step)
            return False

    records = DialogueDriver([gym.make(ACT, split="test")]).play(OneTurn(make_agent("rule")), range(3))
    assert [r.turns for r in records] == [1, 1, 1] and {r.outcome for r in records} == {"truncated"}


def test_an_agent_without_act_batch_plays_on_one_env():
    with pytest.raises(ValueError, match="one env"):
        play_agent([gym.make(ACT), gym.make(ACT)], make_agent("rule"), range(2))


def test_evaluation_collection_rollouts_and_reward_replay_all_play_through_the_driver(monkeypatch, tmp_path):
    """The loop is written once: each consumer's dialogues go through DialogueDriver.play."""
    from agents.collect import CollectConfig, collect
    from agents.lm_grpo import DialogueRollout
    from rewards import to_trl

    calls = []
    play = DialogueDriver.play

    def counted(self, policy, seeds, **kwargs):
        calls.append(type(policy).__name__)
        return play(self, policy, seeds, **kwargs)

    monkeypatch.setattr(DialogueDriver, "play", counted)
    evaluate(lambda: make_agent("rule"), episodes=2)
    collect(CollectConfig(agent="rule", episodes=2), tmp_path / "demo", progress=False)
    state = {"seed": 3, "agent_turns": ["Do you have any pets?"], "env_kwargs": {"split": "train"}}
    assert to_trl("persona_consistency")(completions=["What do you do?"], dialog_state=[state]) == [0.0]
    assert calls[0] == "AgentPolicy" and calls[-1] == "ScriptedPolicy" and set(calls[1:-1]) == {"AgentPolicy"}
    model, tok = load_lm(str(build_tiny_lm(tmp_path / "tiny")))
    out = DialogueRollout(max_turns=2, max_new_tokens=4).rollout(model, tok, [0, 1], GenerationConfig(max_new_tokens=4))
    assert calls[-1] == "_TokenPolicy" and len(out["completion_ids"]) == 2


def test_the_readme_driver_example_runs():
    from tests.test_rewards import ROOT, fenced_blocks

    blocks = [code for lang, code in fenced_blocks((ROOT / "README.md").read_text()) if "DialogueDriver" in code]
    assert len(blocks) == 1
    namespace: dict = {"__name__": "readme_driver"}
    exec(compile(blocks[0], "README.md[driver example]", "exec"), namespace)  # noqa: S102
    records = namespace["records"]
    assert len(records) == 3 and all(r.reward_terms["brevity"] < 0 for r in records)


def test_agents_without_act_batch_can_play_several_dialogues_in_flight():
    """One agent per slot: the same records as one dialogue at a time (for the agenda user)."""
    one = evaluate(lambda: make_agent("planner"), split="test", episodes=7, mode="text")
    four = evaluate(lambda: make_agent("planner"), split="test", episodes=7, mode="text", in_flight=4)
    assert strip(one) == strip(four)
    with pytest.raises(ValueError, match="in_flight"):
        evaluate(lambda: make_agent("planner"), episodes=2, in_flight=0)
    with pytest.raises(ValueError, match="one per env"):
        play_agent([gym.make(ACT)] * 2, [make_agent("rule")], range(2))
