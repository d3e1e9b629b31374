"""The learned tracker (``tracker="learned"``): paraphrases the rule NLU misses, the same dialogues as the rule
tracker on template text, refusals, pickling, the cache, and examples from collected dialogues."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from dialog_env import acts as A
from dialog_env.envs.persona_rec import PersonaRecEnv
from dialog_env.learned_tracker import (
    LearnedNLU,
    SlotValueReader,
    TrackerExample,
    choose_thresholds,
    examples_from_data,
    load_paraphrases,
    load_reader,
    paraphrase_report,
    template_examples,
)
from dialog_env.nlu import Lexicon, UserNLU
from dialog_env.world import load_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DIALOG_ENV_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield load_reader()
    mp.undo()


def test_paraphrases_are_unknown_to_the_rule_nlu_and_read_by_the_learned_one(reader):
    world = load_world()
    rule = UserNLU(Lexicon(world))
    para = load_paraphrases(world)
    assert len(para) == 2 * len(world.values)
    for e in para:  # the held-out set is a test of words the lexicon does not list
        assert not [a for a in rule.parse(e.sentence, e.asked, None, None) if a.intent == A.INFORM], e.sentence
    report = paraphrase_report(reader, world)
    assert report["rule_paraphrase_recall"] == 0.0
    assert report["paraphrase_recall"] >= 0.5, report["paraphrase_misses"]  # measured 0.683
    assert report["paraphrase_exact"] >= 0.5
    nlu = LearnedNLU(Lexicon(world), reader)
    assert act_set(nlu.parse("I gave up meat years ago.", ("diet",))) == {(A.INFORM, "diet", "vegetarian")}


def act_set(acts):
    return {(a.intent, a.slot, a.value) for a in acts}


def test_template_sentences_are_read_exactly(reader):
    examples = template_examples(load_world())
    wrong = [e for e in examples if set(reader.read(e.sentence, e.asked)) != set(e.values)]
    assert len(wrong) <= 0.01 * len(examples), wrong[:10]


def test_a_refusal_states_nothing_and_other_acts_keep_the_rule_reading(reader):
    world = load_world()
    nlu = LearnedNLU(Lexicon(world), reader)
    for slot in world.slots:
        got = act_set(nlu.parse(f"I'd prefer not to talk about my {slot.noun}.", (slot.name,)))
        assert got == {(A.DECLINE, slot.name, None)}, got
    got = act_set(nlu.parse("No, actually I'm vegan.", (), ("diet", "vegetarian")))
    assert got == {(A.NEGATE, "diet", "vegetarian"), (A.INFORM, "diet", "vegan")}
    assert act_set(nlu.parse("Exactly.", (), ("pet", "cat"))) == {(A.AFFIRM, "pet", "cat")}
    assert act_set(nlu.parse("Hello there!", ())) == {(A.CHITCHAT, None, None)}


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_template_dialogues_match_the_rule_tracker(reader, noise):
    """On template text (every noise level renders with templates) both trackers play the same dialogues."""
    from agents.base import make_agent

    def play(tracker):
        env = PersonaRecEnv(split="test", noise=noise, tracker=tracker)
        out = []
        for seed in range(12):
            agent = make_agent("planner")
            obs, info = env.reset(seed=seed)
            agent.reset(env, seed=seed)
            while True:
                obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
                out.append((reward, env.unwrapped.tracker.known()))
                if terminated or truncated:
                    break
        return out

    assert play("learned") == play("rule")


def test_the_env_pickles_without_the_model_and_reloads_it(reader):
    env = PersonaRecEnv(split="test", tracker="learned")
    env.reset(seed=1)
    copy = pickle.loads(pickle.dumps(env))
    assert copy.unwrapped.tracker.nlu._reader is None  # dropped from the pickle, reloaded from the cache
    a, b = env.step(0), copy.step(0)
    assert a[1] == b[1] and env.unwrapped.tracker.known() == copy.unwrapped.tracker.known()
    assert copy.unwrapped.tracker.nlu.reader is reader


def test_examples_from_collected_dialogues(tmp_path):
    row = {
        "messages": [
            {"role": "system", "content": "You recommend one item."},
            {"role": "user", "content": "Hi! Can you help me find a gift idea?\n[48 fit]"},
            {"role": "assistant", "content": "Do you have any pets?"},
            {"role": "user", "content": "Oh, I have a cat. Also, I'm vegan.\n[heard: a cat, vegan]"},
        ]
    }
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    examples = examples_from_data([tmp_path])
    by_sentence = {e.sentence: e for e in examples}
    assert by_sentence["Oh, I have a cat."].values == {("pet", "cat")}
    assert by_sentence["Oh, I have a cat."].asked == ("pet",)
    assert by_sentence["Also, I'm vegan."].values == {("diet", "vegan")}
    assert not any("[" in e.sentence for e in examples)  # the state notes are not the user's words


class WrongOnDiet:
    """A reader that misreads the diet and reads a pet no lexicon word names."""

    def read(self, text, asked):
        return [("diet", "vegetarian"), ("pet", "cat")]


def test_the_lexicon_keeps_its_slots_and_the_reader_fills_the_rest():
    lexicon = Lexicon(load_world())
    first = LearnedNLU(lexicon, WrongOnDiet())
    assert set(first.facts("I'm vegan.", ("diet",))) == {("diet", "vegan"), ("pet", "cat")}
    assert act_set(first.parse("I'm vegan.", ("diet",))) == {(A.INFORM, "diet", "vegan"), (A.INFORM, "pet", "cat")}
    alone = LearnedNLU(lexicon, WrongOnDiet(), rules_first=False)
    assert set(alone.facts("I'm vegan.", ("diet",))) == {("diet", "vegetarian"), ("pet", "cat")}
    declined = first.facts("I'd prefer not to talk about my diet.", ("diet",))
    assert declined == [("pet", "cat")]  # a declined slot states nothing, whoever reads it


def test_the_validation_paraphrases_are_apart_from_the_test_ones():
    world = load_world()
    rule = UserNLU(Lexicon(world))
    dev, test = load_paraphrases(world, split="dev"), load_paraphrases(world)
    assert len(dev) == len(world.values)
    assert not {e.sentence for e in dev} & {e.sentence for e in test}
    for e in dev:  # like the test set: words the lexicon does not list
        assert not [a for a in rule.parse(e.sentence, e.asked, None, None) if a.intent == A.INFORM], e.sentence
    with pytest.raises(ValueError, match="split must be one of"):
        load_paraphrases(world, split="train")


def test_a_slot_named_without_a_clear_value_informs_nothing(reader):
    world = load_world()
    p_slot = np.zeros(len(world.slots), dtype=np.float32)
    p_value = np.zeros(len(world.values), dtype=np.float32)
    music = world.slot["music"].index
    idx = reader.slot_values[music]
    p_slot[music] = 0.9
    p_value[idx] = 1.0 / len(idx)  # the slot is named, no value stands out ("I'm a musician.")
    p_value[idx[2]] += 0.01
    best = reader.values[int(idx[2])]
    assert reader.decide(p_slot, p_value, 0.5, 0.0) == ((best.slot, best.id),)
    assert reader.decide(p_slot, p_value, 0.5, 0.5) == ()
    assert reader.decide(p_slot, p_value, 0.95, 0.0) == ()
    for bad in ({"threshold": 1.0}, {"value_threshold": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SlotValueReader(world, reader.head, reader.embedder, **bad)


def test_thresholds_are_chosen_to_keep_up_with_the_rule_nlu(reader):
    world = load_world()
    dev = load_paraphrases(world, split="dev")
    lm = [  # verified LM-user turns: the lexicon reads the facts; the vague ones state none
        TrackerExample("Oh, I have a cat. I'm vegan.", ("pet",), frozenset({("pet", "cat"), ("diet", "vegan")})),
        TrackerExample("I'm a musician.", ("music",), frozenset()),
        TrackerExample("I've got a beverage.", ("drink",), frozenset()),
        TrackerExample("I have a work-life balance that's amazing.", ("occupation",), frozenset()),
    ]
    choice = choose_thresholds(reader, dev, lm)
    sweep = choice["sweep"]
    assert choice["rule_lm_exact"] == len(lm)
    assert choice["kept_up"]
    kept = [r for r in sweep if r["lm_exact"] >= choice["rule_lm_exact"]]
    pair = choice["threshold"], choice["value_threshold"]
    row = next(r for r in sweep if (r["threshold"], r["value_threshold"]) == pair)
    assert row in kept and row["paraphrases_exact"] == max(r["paraphrases_exact"] for r in kept)
    assert row["paraphrases_exact"] > 0  # it still reads paraphrases the lexicon misses
    # a slot threshold of 0 reads every slot of every sentence: no pair keeps up, the most LM turns right wins
    choice = choose_thresholds(reader, dev, lm, slot_grid=(0.0,), value_grid=(0.0, 0.5, 0.9))
    assert not choice["kept_up"]
    assert max(r["lm_exact"] for r in choice["sweep"]) == next(
        r["lm_exact"]
        for r in choice["sweep"]
        if (r["threshold"], r["value_threshold"]) == (choice["threshold"], choice["value_threshold"])
    )


def test_examples_from_a_part_of_the_dialogues_and_by_turn(tmp_path):
    rows = [
        [
            {"role": "assistant", "content": "Do you have any pets?"},
            {"role": "user", "content": "Oh, I have a cat. Also, I'm vegan.\n[heard: a cat, vegan]"},
        ],
        [
            {"role": "assistant", "content": "What do you like to drink?"},
            {"role": "user", "content": "I'd rather not share my love for wine with you."},
        ],
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    first = examples_from_data([tmp_path], dialogues=slice(0, 1))
    assert {e.sentence for e in first} == {"Oh, I have a cat.", "Also, I'm vegan."}
    turns = examples_from_data([tmp_path], turns=True)
    assert [e.values for e in turns] == [frozenset({("pet", "cat"), ("diet", "vegan")}), frozenset()]
    assert turns[1].asked == ("drink",)  # a refusal that names its value states nothing (the rule reading)
    assert examples_from_data([tmp_path], dialogues=slice(1, None))[0].values == {("drink", "wine")}  # by alias


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lm-dev-data", "a", "--lm-dev-dialogues", "5"], "give one source of validation dialogues, not both"),
        (["--choose-thresholds"], "--choose-thresholds needs validation dialogues: --lm-dev-data FOLDER"),
        (["--lm-dev-dialogues", "-1"], "--lm-dev-dialogues must be >= 0, got -1"),
    ],
)
def test_eval_tracker_script_refuses_unclear_validation_data(args, needle):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "scripts" / "eval_tracker.py"), "--episodes", "1", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 2 and needle in r.stderr, r.stderr[-1000:]
