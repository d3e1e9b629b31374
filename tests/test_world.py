"""The world file: the shipped ontology, alias resolution and field-by-field validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dialog_env.nlu import Lexicon, normalize
from dialog_env.world import DEFAULT_WORLD_PATH, TRAIT_NAMES, WorldError, load_world, parse_world


@pytest.fixture(scope="module")
def world():
    return load_world()


@pytest.fixture(scope="module")
def lexicon(world):
    return Lexicon(world)


def tiny_world_data() -> dict[str, Any]:
    """A minimal valid world: 2 slots (3 and 2 values), 2 categories, 2 items."""
    return {
        "name": "tiny",
        "version": 1,
        "traits": {
            "verbosity": ["terse", "normal", "chatty"],
            "openness": ["low", "medium", "high"],
            "patience": ["low", "medium", "high"],
        },
        "categories": {
            "gift": {"noun": "a gift idea", "aliases": ["gift", "present"]},
            "place": {"noun": "a place to eat", "aliases": ["restaurant"]},
        },
        "slots": {
            "diet": {
                "noun": "diet",
                "keywords": ["diet", "eat"],
                "questions": ["What do you eat?"],
                "held_out": ["halal"],
                "values": {
                    "vegan": {"fact": "I'm vegan", "short": "vegan", "you": "you're vegan", "aliases": ["vegan"]},
                    "omnivore": {
                        "fact": "I eat everything",
                        "short": "anything",
                        "you": "you eat everything",
                        "aliases": ["omnivore", "eat everything"],
                    },
                    "halal": {"fact": "I eat halal", "short": "halal", "you": "you eat halal", "aliases": ["halal"]},
                },
            },
            "pet": {
                "noun": "pets",
                "keywords": ["pet", "pets"],
                "questions": ["Do you have pets?"],
                "values": {
                    "none": {
                        "fact": "I have no pets",
                        "short": "no pets",
                        "you": "you have no pets",
                        "aliases": ["no pets"],
                    },
                    "cat": {"fact": "I have a cat", "short": "a cat", "you": "you have a cat", "aliases": ["a cat"]},
                },
            },
        },
        "items": [
            {
                "id": "cat_tree",
                "name": "Cat Tree",
                "category": "gift",
                "aliases": ["cat tree"],
                "requires": {"pet": ["cat"]},
                "appeals": {"pet": ["cat"]},
            },
            {
                "id": "steakhouse",
                "name": "Steakhouse",
                "category": "place",
                "aliases": ["steakhouse"],
                "excludes": {"diet": ["vegan"]},
                "appeals": {"diet": ["omnivore", "halal"]},
            },
        ],
    }


def write_world(tmp_path: Path, data: Any, suffix: str = ".yaml") -> Path:
    path = tmp_path / f"world{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# -- the shipped world --------------------------------------------------------------------------


def test_default_world_is_the_shipped_file(world):
    assert load_world(DEFAULT_WORLD_PATH) is world
    assert Path(world.source).resolve() == DEFAULT_WORLD_PATH.resolve()


def test_shipped_world_shape(world):
    assert len(world.slots) >= 8
    for slot in world.slots:
        assert len(slot.values) >= 4, slot.name
        assert slot.questions and slot.keywords
        assert slot.held_out <= set(slot.value_ids)
        assert len(slot.values) - len(slot.held_out) >= 2
    assert tuple(world.traits) == TRAIT_NAMES == ("verbosity", "openness", "patience")
    for levels in world.traits.values():
        assert len(levels) >= 2 and len(set(levels)) == len(levels)
    assert len(world.categories) == 3
    assert len(world.items) >= 40
    for item in world.items:
        assert item.appeals, item.id
        assert all(vals for vals in item.appeals.values()), item.id
        assert item.category in world.category
    # Every category holds some items.
    assert set(world.item_category.tolist()) == set(range(len(world.categories)))


def test_value_table_indices_are_consistent(world):
    assert world.n_values == sum(len(s.values) for s in world.slots)
    for k, v in enumerate(world.values):
        assert v.index == k
        slot = world.slot[v.slot]
        assert slot.values[k - slot.offset] is v
        assert world.value(v.slot, v.id) is v
        for text in (v.fact, v.short, v.you):
            assert text and not text.endswith(".")
    with pytest.raises(KeyError, match="unknown slot"):
        world.value("colour", "red")
    with pytest.raises(KeyError, match="unknown value"):
        world.value("diet", "carnivore")


def test_constraint_matrices_match_item_records(world):
    assert world.violation.shape == world.appeal.shape == (len(world.items), world.n_values)
    for item in world.items:
        for v in world.values:
            assignment = {v.slot: v.id}
            assert world.violation[item.index, v.index] == bool(item.violated_slots(assignment))
            assert world.appeal[item.index, v.index] == bool(item.appealing_slots(assignment))


def test_acceptable_mask_agrees_with_item_rules(world):
    rng = np.random.default_rng(0)
    for _ in range(100):
        values = {s.name: s.values[int(rng.integers(len(s.values)))].id for s in world.slots}
        idx = world.value_indices(values)
        mask = world.acceptable_mask(idx)
        assert mask.dtype == bool and mask.shape == (len(world.items),)
        fits_and_appeals = [not it.violated_slots(values) and bool(it.appealing_slots(values)) for it in world.items]
        # Only fitting, appealing items are acceptable ...
        assert not (mask & ~np.array(fits_and_appeals)).any()
        for cat in world.categories:
            in_cat = world.acceptable_mask(idx, cat.id)
            assert in_cat.tolist() == [m and it.category == cat.id for m, it in zip(mask, world.items, strict=True)]
            # ... and a category with a fitting, appealing item has an acceptable one.
            has_fit = any(f and it.category == cat.id for f, it in zip(fits_and_appeals, world.items, strict=True))
            assert in_cat.any() == has_fit


def test_shipped_keywords_are_unique_across_slots(world):
    owner: dict[str, str] = {}
    for slot in world.slots:
        for kw in slot.keywords:
            assert owner.setdefault(kw, slot.name) == slot.name, f"keyword {kw!r} in {owner[kw]} and {slot.name}"


def test_every_alias_resolves_to_its_owner(world, lexicon):
    n = 0
    for slot in world.slots:
        for v in slot.values:
            for alias in v.aliases:
                got = [(m.kind, m.key, m.slot) for m in lexicon.mentions(normalize(alias))]
                assert got == [("value", v.id, slot.name)], alias
                # Embedded in a sentence and upper-cased it still wins as one longest match.
                got = [(m.kind, m.key) for m in lexicon.mentions(normalize(f"Well, {alias.upper()}!"))]
                assert got == [("value", v.id)], alias
                n += 1
    for item in world.items:
        for alias in (*item.aliases, item.name):
            got = [(m.kind, m.key) for m in lexicon.mentions(normalize(alias))]
            assert got == [("item", item.id)], alias
            n += 1
    for cat in world.categories:
        for alias in cat.aliases:
            got = [(m.kind, m.key) for m in lexicon.mentions(normalize(alias))]
            assert got == [("category", cat.id)], alias
            n += 1
    assert n > 300


def test_longest_match_wins(lexicon):
    # "allergic to cats" (allergy) beats "a cat"/"cat" readings; "blue note jazz night" (item) beats "jazz" (music).
    got = [(m.kind, m.key, m.slot) for m in lexicon.mentions(normalize("I'm allergic to cats and love jazz."))]
    assert got == [("value", "cats", "allergy"), ("value", "jazz", "music")]
    got = [(m.kind, m.key) for m in lexicon.mentions(normalize("How about the Blue Note Jazz Night?"))]
    assert got == [("item", "blue_note_jazz_night")]


# -- a tiny valid world -------------------------------------------------------------------------


def test_tiny_world_loads_and_masks(tmp_path):
    w = load_world(write_world(tmp_path, tiny_world_data()))
    assert w.name == "tiny"
    assert w.slot_names == ("diet", "pet")
    assert [len(s.values) for s in w.slots] == [3, 2]
    assert w.slot["pet"].offset == 3 and w.n_values == 5
    assert w.slot["diet"].held_out == {"halal"}
    assert [i.id for i in w.items] == ["cat_tree", "steakhouse"]

    def mask(diet, pet, category=None):
        return w.acceptable_mask(w.value_indices({"diet": diet, "pet": pet}), category).tolist()

    assert mask("vegan", "cat") == [True, False]  # steakhouse excludes vegans
    assert mask("omnivore", "cat") == [True, True]
    assert mask("omnivore", "none") == [False, True]  # cat tree requires a cat
    assert mask("vegan", "none") == [False, False]
    assert mask("halal", "none") == [False, True]
    assert mask("omnivore", "cat", "gift") == [True, False]
    assert mask("omnivore", "cat", "place") == [False, True]


def test_tiny_world_json_equals_yaml(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    wy = load_world(write_world(tmp_path / "a", tiny_world_data(), ".yaml"))
    wj = load_world(write_world(tmp_path / "b", tiny_world_data(), ".json"))
    assert wy.slot_names == wj.slot_names
    assert [i.id for i in wy.items] == [i.id for i in wj.items]
    np.testing.assert_array_equal(wy.violation, wj.violation)
    np.testing.assert_array_equal(wy.appeal, wj.appeal)


# -- malformed world files ----------------------------------------------------------------------


def _drop_items(d):
    del d["items"]


def _drop_traits(d):
    del d["traits"]


def _unknown_slot_in_requires(d):
    d["items"][1]["requires"] = {"colour": ["red"]}


def _unknown_value_in_excludes(d):
    d["items"][1]["excludes"] = {"diet": ["vegan", "keto"]}


def _duplicate_item_id(d):
    d["items"].append({**copy.deepcopy(d["items"][0]), "aliases": ["another cat tree"]})


def _duplicate_alias_across_values(d):
    d["slots"]["diet"]["values"]["omnivore"]["aliases"].append("vegan")


def _duplicate_alias_value_item(d):
    d["items"][0]["aliases"].append("a cat")


def _alias_same_words(d):
    d["items"][0]["aliases"].append("no-pets")
    d["slots"]["pet"]["values"]["none"]["aliases"].append("no-pets!")


def _non_list_aliases(d):
    d["slots"]["diet"]["values"]["vegan"]["aliases"] = "vegan"


def _alias_without_words(d):
    d["slots"]["pet"]["values"]["cat"]["aliases"] = ["a cat", "?!"]


def _upper_case_alias(d):
    d["categories"]["gift"]["aliases"] = ["Gift"]


def _missing_fact(d):
    del d["slots"]["pet"]["values"]["cat"]["fact"]


def _one_value(d):
    del d["slots"]["pet"]["values"]["cat"]


def _unknown_category(d):
    d["items"][0]["category"] = "holiday"


def _list_category(d):
    d["items"][0]["category"] = ["gift"]


def _no_appeals(d):
    d["items"][1]["appeals"] = {}


def _missing_trait(d):
    del d["traits"]["patience"]


def _unknown_held_out(d):
    d["slots"]["diet"]["held_out"] = ["keto"]


def _too_many_held_out(d):
    d["slots"]["diet"]["held_out"] = ["halal", "vegan"]


def _bad_version(d):
    d["version"] = "one"


MALFORMED = [
    # (mutation, entry expected in the message, field expected in the message)
    (_drop_items, "top level", "items"),
    (_drop_traits, "top level", "traits"),
    (_unknown_slot_in_requires, "items[1]", "requires.colour"),
    (_unknown_value_in_excludes, "items[1]", "excludes.diet[1]"),
    (_duplicate_item_id, "items[2]", ".id"),
    (_duplicate_alias_across_values, "slots.diet.values.omnivore", "aliases[2]"),
    (_duplicate_alias_value_item, "items.cat_tree", "aliases[1]"),
    (_alias_same_words, "slots.pet.values.none", "aliases[1]"),
    (_non_list_aliases, "slots.diet.values.vegan", "aliases"),
    (_alias_without_words, "slots.pet.values.cat", "aliases[1]"),
    (_upper_case_alias, "categories.gift", "aliases[0]"),
    (_missing_fact, "slots.pet.values.cat", "fact"),
    (_one_value, "slots.pet", "values"),
    (_unknown_category, "items[0]", "category"),
    (_list_category, "items[0]", "category"),
    (_no_appeals, "items[1]", "appeals"),
    (_missing_trait, "traits", "patience"),
    (_unknown_held_out, "slots.diet", "held_out[0]"),
    (_too_many_held_out, "slots.diet", "held_out"),
    (_bad_version, "version", "version"),
]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize(("mutate", "entry", "field"), MALFORMED, ids=[m[0].__name__.strip("_") for m in MALFORMED])
def test_malformed_world_names_file_entry_and_field(tmp_path, suffix, mutate, entry, field):
    data = tiny_world_data()
    mutate(data)
    path = write_world(tmp_path, data, suffix)
    with pytest.raises(WorldError) as exc:
        load_world(path)
    msg = str(exc.value)
    assert str(path.resolve()) in msg
    assert entry in msg
    assert field in msg


def test_the_unmutated_tiny_world_is_valid():
    # Guards the table above: every failure comes from its mutation, not from the base world.
    parse_world(tiny_world_data(), "tiny.yaml")


def test_duplicate_item_id_message(tmp_path):
    data = tiny_world_data()
    _duplicate_item_id(data)
    with pytest.raises(WorldError, match=r"items\[2\] \(cat_tree\)\.id: duplicate item id 'cat_tree'"):
        load_world(write_world(tmp_path, data))


def test_duplicate_alias_message_names_both_owners(tmp_path):
    data = tiny_world_data()
    _duplicate_alias_across_values(data)
    with pytest.raises(WorldError, match="'vegan' is also used by slots.diet.values.vegan"):
        load_world(write_world(tmp_path, data))


@pytest.mark.parametrize(
    ("suffix", "text", "kind"),
    [
        (".yaml", "slots:\n  diet: [unclosed\nitems: {\n", "YAML"),
        (".yaml", "traits:\n\tverbosity: [terse]\n", "YAML"),
        (".json", '{"slots": {"diet": }', "JSON"),
    ],
)
def test_bad_syntax_names_file_and_line(tmp_path, suffix, text, kind):
    path = tmp_path / f"broken{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WorldError) as exc:
        load_world(path)
    msg = str(exc.value)
    assert str(path.resolve()) in msg
    assert f"not valid {kind}" in msg
    assert "line" in msg


@pytest.mark.parametrize("content", ["", "- just\n- a list\n", "42\n"])
def test_non_mapping_top_level(tmp_path, content):
    path = tmp_path / "w.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WorldError, match="top level: expected a mapping") as exc:
        load_world(path)
    assert str(path.resolve()) in str(exc.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "world.yaml"
    with pytest.raises(WorldError, match="not found") as exc:
        load_world(path)
    assert str(path) in str(exc.value)


def test_directory_is_not_a_world_file(tmp_path):
    with pytest.raises(WorldError, match="not found"):
        load_world(tmp_path)


def test_world_error_is_a_value_error():
    assert issubclass(WorldError, ValueError)
    with pytest.raises(ValueError, match="<world>: top level"):
        parse_world([])
