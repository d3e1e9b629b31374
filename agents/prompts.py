"""Prompt styles of LM policies, and the record of which one a trained model folder uses.

A prompt style fixes everything an LM policy reads besides the dialogue: the system message, a
worked example exchange, and whether each user turn carries the text environment's state note
(:mod:`dialog_env.notes`). Every place that puts a dialogue in front of a model uses these
builders — the LM agent, GRPO rollouts, demonstration collection — so a policy is trained and
evaluated on exactly the same text.

* ``catalog`` — for a base model: an instruction, the wanted category's catalog and a worked
  example (small instruct models follow a demonstrated pattern far better than an instruction).
  About 230 tokens before the dialogue starts.
* ``notes`` — for a fine-tuned policy: a one-line instruction, and a state note after every user
  turn (what was heard, which items still fit). About 30 tokens before the dialogue starts.

A trained model folder records its style in ``dialog_env_policy.json``; :func:`policy_prompt`
reads it, so ``lm:<folder>`` evaluates a policy with the prompt it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialog_env.envs.core import PersonaRecCore
from dialog_env.io import atomic_write_text
from dialog_env.view import AgentView

#: The file in a model folder that records the prompt style the policy was trained with.
POLICY_FILE = "dialog_env_policy.json"

CATALOG_SYSTEM = (
    "You are a shopping assistant. Ask the user short questions, then recommend one catalog item by its exact name."
)
NOTES_SYSTEM = "You recommend one item. Notes in [brackets] say what you heard and which items fit."


@dataclass(frozen=True)
class PromptStyle:
    """How a dialogue is shown to an LM policy.

    Attributes:
        name: Registry key.
        system: The system instruction.
        catalog: List the wanted category's items in the system message and show a worked example.
        notes: Append the state note to every user turn.
    """

    name: str
    system: str
    catalog: bool
    notes: bool


PROMPTS: dict[str, PromptStyle] = {
    "catalog": PromptStyle("catalog", CATALOG_SYSTEM, catalog=True, notes=False),
    "notes": PromptStyle("notes", NOTES_SYSTEM, catalog=False, notes=True),
}
#: The style of a model that records none (a base model).
DEFAULT_PROMPT = "catalog"


def get_prompt(name: str) -> PromptStyle:
    """The registered style ``name``.

    Raises:
        ValueError: Unknown name; the message lists the registered ones.
    """
    if name not in PROMPTS:
        raise ValueError(f"prompt: unknown prompt style {name!r}; expected one of {list(PROMPTS)}")
    return PROMPTS[name]


def _catalog(core: PersonaRecCore | AgentView) -> list[Any]:
    """The items of the wanted category once the tracker has heard it, else every item."""
    goal = core.tracker.goal
    return [it for it in core.world.items if goal is None or it.category == goal]


def system_prompt(core: PersonaRecCore | AgentView, summary: bool = True, style: PromptStyle | None = None) -> str:
    """The system message for one dialogue, built only from agent-side state.

    In the ``catalog`` style it lists the wanted category once the tracker has heard it (else
    every item); ``summary`` adds what the tracker knows, what the user declined and what it
    rejected (it changes every turn, so rollouts that keep a growing token sequence leave it out).
    """
    style = style or PROMPTS[DEFAULT_PROMPT]
    if not style.catalog:
        return style.system
    world, t = core.world, core.tracker
    lines = [style.system, "", "Catalog: " + "; ".join(it.name for it in _catalog(core)) + "."]
    if summary:
        known = t.known()
        facts = [world.value(s, v).you for s, v in known.items()]
        if facts:
            lines.append("What you know: " + "; ".join(facts) + ".")
        declined = [world.slot[s.name].noun for s in world.slots if t.declined[s.index]]
        if declined:
            lines.append("The user would rather not talk about: " + ", ".join(declined) + ".")
        rejected = [it.name for it in world.items if t.rejected[it.index]]
        if rejected:
            lines.append("Already rejected: " + ", ".join(rejected) + ".")
    return "\n".join(lines)


def example_exchange(core: PersonaRecCore | AgentView) -> list[dict[str, str]]:
    """A short worked exchange shown before the dialogue: ask, ask, then recommend by exact name.

    Small instruct models follow a demonstrated pattern far better than a system instruction
    (SmolLM2-135M mostly ignores the instruction alone and rarely names an item). The exchange
    uses the world's own questions and an item of the catalog in the system message, and reveals
    nothing about this dialogue's persona.
    """
    world = core.world
    items = _catalog(core)
    return [
        {"role": "user", "content": "Hi, I need some help."},
        {"role": "assistant", "content": world.slots[2 % len(world.slots)].questions[0]},
        {"role": "user", "content": "Yes, I do."},
        {"role": "assistant", "content": world.slots[3 % len(world.slots)].questions[0]},
        {"role": "user", "content": "I'd rather not say."},
        {"role": "assistant", "content": f"I recommend the {items[len(items) // 3].name}."},
        {"role": "user", "content": "Thanks, bye!"},
    ]


def prompt_messages(
    core: PersonaRecCore | AgentView,
    summary: bool = False,
    example: bool = True,
    style: PromptStyle | str | None = None,
) -> list[dict[str, str]]:
    """The chat an LM policy continues: the system message, the worked example, the dialogue so far.

    Args:
        core: The text environment (its agent-side state).
        summary: ``catalog`` style only: the tracker's summary in the system message.
        example: ``catalog`` style only: show the worked example.
        style: A :class:`PromptStyle` or its name (default: ``catalog``).
    """
    style = get_prompt(style) if isinstance(style, str) else style or PROMPTS[DEFAULT_PROMPT]
    shown = example_exchange(core) if example and style.catalog else []
    dialogue = core.messages(notes=style.notes) if style.notes else core.messages()  # type: ignore[call-arg]
    return [{"role": "system", "content": system_prompt(core, summary, style)}, *shown, *dialogue]


def user_turn_content(style: PromptStyle, core: PersonaRecCore | AgentView, info: dict[str, Any]) -> str:
    """What the policy reads of the user's latest turn: its text, and the state note in the ``notes`` style."""
    return f"{info['user_text']}\n{core.note()}" if style.notes else info["user_text"]  # type: ignore[attr-defined]


def policy_prompt(model: Any) -> str:
    """The prompt style recorded in a model folder (:data:`POLICY_FILE`), else :data:`DEFAULT_PROMPT`.

    Raises:
        ValueError: The record names an unknown style or is not valid JSON.
    """
    if not isinstance(model, str | Path):
        return DEFAULT_PROMPT
    path = Path(model) / POLICY_FILE
    if not path.is_file():
        return DEFAULT_PROMPT
    try:
        name = json.loads(path.read_text(encoding="utf-8"))["prompt"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected a JSON object with a 'prompt' field: {e}") from e
    return get_prompt(name).name


def save_policy_record(folder: str | Path, prompt: str, **extra: Any) -> Path:
    """Write :data:`POLICY_FILE` into a model folder (atomically): the prompt style, plus ``extra`` facts."""
    get_prompt(prompt)
    path = Path(folder) / POLICY_FILE
    atomic_write_text(path, json.dumps({"prompt": prompt, **extra}, indent=1, sort_keys=True) + "\n")
    return path
