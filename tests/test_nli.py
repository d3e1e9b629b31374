"""The NLI contradiction detector on the shipped MiniLM: held-out accuracy, paraphrased contradictions the rule NLU
misses, the reward term, and the cache."""

from __future__ import annotations

import pickle

import pytest

from dialog_env.envs.persona_rec_text import PersonaRecTextEnv
from dialog_env.nli import CONTRADICT, NLIConsistency, nli_pairs, split_sentences, train_detector
from dialog_env.world import load_world
from rewards.builtin import consistency_counts
from tests.fixtures import PERSONA

pytestmark = pytest.mark.slow

TOLD = {"diet": "vegan", "pet": "cat", "music": "jazz", "occupation": "nurse", "drink": "coffee"}
# Contradictions of TOLD that the rule NLU reads as agreeing references (or not at all).
MISSED_BY_RULES = [
    "So you're not vegan.",
    "Since you don't have a cat, here is an idea.",
    "You told me you don't love jazz.",
    "You're not really into jazz, are you?",
]
CONSISTENT = ["So you're vegan.", "Do you have a cat?", "I understand that you're a big jazz fan.", "Hello there!"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DIALOG_ENV_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def test_pairs_are_held_out_by_value():
    train, test, held = nli_pairs(load_world(), seed=0)
    assert held and len(test) > 1000 and len(train) > 3000
    world = load_world()
    held_premises = {
        f"{v.fact}." for v in world.values if f"{v.slot}={v.id}" in held
    }  # a held-out value's statement never trains
    assert not held_premises & {p.premise for p in train}
    assert {p.label for p in test} == {0, 1, 2}


def test_held_out_accuracy_reaches_the_dialogue_nli_reference():
    detector, report = train_detector(seed=0)
    assert report["test_accuracy"] >= 0.884, report  # PAML's Dialogue-NLI accuracy, on values never trained on
    assert min(report["test_accuracy_by_label"].values()) > 0.75
    assert detector.predict(["I'm vegan."], ["So you're not vegan."])[0] == CONTRADICT


def test_paraphrased_contradictions_the_rule_nlu_misses_are_caught(cache):
    env = PersonaRecTextEnv(split="test", reward_weights={"nli_consistency": 1.0, "persona_consistency": 1.0})
    for line in MISSED_BY_RULES + CONSISTENT:
        env.reset(seed=3, options={"persona": PERSONA, "goal": "place", "earlier": TOLD})
        info = env.step(line)[4]
        assert consistency_counts(env.last_context)[1] == 0, line  # the structured check sees nothing wrong
        if line in MISSED_BY_RULES:
            assert info["reward_terms"]["nli_consistency"] == -2.0, line
        else:
            assert info["reward_terms"]["nli_consistency"] == 0.0, line


def test_term_is_batched_picklable_and_reads_its_cache(cache):
    term = NLIConsistency(penalty=1.0)
    env = PersonaRecTextEnv(split="test")
    contexts = []
    for line in ["So you're not vegan. You don't have a cat.", "So you're vegan."]:
        env.reset(seed=3, options={"persona": PERSONA, "goal": "place", "earlier": TOLD})
        env.step(line)
        contexts.append(env.last_context)
    assert term(contexts) == [-2.0, 0.0]  # two contradicting sentences, penalty 1 each
    again = pickle.loads(pickle.dumps(term))
    assert again._detector is None and again(contexts) == [-2.0, 0.0]
    assert split_sentences("Hi. So you're vegan? Great!") == ["Hi.", "So you're vegan?", "Great!"]


def test_eval_nli_script(tmp_path, cache):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "scripts" / "eval_nli.py"), "--agents", "rule", "--episodes", "2", "--seeds",
           "0", "--cost-episodes", "1", "--repeats", "1", "--out", str(tmp_path)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "nli_eval.json").read_text())
    assert result["accuracy"]["0"]["test_accuracy"] >= 0.884 and result["agreement"]["rule"]["turns"] > 0
    assert "ratio median" in r.stdout


def _record(said, revealed):
    from dialog_env.driver import EpisodeRecord

    messages = [{"role": "user", "content": "Hi! Can you help me find a gift idea?"}]
    for s in said:
        messages += [{"role": "assistant", "content": s}, {"role": "user", "content": "OK."}]
    return EpisodeRecord(seed=0, success=False, contradiction_rate=0.0, consistency=0.0, slots_discovered=0,
                         turns=len(said), return_=0.0, jga=1.0, outcome="bye", messages=messages,
                         revealed_before=revealed)  # fmt: skip


def test_paml_c_scores_entailment_up_and_contradiction_down(cache):
    import math

    from agents.base import make_agent
    from dialog_env.evaluation import evaluate, record_to_json
    from dialog_env.quality import nli_c, quality

    assert nli_c([_record(["So you're vegan."], [["diet=vegan"]])]) == 1.0
    assert nli_c([_record(["So you're not vegan."], [["diet=vegan"]])]) == -1.0
    assert nli_c([_record(["Hello there!", "So you're not vegan."], [["diet=vegan"], ["diet=vegan"]])]) == -0.5
    assert math.isnan(nli_c([_record(["Do you have a pet?"], [[]])]))  # nothing revealed yet: not scored
    records = evaluate(lambda: make_agent("planner"), split="test", episodes=4, mode="text")
    assert all(len(r.revealed_before) == r.turns for r in records)
    assert "revealed_before" not in record_to_json(records[0], with_messages=True)  # the user's facts stay in memory
    c = quality(records, nli=True)["nli_c"]
    assert -0.5 < c < 1.0  # the planner asks and recommends: mostly neutral sentences
