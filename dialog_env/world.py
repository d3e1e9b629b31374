"""The ontology of a PersonaRec world: persona slots and values, style traits, item catalog.

A world is loaded from a YAML (or JSON) file and validated field by field: a malformed file raises
:class:`WorldError` naming the file, the entry and the field. The shipped default lives in
``dialog_env/data/world.yaml``; :func:`load_world` with no argument returns it.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULT_WORLD_PATH = Path(__file__).parent / "data" / "world.yaml"
TRAIT_NAMES = ("verbosity", "openness", "patience")
CONSTRAINT_KINDS = ("requires", "excludes", "appeals")


class WorldError(ValueError):
    """A world file is malformed; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Value:
    """One value of a persona slot with its surface forms.

    Attributes:
        id: Value id, unique within its slot (``"vegetarian"``).
        slot: Name of the slot the value belongs to.
        fact: First-person statement without a final period (``"I'm vegetarian"``).
        short: Terse answer fragment (``"vegetarian"``).
        you: Second-person form (``"you're vegetarian"``).
        aliases: Lower-case phrases that identify this value in free text.
        index: Position of the value in the world's flat value table.
    """

    id: str
    slot: str
    fact: str
    short: str
    you: str
    aliases: tuple[str, ...]
    index: int


@dataclass(frozen=True)
class Slot:
    """A persona slot (``diet``, ``pet``, ...).

    Attributes:
        name: Slot name.
        noun: Short noun used in templates (``"diet"``).
        keywords: Lower-case words that make a question be about this slot.
        questions: Natural questions an agent can ask about the slot.
        values: The slot's values, in file order.
        held_out: Ids of values reserved for the ``test_unseen`` persona split.
        index: Position of the slot in the world.
        offset: Index of the slot's first value in the flat value table.
    """

    name: str
    noun: str
    keywords: tuple[str, ...]
    questions: tuple[str, ...]
    values: tuple[Value, ...]
    held_out: frozenset[str]
    index: int
    offset: int

    @functools.cached_property
    def value_ids(self) -> tuple[str, ...]:
        """Ids of the slot's values, in order."""
        return tuple(v.id for v in self.values)

    @functools.cached_property
    def by_id(self) -> dict[str, Value]:
        """Values keyed by id."""
        return {v.id: v for v in self.values}


@dataclass(frozen=True)
class Category:
    """A kind of recommendation the user can want (``activity``, ``place``, ``gift``)."""

    id: str
    noun: str
    aliases: tuple[str, ...]
    index: int


@dataclass(frozen=True)
class Item:
    """A recommendable catalog item with constraints over persona values.

    Attributes:
        id: Item id.
        name: Display name.
        category: Category id.
        aliases: Lower-case phrases that identify the item in free text.
        requires: Slot -> allowed values; the persona's value must be one of them.
        excludes: Slot -> excluded values; the persona's value must not be one of them.
        appeals: Slot -> values the item appeals to; the user accepts only an appealing item.
        index: Position of the item in the catalog.
    """

    id: str
    name: str
    category: str
    aliases: tuple[str, ...]
    requires: Mapping[str, frozenset[str]]
    excludes: Mapping[str, frozenset[str]]
    appeals: Mapping[str, frozenset[str]]
    index: int

    def violated_slots(self, values: Mapping[str, str]) -> list[str]:
        """Slots whose value in ``values`` breaks a hard constraint (unknown slots are skipped)."""
        bad = []
        for slot, allowed in self.requires.items():
            if slot in values and values[slot] not in allowed:
                bad.append(slot)
        for slot, excluded in self.excludes.items():
            if slot in values and values[slot] in excluded and slot not in bad:
                bad.append(slot)
        return bad

    def appealing_slots(self, values: Mapping[str, str]) -> list[str]:
        """Slots whose value in ``values`` is one the item appeals to."""
        return [s for s, vals in self.appeals.items() if s in values and values[s] in vals]


