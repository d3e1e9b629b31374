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

**Teacher labels at another policy's states (DAgger).** With ``--roll-in POLICY`` the roll-in
policy (typically the SFT policy, ``lm:runs/sft/final_model``) plays the dialogues, and at every one
of its turns the ``--agent`` (the teacher) says what it would say there. Each labelled state is one
row: ``messages`` is the roll-in policy's dialogue up to that state, then the teacher's reply;
``train_from`` is the index of that reply, so SFT trains on it alone and reads the policy's own
earlier turns as context (:func:`agents.sft.tokenize_dialogue`). ``turn``, ``rollin`` and the
roll-in dialogue's ``outcome``/``success``/``return`` are recorded. Behaviour cloning trains only on
the teacher's states; these rows teach what to do from the states the policy itself reaches (after
its own mistakes), which is what it has to recover from. Train on both:
``dialog-env train sft --data DEMOS,LABELS --model runs/sft/final_model``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.base import is_privileged, make_agent
from agents.prompts import DEFAULT_PROMPT, PROMPTS, get_prompt, prompt_messages
from dialog_env.driver import AgentPolicy, DialogueDriver, Start, Step
from dialog_env.envs.core import PersonaRecCore
from dialog_env.evaluation import EpisodeRecord, evaluate, record_to_json
from dialog_env.io import atomic_write_jsonl, atomic_write_text, check_output_folder, publish_folder
from dialog_env.persona import SPLITS
from rewards.compose import reward_specs_from_config

