"""Demonstrations: dialogues played by a non-privileged agent, as a chat data set for SFT.

``dialog-env collect --agent planner --split train --episodes 400 --out data/planner`` plays
text-mode dialogues and writes a folder that ``datasets.load_dataset`` reads:

* ``train.jsonl`` — one row per dialogue: ``messages`` (chat format; the leading
  ``prompt_messages`` messages are exactly the LM agent's prompt in the chosen style — its system
  message, and the worked example in the ``catalog`` style — then the dialogue, with the state
  note after each user turn in the ``notes`` style), ``prompt_style``, ``seed``, ``agent``,
  ``split``, ``outcome``, ``success``, ``turns``, ``return`` and ``reward_terms`` (episode sums);
* ``README.md`` — a data set card whose YAML header names the data file (so ``load_dataset(DIR)``
  reads only it) and records how the data was made.

Agents that pick acts speak through the world's phrasings (several per act, drawn by the
env's seeded phrasing stream), so the demonstrations teach the task rather than one string. The
same arguments give the same bytes. Agents that read hidden state are refused unless asked for.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.base import is_privileged, make_agent
from agents.prompts import DEFAULT_PROMPT, PROMPTS, get_prompt, prompt_messages
from dialog_env.envs.core import PersonaRecCore
from dialog_env.evaluation import EpisodeRecord, evaluate, record_to_json
from dialog_env.io import atomic_write_jsonl, atomic_write_text
from dialog_env.persona import SPLITS
from rewards.compose import reward_specs_from_config

DATA_FILE = "train.jsonl"


class CollectError(ValueError):
    """Invalid collection arguments; the message names the field and what is allowed."""


@dataclass
class CollectConfig:
    """Arguments of ``dialog-env collect`` (one field, one docstring)."""

    agent: str = "planner"
    """the demonstrating agent: a registered name, sb3:<run>, lm:<model> or package.module:attr"""
    split: str = "train"
    """persona split"""
    episodes: int = 400
    """dialogues"""
    seed: int = 0
    """first episode seed (dialogue i uses seed + i)"""
    prompt: str = "notes"
    """prompt style the demonstrations are written in (catalog, notes)"""
    max_turns: int = 20
    """turn limit of a dialogue"""
    noise: float = 0.0
    """semantic error rate of the user channel"""
    reward_weights: Any = None
    """reward terms: {name: weight}, {name: {weight, kwargs}} or a list of {name, weight, kwargs} (a YAML/JSON string on
    the command line); empty: the default weights"""
    allow_privileged: bool = False
    """allow an agent that reads the hidden persona (e.g. oracle)"""
    overwrite: bool = False
    """replace a data set already in the output folder"""

    def validate(self) -> None:
        """Raise :class:`CollectError` naming the field and the allowed values."""
        if self.split not in (*SPLITS, "all"):
            raise CollectError(f"split: expected one of {[*SPLITS, 'all']}, got {self.split!r}")
        if self.prompt not in PROMPTS:
            raise CollectError(f"prompt: expected one of {list(PROMPTS)}, got {self.prompt!r}")
        for name in ("episodes", "max_turns"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CollectError(f"{name}: expected a positive integer, got {v!r}")
        if not 0.0 <= self.noise < 1.0:
            raise CollectError(f"noise: expected a number in [0, 1), got {self.noise!r}")
        self.reward_weights = reward_specs_from_config(self.reward_weights, error=CollectError)


def dialogue_row(core: PersonaRecCore, record: EpisodeRecord, cfg: CollectConfig) -> dict[str, Any]:
    """One data set row for a finished dialogue (the env still holds it)."""
    style = get_prompt(cfg.prompt)
    shown = prompt_messages(core, summary=False, style=style)
    n_prompt = len(shown) - len(core.messages())
    stats = record_to_json(record)
    return {
        "seed": record.seed,
        "agent": cfg.agent,
        "split": cfg.split,
        "prompt_style": style.name,
        "prompt_messages": n_prompt,
        "messages": shown,
        "outcome": record.outcome,
        "success": record.success,
        "turns": record.turns,
        "return": stats["return"],
        "reward_terms": stats["reward_terms"],
    }


def collect(cfg: CollectConfig, out: str | Path, progress: bool | None = None) -> Path:
    """Play ``cfg.episodes`` dialogues with ``cfg.agent`` and write the data set to ``out``.

    Args:
        cfg: What to collect.
        out: The data set folder.
        progress: Show a progress bar (default: when stderr is a terminal).

    Returns:
        The path of ``train.jsonl``.

    Raises:
        CollectError: Bad arguments, a privileged agent without ``allow_privileged``, or an existing
            data set without ``overwrite``.
    """
    cfg.validate()
    out = Path(out)
    if (out / DATA_FILE).exists() and not cfg.overwrite:
        raise CollectError(f"out: {out / DATA_FILE} already exists; pass --overwrite to replace it")
    agent = make_agent(cfg.agent)
    if is_privileged(agent) and not cfg.allow_privileged:
        raise CollectError(
            f"agent: {cfg.agent!r} reads the hidden persona; demonstrations must come from what an agent can "
            "hear (pass --allow-privileged to collect them anyway)"
        )
    rows: list[dict[str, Any]] = []
    bar = None
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, desc=f"collect {cfg.agent}", file=sys.stderr)

    def keep(core: PersonaRecCore, record: EpisodeRecord) -> None:
        rows.append(dialogue_row(core, record, cfg))
        if bar is not None:
            bar.update(1)

    try:
        evaluate(
            lambda: agent,
            split=cfg.split,
            episodes=cfg.episodes,
            seed=cfg.seed,
            mode="text",
            env_kwargs={
                "noise": cfg.noise,
                "max_turns": cfg.max_turns,
                **({"reward_weights": cfg.reward_weights} if cfg.reward_weights is not None else {}),
            },
            on_end=keep,
        )
    finally:
        if bar is not None:
            bar.close()
    rows.sort(key=lambda r: r["seed"])
    path = atomic_write_jsonl(out / DATA_FILE, rows)
    atomic_write_text(out / "README.md", dataset_card(cfg, rows))
    return path


def dataset_card(cfg: CollectConfig, rows: list[dict[str, Any]]) -> str:
    """The data set card: a YAML header for ``datasets`` and the provenance, then a summary."""
    n = len(rows)
    success = sum(r["success"] for r in rows) / n
    mean_return = sum(r["return"] for r in rows) / n
    mean_turns = sum(r["turns"] for r in rows) / n
    header = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}],
        "dialog_env": {**{k: v for k, v in dataclasses.asdict(cfg).items() if k != "overwrite"}, "rows": n},
    }
    return (
        "---\n"
        + yaml.safe_dump(header, sort_keys=False)
        + "---\n\n"
        + f"# Demonstrations: {cfg.agent} on {cfg.split} personas\n\n"
        + f"{n} text-mode dialogues of `dialog_env/PersonaRecText-v0` (seeds {cfg.seed}..{cfg.seed + n - 1}, "
        + f"noise {cfg.noise}), written in the `{cfg.prompt}` prompt style. Success {success:.3f}, "
        + f"mean return {mean_return:.2f}, mean turns {mean_turns:.2f}.\n\n"
        + "Load with `datasets.load_dataset(<this folder>)`; train with `dialog-env train sft --data <this folder>`.\n"
    )


def load_demonstrations(data: str | Path) -> Any:
    """The ``train`` split of a collected data set folder (or a ``.jsonl`` file), as a ``datasets.Dataset``.

    Raises:
        CollectError: Nothing to load, or rows without a ``messages`` column.
    """
    import shutil
    import tempfile

    from datasets import load_dataset

    path = Path(data)
    if path.is_dir():
        if not any(path.glob("*.jsonl")) and not (path / "README.md").is_file():
            raise CollectError(f"data: {path} holds no data set (collect one with `dialog-env collect --out {path}`)")
        source, files = str(path), None
    elif path.is_file():
        source, files = "json", str(path)
    else:
        raise CollectError(f"data: {path} does not exist")
    # A private cache, read into memory: datasets' shared cache can hand back another folder's rows
    # (two folders of one name, or a folder collected again in the same second).
    cache = tempfile.mkdtemp(prefix="dialog_env_data_")
    try:
        ds = load_dataset(source, data_files=files, split="train", cache_dir=cache, keep_in_memory=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if "messages" not in ds.column_names:
        raise CollectError(f"data: {path} has no 'messages' column (columns: {ds.column_names})")
    return ds


def main_args(args: Any) -> Path:
    """Shared by the CLI: build the config from parsed arguments and collect."""
    from dialog_env.cliargs import dataclass_values

    cfg = CollectConfig(**dataclass_values(CollectConfig, args, CollectError))
    path = collect(cfg, args.out, progress=None if not args.no_progress else False)
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    success = sum(r["success"] for r in rows) / len(rows)
    print(f"wrote {len(rows)} dialogues by {cfg.agent} (success {success:.3f}) to {path}")
    print(f"train on them with: dialog-env train sft --data {Path(args.out)}")
    return path


__all__ = ["DEFAULT_PROMPT", "CollectConfig", "CollectError", "collect", "dialogue_row", "load_demonstrations"]
