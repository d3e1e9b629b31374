"""Safety check of the agent's words before the user hears them, and redaction of persona values in written files.

**Safety.** The text env checks every agent utterance with a :class:`SafetyCheck` (env argument
``safety``): ``"lexicon"`` (default: the documented list in ``dialog_env/data/harmful_lexicon.txt``),
a path to a lexicon file of one's own (one term or phrase per line, ``#`` comments), a
``"package.module:attr"`` callable ``text -> list of flagged terms``, or ``None`` (no check). A
flagged utterance never reaches the user: the env says :data:`BLOCKED_REPLY` in its place, reports the
terms in ``info["safety_flags"]``, and the turn's context carries them for the ``harmful_content``
reward term and the ``harmful`` metric.

**Redaction.** :class:`Redactor` replaces every surface form of every persona value of the world
(its id, ``fact``, ``short``, ``you`` and aliases) with the slot's name in brackets (``"I'm vegan"``
-> ``"[diet]"``). It needs no persona, so it also removes values an agent guessed; ``--redact`` in
``dialog-env collect``, ``eval`` and ``benchmark`` applies it to every dialogue they write.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dialog_env.world import World

LEXICON_FILE = Path(__file__).parent / "data" / "harmful_lexicon.txt"
BLOCKED_REPLY = "Sorry, let me put that differently."
"""What the user hears in place of a flagged utterance (it parses to no act)."""


def read_lexicon(path: str | Path) -> list[str]:
    """The terms of a lexicon file: one per line, blank lines and ``#`` comments skipped.

    Raises:
        ValueError: The file is missing or has no term.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"safety: lexicon file {p} does not exist")
    terms = [line.strip().lower() for line in p.read_text(encoding="utf-8").splitlines()]
    terms = [t for t in terms if t and not t.startswith("#")]
    if not terms:
        raise ValueError(f"safety: lexicon file {p} has no term")
    return terms


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    """One case-insensitive regex of whole-word phrases (any whitespace between words), tried in the given order."""
    words = [r"\s+".join(map(re.escape, p.split())) for p in phrases]
    return re.compile(r"(?<![a-z0-9])(" + "|".join(words) + r")(?![a-z0-9])", re.IGNORECASE)


class SafetyCheck:
    """Flags an utterance that contains a lexicon term (case-insensitive, on whole words).

    Args:
        terms: The lexicon's terms and phrases.
    """

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = sorted({t.strip().lower() for t in terms if t.strip()}, key=lambda t: (-len(t), t))
        if not self.terms:
            raise ValueError("safety: the lexicon has no term")
        self._pattern = phrase_pattern(self.terms)

    def __call__(self, text: str) -> list[str]:
        """The lexicon terms in ``text``, in order of appearance (empty: safe)."""
        return [" ".join(m.group(1).lower().split()) for m in self._pattern.finditer(text)]

    def __reduce__(self) -> tuple[Any, ...]:  # pickles as its terms (envs are pickled into checkpoints)
        return (SafetyCheck, (self.terms,))


@functools.lru_cache(maxsize=1)
def default_check() -> SafetyCheck:
    """The check on the shipped lexicon (loaded once per process)."""
    return SafetyCheck(read_lexicon(LEXICON_FILE))


def make_safety_check(spec: Any) -> Callable[[str], Sequence[str]] | None:
    """The check an env argument names: ``"lexicon"``, a lexicon file, ``"module:attr"``, a callable, or None.

    Raises:
        ValueError: An unknown spec, a missing file or an attribute that is not callable.
    """
    if spec is None or spec is False or spec == "off":
        return None
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"safety: expected 'lexicon', a lexicon file, 'package.module:attr' or None, got {spec!r}")
    if spec == "lexicon":
        return default_check()
    if ":" in spec and not Path(spec).exists():
        from dialog_env.plugins import import_path

        obj = import_path(spec, "safety")
        if isinstance(obj, type):
            obj = obj()
        if not callable(obj):
            raise ValueError(f"safety: {spec} is not callable (expected text -> list of flagged terms)")
        return obj
    return SafetyCheck(read_lexicon(spec))


class Redactor:
    """Replaces every persona value's surface forms in a text with ``[slot]``.

    Args:
        world: The world whose values are redacted.
    """

    def __init__(self, world: World) -> None:
        forms: dict[str, str] = {}
        for v in world.values:
            for form in (v.id, v.fact, v.short, v.you, *v.aliases):
                form = " ".join(str(form).lower().replace("_", " ").split())
                if form:
                    forms.setdefault(form, v.slot)
        self._slot = forms
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = phrase_pattern(ordered)

    def __call__(self, text: str) -> str:
        """``text`` with each value mention replaced by its slot in brackets."""
        return self._pattern.sub(lambda m: f"[{self._slot[' '.join(m.group(1).lower().split())]}]", text)

    def messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """A chat with every message's ``content`` redacted."""
        return [
            {**m, "content": self(m["content"])} if isinstance(m.get("content"), str) else dict(m) for m in messages
        ]

    def mentions(self, text: str) -> list[str]:
        """The value surface forms found in ``text`` (what redaction would remove)."""
        return [m.group(1) for m in self._pattern.finditer(text)]


def redact_rows(rows: Sequence[dict[str, Any]], world: World | None = None) -> list[dict[str, Any]]:
    """Rows (data set or transcript rows) with every ``messages`` content redacted (:class:`Redactor`)."""
    from dialog_env.world import load_world

    redactor = Redactor(world if world is not None else load_world())
    return [{**r, "messages": redactor.messages(r["messages"])} if "messages" in r else dict(r) for r in rows]