DATA_FILE = "train.jsonl"
DATASET_FILES = (DATA_FILE, "README.md")
"""Files of a data set folder, published together."""


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
    user: str = "agenda"
    """user simulator: a registered name (agenda), lm:<model> (an LM-backed user) or package.module:attr"""
    reward_weights: Any = None
    """reward terms: {name: weight}, {name: {weight, kwargs}} or a list of {name, weight, kwargs} (a YAML/JSON string on
    the command line); empty: the default weights"""
    allow_privileged: bool = False
    """allow an agent that reads the hidden persona (e.g. oracle)"""
    roll_in: str = ""
    """play the dialogues with this policy and write the agent's reply at each of its states (DAgger's labels);
    empty: the agent plays"""
    batch_size: int = 16
    """dialogues in flight (an LM roll-in policy generates for all of them in one batch)"""
    overwrite: bool = False
    """replace a data set already in the output folder"""
    redact: bool = False
    """replace every persona value in the written dialogues with its slot in brackets ([diet]); for sharing, not
    for training (the state notes lose their values too)"""

    def validate(self) -> None:
        """Raise :class:`CollectError` naming the field and the allowed values."""
        if self.split not in (*SPLITS, "all"):
            raise CollectError(f"split: expected one of {[*SPLITS, 'all']}, got {self.split!r}")
        if self.prompt not in PROMPTS:
            raise CollectError(f"prompt: expected one of {list(PROMPTS)}, got {self.prompt!r}")
        for name in ("episodes", "max_turns", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CollectError(f"{name}: expected a positive integer, got {v!r}")
        if not 0.0 <= self.noise < 1.0:
            raise CollectError(f"noise: expected a number in [0, 1), got {self.noise!r}")
        self.reward_weights = reward_specs_from_config(self.reward_weights, error=CollectError)
        from dialog_env.users.registry import check_user_spec

        check_user_spec(self.user, CollectError)

    def env_kwargs(self) -> dict[str, Any]:
        """The text env's arguments of these dialogues."""
        return {
            "split": self.split,
            "noise": self.noise,
            "max_turns": self.max_turns,
            "user": self.user,
            **({"reward_weights": self.reward_weights} if self.reward_weights is not None else {}),
        }


def dialogue_row(core: PersonaRecCore, record: EpisodeRecord, cfg: CollectConfig) -> dict[str, Any]:
    """One data set row for a finished dialogue (the env still holds it)."""
    style = get_prompt(cfg.prompt)
    shown = prompt_messages(core, summary=False, style=style)
    n_prompt = len(shown) - len(core.messages())
    stats = record_to_json(record)
    return {
        "seed": record.seed,
        "agent": cfg.agent,
        "user": cfg.user,
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

    A collection survives being stopped: each finished dialogue is appended to a journal beside
    ``out`` (``.<name>.journal.jsonl``, first line the arguments), and the same command run again
    plays only the dialogues the journal lacks, then publishes the whole set and deletes the
    journal. Against the agenda user the result equals an uninterrupted run's; against an LM user
    the decisions and outcomes do too (they are the agenda policy's), the LM's wording of the
    resumed dialogues may differ, as it depends on the dialogues in flight with them.

    Returns:
        The path of ``train.jsonl``.

    Raises:
        CollectError: Bad arguments, a privileged agent without ``allow_privileged``, an existing
            data set without ``overwrite``, or a journal of a collection with other arguments.
    """
    cfg.validate()
    out = Path(out)
    if (out / DATA_FILE).exists() and not cfg.overwrite:
        raise CollectError(f"out: {out / DATA_FILE} already exists; pass --overwrite to replace it")
    try:
        check_output_folder(out, DATASET_FILES, "out")
    except ValueError as e:
        raise CollectError(str(e)) from None
    agent = make_agent(cfg.agent)
    if is_privileged(agent) and not cfg.allow_privileged:
        raise CollectError(
            f"agent: {cfg.agent!r} reads the hidden persona; demonstrations must come from what an agent can "
            "hear (pass --allow-privileged to collect them anyway)"
        )
    if cfg.roll_in:
        return write_dataset(out, cfg, collect_labels(cfg, agent, progress))
    journal = journal_path(out)
    rows = resume_journal(journal, cfg)
    done = {r["seed"] for r in rows}
    todo = [s for s in range(cfg.seed, cfg.seed + cfg.episodes) if s not in done]
    if rows:
        print(f"collect: resuming from {journal}: {len(rows)} of {cfg.episodes} dialogues done", file=sys.stderr)
    bar = None
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, initial=len(rows), desc=f"collect {cfg.agent}", file=sys.stderr)
    log = open(journal, "a", encoding="utf-8")  # noqa: SIM115 - closed in the finally below

    def keep(core: PersonaRecCore, record: EpisodeRecord) -> None:
        rows.append(dialogue_row(core, record, cfg))
        log.write(json.dumps(rows[-1]) + "\n")
        log.flush()  # a killed run keeps every finished dialogue
        if bar is not None:
            bar.update(1)

    env_kwargs = cfg.env_kwargs()
    del env_kwargs["split"]
    # Against an LM user, dialogues run batch_size at a time so each round's user turns are phrased in
    # one batched call (one agent per dialogue slot; the first is the one checked above).
    agents = iter([agent])
    try:
        if todo:
            evaluate(
                lambda: next(agents, None) or make_agent(cfg.agent),
                split=cfg.split,
                seeds=todo,
                mode="text",
                env_kwargs=env_kwargs,
                on_end=keep,
                in_flight=1 if cfg.user == "agenda" else cfg.batch_size,
                batch_size=cfg.batch_size,
            )
    finally:
        log.close()
        if bar is not None:
            bar.close()
    rows.sort(key=lambda r: r["seed"])
    path = write_dataset(out, cfg, rows)
    journal.unlink(missing_ok=True)
    return path


JOURNAL_KEYS = ("agent", "split", "episodes", "seed", "prompt", "max_turns", "noise", "user", "reward_weights")
"""The arguments a journal must share with the command that resumes it (what the rows depend on)."""


def journal_path(out: Path) -> Path:
    """Where a collection into ``out`` keeps its finished dialogues until it publishes them."""
    return out.parent / f".{out.name}.journal.jsonl"


def resume_journal(journal: Path, cfg: CollectConfig) -> list[dict[str, Any]]:
    """The rows a stopped collection with the same arguments left (none if there is no journal).

    Rewrites the journal with its header and those rows (dropping a line a kill cut short), so the
    caller can append to it. A journal of other arguments is an error, or discarded with ``overwrite``.
    """
    header = {"journal": 1, **{k: getattr(cfg, k) for k in JOURNAL_KEYS}}
    header = json.loads(json.dumps(header))  # as read back (tuples become lists)
    rows: list[dict[str, Any]] = []
    if journal.exists():
        lines = journal.read_text(encoding="utf-8").splitlines()
        try:
            found = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            found = None
        if found != header and not cfg.overwrite:
            raise CollectError(
                f"out: {journal} holds a stopped collection with other arguments ({found}); rerun it with the same "
                "arguments to resume it, or pass --overwrite to start over"
            )
        if found == header:
            for line in lines[1:]:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # the line a kill cut short; that dialogue is played again
                    break
    journal.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(journal, [header, *rows])
    return rows


def write_dataset(out: Path, cfg: CollectConfig, rows: list[dict[str, Any]]) -> Path:
    """Publish ``train.jsonl`` and its card together (see :func:`dialog_env.io.publish_folder`)."""
    if cfg.redact:
        from dialog_env.safety import redact_rows

        rows = redact_rows(rows)
    with publish_folder(out, DATASET_FILES, "out") as staging:
        atomic_write_jsonl(staging / DATA_FILE, rows)
        atomic_write_text(staging / "README.md", dataset_card(cfg, rows))
    return out / DATA_FILE


class TeacherLabels:
    """A driver policy: the roll-in policy acts; at each of its states the teacher's reply is recorded.

    One teacher instance per env slot (agents keep one dialogue's state); the teacher sees the same
    agent view and observations as the roll-in policy, and its replies never reach the user. It
    phrases them from a stream of its own (seeded by the dialogue's seed), so the roll-in policy's
    dialogue is exactly the one it plays alone.

    Args:
        rollin: The roll-in policy's driver policy (:class:`dialog_env.driver.AgentPolicy`).
        teachers: One teacher agent per env slot.
        style: The prompt style the rows are written in.
    """

    def __init__(self, rollin: AgentPolicy, teachers: list[Any], style: Any) -> None:
        self.rollin, self.teacher, self.style = rollin, AgentPolicy(teachers), style
        self.index: dict[int, int] = {}  # slot -> dialogue index
        self.views: dict[int, Any] = {}
        self.phrasing: dict[int, random.Random] = {}  # slot -> the teacher's phrasing stream
        self.labels: dict[int, list[list[dict[str, str]]]] = {}  # dialogue index -> labelled chats

    def begin(self, slot: int, start: Start) -> None:
        """Reset both on the dialogue's view."""
        self.rollin.begin(slot, start)
        self.teacher.begin(slot, start)
        self.index[slot], self.views[slot] = start.index, start.view
        self.phrasing[slot] = random.Random(f"teacher labels {start.seed}")
        self.labels[start.index] = []

    def act(self, slots: Sequence[int]) -> list[Any]:
        """Record the teacher's reply at each state, then act with the roll-in policy."""
        for slot in slots:
            view = self.views[slot]
            with view.phrasing_stream(self.phrasing[slot]):
                (reply,) = self.teacher.act([slot])
                if not isinstance(reply, str):  # an act id (act-mode teacher in the text env): its utterance
                    reply = view.act_to_text(int(reply))
            chat = prompt_messages(view, summary=False, style=self.style)
            self.labels[self.index[slot]].append([*chat, {"role": "assistant", "content": reply}])
        return self.rollin.act(slots)

    def observe(self, slot: int, step: Step) -> bool:
        """Pass the outcome to both."""
        self.teacher.observe(slot, step)
        return self.rollin.observe(slot, step)


def collect_labels(cfg: CollectConfig, teacher: Any, progress: bool | None) -> list[dict[str, Any]]:
    """The rows of ``collect --roll-in``: the teacher's reply at every state the roll-in policy reaches."""
    import gymnasium as gym

    rollin = make_agent(cfg.roll_in)
    if is_privileged(rollin) and not cfg.allow_privileged:
        raise CollectError(
            f"roll_in: {cfg.roll_in!r} reads the hidden persona; the states must be ones a deployable policy "
            "reaches (pass --allow-privileged to collect them anyway)"
        )
    n = min(cfg.batch_size if hasattr(rollin, "act_batch") else 1, cfg.episodes)
    envs = [gym.make("dialog_env/PersonaRecText-v0", **cfg.env_kwargs()) for _ in range(n)]
    teachers = [teacher, *(make_agent(cfg.agent) for _ in range(n - 1))]
    style = get_prompt(cfg.prompt)
    policy = TeacherLabels(AgentPolicy(rollin if n > 1 else [rollin]), teachers, style)
    rows: list[dict[str, Any]] = []
    bar = None
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, desc=f"label {cfg.roll_in} with {cfg.agent}", file=sys.stderr)

    def keep(core: PersonaRecCore, record: EpisodeRecord) -> None:
        stats = record_to_json(record)
        n_prompt = len(prompt_messages(core, summary=False, style=style)) - len(core.messages())
        for turn, messages in enumerate(policy.labels.pop(stats["seed"] - cfg.seed)):
            rows.append({
                "seed": record.seed,
                "turn": turn,
                "agent": cfg.agent,
                "user": cfg.user,
                "rollin": cfg.roll_in,
                "split": cfg.split,
                "prompt_style": style.name,
                "prompt_messages": n_prompt,
                "train_from": len(messages) - 1,
                "messages": messages,
                "outcome": record.outcome,
                "success": record.success,
                "turns": record.turns,
                "return": stats["return"],
                "reward_terms": stats["reward_terms"],
            })  # fmt: skip
        if bar is not None:
            bar.update(1)

    try:
        DialogueDriver(envs).play(policy, range(cfg.seed, cfg.seed + cfg.episodes), on_end=keep)
    finally:
        if bar is not None:
            bar.close()
        for e in envs:
            e.close()
    rows.sort(key=lambda r: (r["seed"], r["turn"]))
    return rows


def dataset_card(cfg: CollectConfig, rows: list[dict[str, Any]]) -> str:
    """The data set card: a YAML header for ``datasets`` and the provenance, then a summary."""
    n = len(rows)
    dialogues = list({r["seed"]: r for r in rows}.values())  # one row each (labelled rows: one per state)
    success = sum(r["success"] for r in dialogues) / len(dialogues)
    mean_return = sum(r["return"] for r in dialogues) / len(dialogues)
    mean_turns = sum(r["turns"] for r in dialogues) / len(dialogues)
    header = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}],
        "dialog_env": {**{k: v for k, v in dataclasses.asdict(cfg).items() if k != "overwrite"}, "rows": n},
    }
    if cfg.roll_in:
        return (
            "---\n"
            + yaml.safe_dump(header, sort_keys=False)
            + "---\n\n"
            + f"# Teacher labels: {cfg.agent} at the states of {cfg.roll_in} on {cfg.split} personas\n\n"
            + f"{n} labelled states of {len(dialogues)} text-mode dialogues played by `{cfg.roll_in}` (seeds "
            + f"{cfg.seed}..{cfg.seed + cfg.episodes - 1}, noise {cfg.noise}, user `{cfg.user}`), "
            + f"each followed by `{cfg.agent}`'s reply "
            + f"(`train_from` marks it), in the `{cfg.prompt}` prompt style. The roll-in policy's success "
            + f"{success:.3f}, mean return {mean_return:.2f}, mean turns {mean_turns:.2f}.\n\n"
            + "Train on them with the demonstrations: `dialog-env train sft --data <demonstrations>,<this folder>`.\n"
        )
    return (
        "---\n"
        + yaml.safe_dump(header, sort_keys=False)
        + "---\n\n"
        + f"# Demonstrations: {cfg.agent} on {cfg.split} personas\n\n"
        + f"{n} text-mode dialogues of `dialog_env/PersonaRecText-v0` (seeds {cfg.seed}..{cfg.seed + n - 1}, "
        + f"noise {cfg.noise}, user `{cfg.user}`), written in the `{cfg.prompt}` prompt style. Success {success:.3f}, "
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
    dialogues = list({r["seed"]: r for r in rows}.values())
    success = sum(r["success"] for r in dialogues) / len(dialogues)
    if cfg.roll_in:
        print(
            f"wrote {len(rows)} states of {len(dialogues)} dialogues by {cfg.roll_in} (success {success:.3f}), "
            f"labelled by {cfg.agent}, to {path}"
        )
        print(f"train on them with: dialog-env train sft --data <demonstrations>,{Path(args.out)}")
        return path
    print(f"wrote {len(rows)} dialogues by {cfg.agent} (success {success:.3f}) to {path}")
    print(f"train on them with: dialog-env train sft --data {Path(args.out)}")
    return path


__all__ = [
    "DEFAULT_PROMPT",
    "CollectConfig",
    "CollectError",
    "TeacherLabels",
    "collect",
    "collect_labels",
    "dialogue_row",
    "load_demonstrations",
]