@dataclass(frozen=True, eq=False)
class World:
    """A validated world: slots, traits, categories and the item catalog.

    Besides the records, the world holds dense matrices for fast fit checks:
    ``violation[i, v]`` is true when flat value ``v`` breaks a hard constraint of item ``i`` and
    ``appeal[i, v]`` when item ``i`` appeals to value ``v``.
    """

    name: str
    version: int
    source: str
    traits: Mapping[str, tuple[str, ...]]
    categories: tuple[Category, ...]
    slots: tuple[Slot, ...]
    items: tuple[Item, ...]
    violation: np.ndarray = field(repr=False, compare=False)
    appeal: np.ndarray = field(repr=False, compare=False)
    item_category: np.ndarray = field(repr=False, compare=False)

    @functools.cached_property
    def slot_names(self) -> tuple[str, ...]:
        """Slot names in world order."""
        return tuple(s.name for s in self.slots)

    @functools.cached_property
    def slot(self) -> dict[str, Slot]:
        """Slots keyed by name."""
        return {s.name: s for s in self.slots}

    @functools.cached_property
    def item(self) -> dict[str, Item]:
        """Items keyed by id."""
        return {i.id: i for i in self.items}

    @functools.cached_property
    def category(self) -> dict[str, Category]:
        """Categories keyed by id."""
        return {c.id: c for c in self.categories}

    @functools.cached_property
    def values(self) -> tuple[Value, ...]:
        """The flat value table (every value of every slot, slot by slot)."""
        return tuple(v for s in self.slots for v in s.values)

    @property
    def n_values(self) -> int:
        """Number of values over all slots."""
        return len(self.values)

    def value(self, slot: str, value: str) -> Value:
        """Return the :class:`Value` record of ``slot=value``, with a clear error if unknown."""
        if slot not in self.slot:
            raise KeyError(f"unknown slot {slot!r}; allowed: {list(self.slot)}")
        s = self.slot[slot]
        if value not in s.by_id:
            raise KeyError(f"unknown value {value!r} for slot {slot!r}; allowed: {list(s.value_ids)}")
        return s.by_id[value]

    def value_indices(self, values: Mapping[str, str]) -> np.ndarray:
        """Flat value indices of a complete slot -> value assignment, in slot order."""
        return np.fromiter((self.slot[s].by_id[values[s]].index for s in self.slot_names), dtype=np.int64)

    @functools.cached_property
    def _category_members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.item_category == c.index) for c in self.categories]

    @functools.cached_property
    def category_onehot(self) -> np.ndarray:
        """``(n_categories, n_items)`` bool matrix: item j is in category c."""
        return np.arange(len(self.categories))[:, None] == self.item_category[None, :]

    def acceptable_mask(self, value_idx: np.ndarray, category: str | None = None) -> np.ndarray:
        """Boolean mask over the items a persona accepts, optionally within ``category``.

        A persona accepts an item that fits (breaks no hard constraint), appeals to it (at least
        one ``appeals`` match) and is among the best fits of its category (no fitting item of the
        same category appeals to more of the persona's values).
        """
        fits = ~self.violation[:, value_idx].any(axis=1)
        score = np.where(fits, self.appeal[:, value_idx].sum(axis=1), -1)
        ok = score >= 1
        for members in self._category_members:
            ok[members] &= score[members] == score[members].max()
        if category is not None:
            ok &= self.item_category == self.category[category].index
        return ok

    def acceptable_matrix(self, value_idx: np.ndarray) -> np.ndarray:
        """:meth:`acceptable_mask` for many personas: ``(n, n_slots)`` -> ``(n_items, n)`` bool."""
        fits = ~self.violation[:, value_idx].any(axis=2)
        score = np.where(fits, self.appeal[:, value_idx].sum(axis=2), -1)  # (items, n)
        best = np.where(self.category_onehot[:, :, None], score[None, :, :], -1).max(axis=1)  # (cats, n)
        return (score >= 1) & (score == best[self.item_category])


def _err(source: str, where: str, problem: str) -> WorldError:
    return WorldError(f"{source}: {where}: {problem}")


