"""Personas: seeded sampling, disjoint splits, JSONL files and their validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dialog_env.persona import (
    SPLITS,
    Persona,
    PersonaError,
    PersonaSampler,
    coerce_persona,
    load_personas,
    persona_split,
    save_personas,
)
from dialog_env.world import load_world

N_PER_SPLIT = 300


@pytest.fixture(scope="module")
def world():
    return load_world()


@pytest.fixture(scope="module")
def samples(world):
    """``N_PER_SPLIT`` personas of every split (seed 7)."""
    return {split: PersonaSampler(world, split).sample_many(N_PER_SPLIT, seed=7) for split in SPLITS}


def combo(p: Persona) -> tuple[str, ...]:
    return tuple(p.values.values())


def held_values(world, p: Persona) -> list[str]:
    return [s for s, v in p.values.items() if v in world.slot[s].held_out]


def a_persona(world, **overrides) -> Persona:
    values = {s.name: s.values[0].id for s in world.slots}
    traits = {"verbosity": "normal", "openness": "high", "patience": "medium"}
    for k, v in overrides.items():
        (traits if k in traits else values)[k] = v
    return Persona(values=values, traits=traits)


# -- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [*SPLITS, "all"])
def test_seeded_sampling_is_deterministic(world, split):
    a = PersonaSampler(world, split).sample_many(40, seed=123)
    b = PersonaSampler(world, split).sample_many(40, seed=123)
    assert a == b
    # The same sampler reused with the same seed restarts the sequence too.
    s = PersonaSampler(world, split)
    assert s.sample_many(40, seed=123) == a
    assert s.sample_many(40, seed=123) == a
    # A different seed gives a different sequence.
    assert PersonaSampler(world, split).sample_many(40, seed=124) != a


def test_sample_with_shared_generator_is_deterministic(world):
    s1, s2 = PersonaSampler(world, "train"), PersonaSampler(world, "train")
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    assert [s1.sample(r1) for _ in range(300)] == [s2.sample(r2) for _ in range(300)]


def test_personas_are_complete_and_valid(world, samples):
    for split, personas in samples.items():
        for p in personas:
            assert tuple(p.values) == world.slot_names, split
            assert tuple(p.traits) == ("verbosity", "openness", "patience")
            for s, v in p.values.items():
                assert v in world.slot[s].value_ids
            for t, level in p.traits.items():
                assert level in world.traits[t]


def test_sampling_varies(world, samples):
    train = samples["train"]
    assert len({combo(p) for p in train}) > 0.9 * len(train)
    for t in ("verbosity", "openness", "patience"):
        assert {p.traits[t] for p in train} == set(world.traits[t])
    for s in world.slots:
        seen = {p.values[s.name] for p in train}
        assert seen == set(s.value_ids) - s.held_out


def test_splits_are_disjoint_and_agree_with_split_of(world, samples):
    all_sampler = PersonaSampler(world, "all")
    owner: dict[tuple[str, ...], str] = {}
    for split, personas in samples.items():
        idx = np.stack([world.value_indices(p.values) for p in personas])
        assert all_sampler.split_of(idx) == [split] * len(personas)
        for p in personas:
            assert persona_split(world, p) == split
            assert owner.setdefault(combo(p), split) == split, f"{combo(p)} in {owner[combo(p)]} and {split}"
    assert {owner[c] for c in owner} == set(SPLITS)


@pytest.mark.parametrize(
    ("diet", "pet", "music", "split"),
    [
        ("vegetarian", "none", "jazz", "train"),
        ("vegetarian", "dog", "rock", "valid"),
        ("vegetarian", "cat", "rock", "test"),
        ("halal", "none", "jazz", "test_unseen"),
    ],
)
def test_split_of_is_pinned(world, diet, pet, music, split):
    # Splits must not move between versions or machines: a hash change would silently reshuffle
    # every split (other slots take their first value).
    p = a_persona(world, diet=diet, pet=pet, music=music)
    assert persona_split(world, p) == split
    assert PersonaSampler(world, "all").split_of(world.value_indices(p.values)) == [split]


def test_split_proportions(world):
    # Uniform combinations of seen values split 80/10/10 by the stable hash.
    rng = np.random.default_rng(0)
    seen = [np.array([v.index for v in s.values if v.id not in s.held_out]) for s in world.slots]
    idx = np.stack([rng.choice(c, size=20000) for c in seen], axis=1)
    splits = PersonaSampler(world, "all").split_of(idx)
    frac = {k: splits.count(k) / len(splits) for k in ("train", "valid", "test")}
    assert sum(frac.values()) == pytest.approx(1.0)
    assert 0.78 < frac["train"] < 0.82
    assert 0.085 < frac["valid"] < 0.115
    assert 0.085 < frac["test"] < 0.115


def test_held_out_values_only_in_test_unseen(world, samples):
    for p in samples["test_unseen"]:
        assert held_values(world, p), p.values
    for split in ("train", "valid", "test"):
        for p in samples[split]:
            assert not held_values(world, p), (split, p.values)


def test_every_sampled_persona_can_be_satisfied(world, samples):
    for personas in samples.values():
        for p in personas:
            assert world.acceptable_mask(world.value_indices(p.values)).any(), p.values


def test_sample_indexed_matches_world(world):
    sampler, rng = PersonaSampler(world, "test"), np.random.default_rng(3)
    for _ in range(100):
        persona, idx, ok = sampler.sample_indexed(rng)
        np.testing.assert_array_equal(idx, world.value_indices(persona.values))
        np.testing.assert_array_equal(ok, world.acceptable_mask(idx))


def test_invalid_split_raises(world):
    with pytest.raises(ValueError, match="split must be one of") as exc:
        PersonaSampler(world, "training")
    for split in SPLITS:
        assert split in str(exc.value)


# -- facts and dict form ------------------------------------------------------------------------


def test_facts_are_the_world_fact_sentences(world, samples):
    for p in samples["train"][:50] + samples["test_unseen"][:50]:
        facts = p.facts(world)
        assert len(facts) == len(world.slots)
        for (s, v), sentence in zip(p.values.items(), facts, strict=True):
            assert sentence.endswith(".") and not sentence.endswith("..")
            assert sentence == world.value(s, v).fact + "."


def test_facts_example(world):
    p = a_persona(world, diet="vegetarian", pet="cat")
    facts = p.facts(world)
    assert facts[world.slot["diet"].index] == "I'm vegetarian."
    assert facts[world.slot["pet"].index] == "I have a cat."


def test_key_is_stable_and_distinguishes(world):
    p = a_persona(world)
    assert p.key.startswith(f"{world.slot_names[0]}=")
    assert "verbosity=normal" in p.key
    assert a_persona(world).key == p.key
    assert a_persona(world, diet="vegan").key != p.key
    assert a_persona(world, patience="low").key != p.key


def test_dict_round_trip_and_coerce(world):
    p = a_persona(world, diet="vegan", openness="low")
    assert Persona.from_dict(p.to_dict(), world) == p
    assert coerce_persona(p, world) is p
    assert coerce_persona(p.to_dict(), world) == p
    # Key order in the input does not matter; the persona comes out in world order.
    d = p.to_dict()
    shuffled = {"traits": dict(reversed(d["traits"].items())), "values": dict(reversed(d["values"].items()))}
    q = Persona.from_dict(shuffled, world)
    assert q == p and tuple(q.values) == world.slot_names
    # A "split" field (as written by exports) is accepted and dropped.
    assert Persona.from_dict({**d, "split": "train"}, world) == p


# -- JSONL files --------------------------------------------------------------------------------


def test_jsonl_round_trip(world, samples, tmp_path):
    personas = samples["train"][:25] + samples["test_unseen"][:25]
    path = save_personas(tmp_path / "sub" / "personas.jsonl", personas)
    assert path.is_file()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    assert json.loads(lines[0]) == personas[0].to_dict()
    assert load_personas(path, world) == personas


def test_blank_lines_are_skipped(world, tmp_path):
    p = a_persona(world)
    path = tmp_path / "p.jsonl"
    path.write_text("\n" + json.dumps(p.to_dict()) + "\n\n   \n", encoding="utf-8")
    assert load_personas(path, world) == [p]


def _bad_rows(world):
    good = a_persona(world).to_dict()
    values, traits = good["values"], good["traits"]
    return [
        # (line, text of the bad line, fragments the message must hold)
        ("bad_json", '{"values": {"diet": ', ["not valid JSON"]),
        ("not_object", "[1, 2]", ["expected an object"]),
        ("unknown_field", json.dumps({**good, "age": 30}), ["unknown field", "age"]),
        ("values_not_object", json.dumps({**good, "values": "vegan"}), ["'values'", "expected an object"]),
        ("unknown_slot", json.dumps({**good, "values": {**values, "colour": "red"}}), ["'values'", "colour"]),
        (
            "missing_slot",
            json.dumps({**good, "values": {k: v for k, v in values.items() if k != "pet"}}),
            ["values.pet", "missing"],
        ),
        ("unknown_value", json.dumps({**good, "values": {**values, "diet": "keto"}}), ["values.diet", "keto"]),
        ("non_string_value", json.dumps({**good, "values": {**values, "diet": ["vegan"]}}), ["values.diet"]),
        (
            "missing_trait",
            json.dumps({**good, "traits": {k: v for k, v in traits.items() if k != "openness"}}),
            ["traits.openness"],
        ),
        (
            "wrong_trait_level",
            json.dumps({**good, "traits": {**traits, "patience": "extreme"}}),
            ["traits.patience", "extreme"],
        ),
        ("unknown_trait", json.dumps({**good, "traits": {**traits, "humour": "dry"}}), ["'traits'", "humour"]),
    ]


@pytest.mark.parametrize("case", range(11))
def test_malformed_jsonl_names_file_line_and_field(world, tmp_path, case):
    rows = _bad_rows(world)
    assert len(rows) == 11
    name, bad_line, fragments = rows[case]
    good_line = json.dumps(a_persona(world).to_dict())
    path = tmp_path / f"{name}.jsonl"
    # The bad row is on line 3 (after a good line and a blank one).
    path.write_text(f"{good_line}\n\n{bad_line}\n{good_line}\n", encoding="utf-8")
    with pytest.raises(PersonaError) as exc:
        load_personas(path, world)
    msg = str(exc.value)
    assert f"{path}:3:" in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_persona_file(world, tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PersonaError, match="no personas") as exc:
        load_personas(path, world)
    assert str(path) in str(exc.value)


def test_missing_persona_file(world, tmp_path):
    path = tmp_path / "missing.jsonl"
    with pytest.raises(PersonaError, match="cannot read") as exc:
        load_personas(path, world)
    assert str(path) in str(exc.value)


def test_load_accepts_str_path(world, tmp_path):
    p = a_persona(world)
    path = save_personas(str(tmp_path / "p.jsonl"), [p])
    assert isinstance(path, Path)
    assert load_personas(str(path), world) == [p]
