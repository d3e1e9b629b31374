"""The dialogue-state tracker: unit behaviour and joint-goal accuracy in simulated dialogues."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401  (registers the environments)
from agents.baselines import RuleAgent
from dialog_env import acts as A
from dialog_env.acts import DialogueAct as Act
from dialog_env.nlu import Lexicon
from dialog_env.tracker import TRACKER_MODES, DialogueStateTracker, joint_goal_correct
from dialog_env.world import load_world

N_DIALOGUES = 120
ENV_ID = "dialog_env/PersonaRec-v0"


@pytest.fixture(scope="module")
def world():
    return load_world()


@pytest.fixture
def tracker(world):
    return DialogueStateTracker(world, "rule")


def slot_belief(world, tracker, slot):
    s = world.slot[slot]
    return tracker.belief[s.offset : s.offset + len(s.values)]


# -- unit behaviour -----------------------------------------------------------------------------


def test_invalid_mode_names_the_allowed_modes(world):
    with pytest.raises(ValueError, match="tracker mode must be one of") as exc:
        DialogueStateTracker(world, "neural")
    for mode in TRACKER_MODES:
        assert repr(mode) in str(exc.value)
    assert "'neural'" in str(exc.value)


def test_env_rejects_an_invalid_tracker_mode():
    with pytest.raises(ValueError, match="rule"):
        gym.make(ENV_ID, tracker="perfect")


def test_starts_uniform_and_empty(world, tracker):
    assert tracker.known() == {}
    assert tracker.goal is None
    for s in world.slots:
        np.testing.assert_allclose(slot_belief(world, tracker, s.name), 1.0 / len(s.values), rtol=1e-6)
    assert tracker.entropy == pytest.approx(sum(np.log2(len(s.values)) for s in world.slots))
    assert not tracker.slot_flags.any() and not tracker.item_flags.any()


def test_inform_updates_belief_and_known(world, tracker):
    h0 = tracker.entropy
    tracker.update_user("Hi! Can you help me find a gift idea?")
    assert tracker.goal == "gift"
    tracker.update_agent((Act(A.ASK, "diet"),))
    assert tracker.asked[world.slot["diet"].index]
    acts = tracker.update_user("Well, I'm vegan.")
    assert acts == (Act(A.INFORM, "diet", "vegan"),)
    assert tracker.known() == {"diet": "vegan"}
    assert tracker.best("diet") == "vegan" and tracker.best("pet") is None
    b = slot_belief(world, tracker, "diet")
    assert b.sum() == pytest.approx(1.0, abs=1e-6)
    assert b.argmax() == world.slot["diet"].by_id["vegan"].index - world.slot["diet"].offset
    assert b.max() > 0.85
    assert tracker.entropy < h0
    assert tracker.informed[world.slot["diet"].index]
    view = tracker.view()
    assert view.known == {"diet": "vegan"} and view.asked == {"diet"}
    tracker.reset()
    assert tracker.known() == {} and tracker.entropy == pytest.approx(h0)


def test_affirm_negate_and_conflicts(world, tracker):
    tracker.update_user("I love camping.")
    assert tracker.known() == {"travel": "camping"}
    tracker.update_agent((Act(A.CONFIRM, "travel", "camping"),))
    acts = tracker.update_user("Exactly.")
    assert acts == (Act(A.AFFIRM, "travel", "camping"),)
    assert tracker.view().confirmed == {"travel"}
    # A correction: the negated value loses its evidence, the new one wins.
    tracker.update_user("I have a dog.")
    tracker.update_agent((Act(A.CONFIRM, "pet", "dog"),))
    acts = tracker.update_user("No, actually I have a cat.")
    assert acts == (Act(A.NEGATE, "pet", "dog"), Act(A.INFORM, "pet", "cat"))
    assert tracker.known()["pet"] == "cat"
    assert tracker.conflicts == 0  # the negation cleared the old belief first
    # An inform that contradicts the belief counts as a conflict.
    tracker.update_user("I have a bird.")
    assert tracker.conflicts == 1
    assert tracker.known()["pet"] in ("cat", "bird")
    # A negation with no replacement forgets the slot.
    tracker.update_agent((Act(A.CONFIRM, "travel", "camping"),))
    tracker.update_user("Nope.")
    assert "travel" not in tracker.known()
    assert not tracker.informed[world.slot["travel"].index]


def test_decline_and_reject_flags(world, tracker):
    tracker.update_agent((Act(A.ASK, "occupation"),))
    assert tracker.update_user("I'd rather not say.") == (Act(A.DECLINE, "occupation"),)
    assert tracker.view().declined == {"occupation"}
    assert tracker.declined[world.slot["occupation"].index]
    tracker.update_agent((Act(A.RECOMMEND, None, "prime_cut_steakhouse"),))
    assert tracker.recommended[world.item["prime_cut_steakhouse"].index]
    tracker.update_user("Not Prime Cut Steakhouse, sorry. I'm vegetarian.")
    assert tracker.view().rejected == {"prime_cut_steakhouse"}
    assert tracker.rejected[world.item["prime_cut_steakhouse"].index]
    assert tracker.known() == {"diet": "vegetarian"}


def test_oracle_reads_true_acts_not_text(world):
    t = DialogueStateTracker(world, "oracle", Lexicon(world))
    t.update_user("I'm vegan.", (Act(A.INFORM, "diet", "vegetarian"),))
    assert t.known() == {"diet": "vegetarian"}


def test_joint_goal_correct():
    assert joint_goal_correct({}, {})
    assert joint_goal_correct({"diet": "vegan"}, {"diet": "vegan"})
    assert not joint_goal_correct({"diet": "vegan"}, {"diet": "vegetarian"})
    assert not joint_goal_correct({"diet": "vegan"}, {})
    assert not joint_goal_correct({}, {"pet": "cat"})


# -- simulated dialogues ------------------------------------------------------------------------


@dataclass
class Stats:
    turns: int = 0
    jga_hits: int = 0
    dialogues: int = 0
    declines: int = 0
    rejections: int = 0
    affirms: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)

    @property
    def jga(self) -> float:
        return self.jga_hits / self.turns


def run_dialogues(noise: float, mode: str, n: int = N_DIALOGUES, split: str = "train") -> Stats:
    """Dialogues of a mixed policy, comparing the tracker with the user's ground truth after every turn.

    The policy asks a random number of slots (the rule agent's order), then recommends the best
    fit for what the tracker knows; now and then it confirms a known slot, re-asks one (a repeat)
    or recommends a random item (wrong categories, re-recommendations).
    """
    env = gym.make(ENV_ID, noise=noise, tracker=mode, split=split)
    core = env.unwrapped
    table = core.act_table
    agent = RuleAgent()
    stats = Stats()

    def check(where: str) -> None:
        t, user = core.tracker, core.user
        stats.turns += 1
        ok = t.known() == user.revealed
        stats.jga_hits += ok
        if noise == 0 and not ok:
            stats.mismatches.append(f"{where}: known={t.known()} revealed={user.revealed}")
        if noise == 0:
            view = t.view()
            if view.declined != user.declined or view.rejected != user.rejected or t.goal != user.goal:
                stats.mismatches.append(
                    f"{where}: declined {view.declined} vs {user.declined}, rejected {view.rejected} vs "
                    f"{user.rejected}, goal {t.goal} vs {user.goal}"
                )

    for ep in range(n):
        obs, info = env.reset(seed=ep)
        agent.reset(env, seed=ep)
        rng = np.random.default_rng(ep)
        n_asks = int(rng.integers(0, len(core.world.slots) + 1))
        check(f"dialogue {ep} opening")
        stats.dialogues += 1
        done = False
        while not done:
            t = core.tracker
            known = t.known()
            r = rng.random()
            if known and r < 0.12:
                action = table.confirm(str(rng.choice(sorted(known))))
            elif known and r < 0.18:
                action = table.ask(str(rng.choice(sorted(known))))  # a repeat
            elif r > 0.94:
                action = table.recommend_start + int(rng.integers(table.n_items))
            elif int(t.asked.sum()) < n_asks:
                action = agent.act(obs, info)
            else:
                item = agent.best_item(known)
                action = table.recommend(item) if item else table.bye
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            check(f"dialogue {ep} turn {info['turn']}")
            true_acts = core.last_context.user_acts
            stats.declines += sum(a.intent == A.DECLINE for a in true_acts)
            stats.rejections += sum(a.intent == A.REJECT for a in true_acts)
            stats.affirms += sum(a.intent == A.AFFIRM for a in true_acts)
            if done:
                key = info["outcome"] or "truncated"
                stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
    env.close()
    return stats


@pytest.fixture(scope="module")
def clean_rule():
    return run_dialogues(noise=0.0, mode="rule")


def test_rule_tracker_is_exact_without_noise(clean_rule):
    stats = clean_rule
    assert stats.dialogues >= 100
    assert not stats.mismatches, "\n".join(stats.mismatches[:10])
    assert stats.jga == 1.0
    # The dialogues exercised what the tracker has to read.
    assert stats.declines > 20 and stats.rejections > 50 and stats.affirms > 20
    assert stats.outcomes.get("accepted", 0) > 20 and stats.outcomes.get("left", 0) > 0
    assert stats.turns > 4 * stats.dialogues


def test_rule_tracker_is_exact_on_unseen_values():
    stats = run_dialogues(noise=0.0, mode="rule", n=40, split="test_unseen")
    assert not stats.mismatches, "\n".join(stats.mismatches[:10])
    assert stats.jga == 1.0


def test_oracle_tracker_matches_without_noise():
    stats = run_dialogues(noise=0.0, mode="oracle", n=100)
    assert not stats.mismatches, "\n".join(stats.mismatches[:10])
    assert stats.jga == 1.0


def test_noise_lowers_rule_tracker_accuracy(clean_rule):
    noisy = run_dialogues(noise=0.3, mode="rule", n=100)
    assert noisy.jga < 0.9 * clean_rule.jga
    assert noisy.jga > 0.0


def test_oracle_tracker_ignores_channel_noise():
    # The oracle reads the user's true acts: perfect understanding, whatever the channel did.
    stats = run_dialogues(noise=0.3, mode="oracle", n=30)
    assert stats.jga == 1.0


def test_tracker_flags_follow_the_user_in_an_episode(world):
    env = gym.make(ENV_ID)
    core = env.unwrapped
    persona = {
        "values": {s.name: s.values[0].id for s in world.slots} | {"diet": "vegan"},
        "traits": {"verbosity": "normal", "openness": "high", "patience": "high"},
    }
    env.reset(seed=0, options={"persona": persona, "goal": "place"})
    assert core.tracker.goal == "place"
    _, _, _, _, info = env.step(core.act_table.recommend("prime_cut_steakhouse"))
    assert core.tracker.view().rejected == {"prime_cut_steakhouse"}
    assert core.tracker.known() == {"diet": "vegan"}
    assert not info["action_mask"][core.act_table.recommend("prime_cut_steakhouse")]
    # Asking the now-known slot is masked; confirming it is allowed once.
    assert not info["action_mask"][core.act_table.ask("diet")]
    assert info["action_mask"][core.act_table.confirm("diet")]
    _, _, _, _, info = env.step(core.act_table.confirm("diet"))
    assert core.tracker.view().confirmed == {"diet"}
    assert not info["action_mask"][core.act_table.confirm("diet")]
    env.close()


def test_rule_tracker_is_exact_in_text_mode():
    # In text mode the agent's utterance is parsed too (AgentNLU), so both parsers are in the loop.
    env = gym.make("dialog_env/PersonaRecText-v0")
    core, agent = env.unwrapped, RuleAgent()
    turns, bad = 0, []
    for ep in range(40):
        obs, info = env.reset(seed=ep)
        agent.reset(env, seed=ep)
        done = False
        while not done:
            utterance = agent.act(obs, info)
            assert isinstance(utterance, str)
            obs, _, terminated, truncated, info = env.step(utterance)
            done = terminated or truncated
            turns += 1
            if core.tracker.known() != core.judge.revealed:
                bad.append(f"{utterance!r} -> {info['user_text']!r}: {core.tracker.known()} vs {core.judge.revealed}")
    env.close()
    assert turns > 200
    assert not bad, "\n".join(bad[:10])


def test_rule_tracker_is_exact_when_two_questions_share_a_turn():
    """The planner asks two slots per utterance; refusals naming no slot must land on the right one."""
    from agents import PlannerAgent

    env = gym.make("dialog_env/PersonaRecText-v0", split="train")
    core = env.unwrapped
    agent = PlannerAgent()
    declines = 0
    for seed in range(150):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            done = terminated or truncated
            view = core.tracker.view()
            assert view.known == core.judge.revealed, f"seed {seed}: {view.known} vs {core.judge.revealed}"
            assert view.declined == core.user.declined, f"seed {seed}: {view.declined} vs {core.user.declined}"
            declines += sum(a.intent == A.DECLINE for a in core.last_context.user_acts)
    assert declines > 50