def _str(source: str, where: str, x: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(x, str) or (not allow_empty and not x.strip()):
        raise _err(source, where, f"expected a non-empty string, got {x!r}")
    if not x.isascii():
        raise _err(source, where, f"expected ASCII text, got {x!r}")
    return x


def _str_list(source: str, where: str, x: Any, *, min_len: int = 1) -> tuple[str, ...]:
    if not isinstance(x, list) or len(x) < min_len:
        raise _err(source, where, f"expected a list of at least {min_len} strings, got {x!r}")
    return tuple(_str(source, f"{where}[{i}]", e) for i, e in enumerate(x))


def _mapping(
    source: str, where: str, x: Any, keys: Sequence[str] = (), optional: Sequence[str] | None = None
) -> Mapping[str, Any]:
    """``x`` as a mapping with the required ``keys``; with ``optional`` given, no other keys either."""
    if not isinstance(x, Mapping):
        raise _err(source, where, f"expected a mapping, got {type(x).__name__}")
    missing = [k for k in keys if k not in x]
    if missing:
        raise _err(source, where, f"missing field(s) {missing}")
    if optional is not None:
        allowed = [*keys, *optional]
        for k in x:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _err(source, f"{where}.{k}", f"unknown field {k!r}{hint}; allowed: {allowed}")
    return x


def _alias_list(source: str, where: str, x: Any) -> tuple[str, ...]:
    from dialog_env.nlu import tokens  # lazy: nlu imports this module

    aliases = _str_list(source, where, x)
    for i, a in enumerate(aliases):
        if a != a.lower().strip() or "  " in a:
            raise _err(source, f"{where}[{i}]", f"aliases must be lower-case and trimmed, got {a!r}")
        if not tokens(a):
            raise _err(source, f"{where}[{i}]", f"aliases must contain a word (letters or digits), got {a!r}")
    return aliases


def parse_world(data: Any, source: str = "<world>") -> World:
    """Validate a world description (the parsed YAML/JSON) and build a :class:`World`.

    Args:
        data: The parsed file content.
        source: Name of the file, used in error messages.

    Returns:
        The validated world.

    Raises:
        WorldError: The description is malformed; the message names source, entry and field.
    """
    top = _mapping(source, "top level", data, ["slots", "items", "categories", "traits"], ["name", "version"])
    name = _str(source, "name", top.get("name", Path(source).stem))
    version = top.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _err(source, "version", f"expected an integer, got {version!r}")

    traits_raw = _mapping(source, "traits", top["traits"], TRAIT_NAMES)
    traits = {t: _str_list(source, f"traits.{t}", traits_raw[t]) for t in TRAIT_NAMES}
    unknown_traits = set(traits_raw) - set(TRAIT_NAMES)
    if unknown_traits:
        raise _err(source, "traits", f"unknown trait(s) {sorted(unknown_traits)}; allowed: {list(TRAIT_NAMES)}")

    from dialog_env.nlu import tokens  # lazy: nlu imports this module

    # Keyed by the words the lexicon matches, so "hip-hop!" and "hip-hop" count as the same alias.
    alias_owner: dict[tuple[str, ...], str] = {}

    def claim(aliases: tuple[str, ...], where: str) -> None:
        for i, a in enumerate(aliases):
            key = tuple(tokens(a))
            if key in alias_owner and alias_owner[key] != where:
                raise _err(source, f"{where}.aliases[{i}]", f"alias {a!r} is also used by {alias_owner[key]}")
            alias_owner[key] = where

    cats_raw = _mapping(source, "categories", top["categories"])
    if not cats_raw:
        raise _err(source, "categories", "expected at least one category")
    categories = []
    for ci, (cid, c) in enumerate(cats_raw.items()):
        where = f"categories.{cid}"
        c = _mapping(source, where, c, ["noun", "aliases"], [])
        cat = Category(
            cid, _str(source, f"{where}.noun", c["noun"]), _alias_list(source, f"{where}.aliases", c["aliases"]), ci
        )
        claim(cat.aliases, where)
        categories.append(cat)

    slots_raw = _mapping(source, "slots", top["slots"])
    if not slots_raw:
        raise _err(source, "slots", "expected at least one slot")
    slots: list[Slot] = []
    offset = 0
    for si, (sname, s) in enumerate(slots_raw.items()):
        where = f"slots.{sname}"
        s = _mapping(source, where, s, ["noun", "keywords", "questions", "values"], ["held_out"])
        vals_raw = _mapping(source, f"{where}.values", s["values"])
        if len(vals_raw) < 2:
            raise _err(source, f"{where}.values", f"expected at least 2 values, got {len(vals_raw)}")
        values = []
        for vi, (vid, v) in enumerate(vals_raw.items()):
            vwhere = f"{where}.values.{vid}"
            v = _mapping(source, vwhere, v, ["fact", "short", "you", "aliases"], [])
            value = Value(
                id=str(vid),
                slot=sname,
                fact=_str(source, f"{vwhere}.fact", v["fact"]),
                short=_str(source, f"{vwhere}.short", v["short"]),
                you=_str(source, f"{vwhere}.you", v["you"]),
                aliases=_alias_list(source, f"{vwhere}.aliases", v["aliases"]),
                index=offset + vi,
            )
            claim(value.aliases, vwhere)
            values.append(value)
        held = s.get("held_out", [])
        held_t = _str_list(source, f"{where}.held_out", held, min_len=0) if held else ()
        for i, h in enumerate(held_t):
            if h not in vals_raw:
                raise _err(source, f"{where}.held_out[{i}]", f"unknown value {h!r}; allowed: {list(vals_raw)}")
        if len(held_t) >= len(values) - 1:
            raise _err(source, f"{where}.held_out", "at least two values must stay out of held_out")
        slots.append(
            Slot(
                name=sname,
                noun=_str(source, f"{where}.noun", s["noun"]),
                keywords=_alias_list(source, f"{where}.keywords", s["keywords"]),
                questions=_str_list(source, f"{where}.questions", s["questions"]),
                values=tuple(values),
                held_out=frozenset(held_t),
                index=si,
                offset=offset,
            )
        )
        offset += len(values)
    slot_by_name = {s.name: s for s in slots}

    items_raw = top["items"]
    if not isinstance(items_raw, list) or not items_raw:
        raise _err(source, "items", "expected a non-empty list of items")
    items: list[Item] = []
    seen_ids: set[str] = set()
    for ii, it in enumerate(items_raw):
        where = f"items[{ii}]"
        it = _mapping(source, where, it, ["id", "name", "category", "aliases", "appeals"], ["requires", "excludes"])
        iid = _str(source, f"{where}.id", it["id"])
        where = f"items[{ii}] ({iid})"
        if iid in seen_ids:
            raise _err(source, f"{where}.id", f"duplicate item id {iid!r}")
        seen_ids.add(iid)
        cat = it["category"]
        if not isinstance(cat, str) or cat not in cats_raw:
            raise _err(source, f"{where}.category", f"unknown category {cat!r}; allowed: {list(cats_raw)}")
        constraints: dict[str, dict[str, frozenset[str]]] = {}
        for kind in CONSTRAINT_KINDS:
            raw = it.get(kind) or {}
            raw = _mapping(source, f"{where}.{kind}", raw)
            parsed = {}
            for slot_name, vals in raw.items():
                cwhere = f"{where}.{kind}.{slot_name}"
                if slot_name not in slot_by_name:
                    raise _err(source, cwhere, f"unknown slot {slot_name!r}; allowed: {list(slot_by_name)}")
                vals_t = _str_list(source, cwhere, vals)
                allowed = slot_by_name[slot_name].by_id
                for k, val in enumerate(vals_t):
                    if val not in allowed:
                        raise _err(source, f"{cwhere}[{k}]", f"unknown value {val!r}; allowed: {list(allowed)}")
                parsed[slot_name] = frozenset(vals_t)
            constraints[kind] = parsed
        if not constraints["appeals"]:
            raise _err(source, f"{where}.appeals", "expected at least one slot -> values entry")
        item = Item(
            id=iid,
            name=_str(source, f"{where}.name", it["name"]),
            category=cat,
            aliases=_alias_list(source, f"{where}.aliases", it["aliases"]),
            requires=constraints["requires"],
            excludes=constraints["excludes"],
            appeals=constraints["appeals"],
            index=ii,
        )
        claim(item.aliases, f"items.{iid}")
        items.append(item)

    n_values = offset
    violation = np.zeros((len(items), n_values), dtype=bool)
    appeal = np.zeros((len(items), n_values), dtype=bool)
    for item in items:
        for slot_name, allowed in item.requires.items():
            for v in slot_by_name[slot_name].values:
                violation[item.index, v.index] |= v.id not in allowed
        for slot_name, excluded in item.excludes.items():
            for v in slot_by_name[slot_name].values:
                violation[item.index, v.index] |= v.id in excluded
        for slot_name, liked in item.appeals.items():
            for v in slot_by_name[slot_name].values:
                appeal[item.index, v.index] = v.id in liked
    cat_index = {c.id: c.index for c in categories}
    item_category = np.array([cat_index[i.category] for i in items], dtype=np.int64)
    return World(
        name=name,
        version=version,
        source=source,
        traits=traits,
        categories=tuple(categories),
        slots=tuple(slots),
        items=tuple(items),
        violation=violation,
        appeal=appeal,
        item_category=item_category,
    )


def read_structured_file(path: Path) -> Any:
    """Read a YAML or JSON file, turning parse errors into :class:`WorldError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise WorldError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise WorldError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from e


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> World:
    p = Path(path)
    return parse_world(read_structured_file(p), source=str(p))


def load_world(path: str | Path | None = None) -> World:
    """Load and validate a world file (YAML or JSON); ``None`` loads the shipped default.

    Worlds are immutable and cached per resolved path, so every env in a process shares one.

    Args:
        path: A world file, or ``None`` for ``dialog_env/data/world.yaml``.

    Returns:
        The validated :class:`World`.

    Raises:
        WorldError: The file is missing or malformed (the message names file, entry and field).
    """
    p = DEFAULT_WORLD_PATH if path is None else Path(path)
    if not p.is_file():
        raise WorldError(f"{p}: world file not found")
    return _load_cached(str(p.resolve()))
