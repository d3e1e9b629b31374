"""The ``dialog-env`` command line: simulate, play, eval, benchmark, collect, train, demo, personas.

The CLI only parses arguments and calls the library (``dialog_env.evaluation``, ``agents``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

import dialog_env
from dialog_env.evaluation import (
    METRIC_LABELS,
    METRICS,
    MODES,
    evaluate,
    paired_difference,
    record_to_json,
    summarize,
)
from dialog_env.interrupt import EXIT_INTERRUPTED, TrainingInterrupted
from dialog_env.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, check_output_folder, publish_folder
from dialog_env.persona import SPLITS, PersonaSampler, save_personas
from dialog_env.tracker import TRACKER_MODES
from dialog_env.users import DEFAULT_USER
from dialog_env.world import load_world
from rewards.compose import reward_specs_from_config

NOISE_LEVELS = (0.0, 0.15, 0.30)


def _agents() -> dict[str, Any]:
    from agents import AGENTS

    return AGENTS


def _noise(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"noise must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"noise must be in [0, 1), got {x}")
    return x


def _positive(text: str) -> int:
    try:
        x = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if x < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {x}")
    return x


def _agent_spec(text: str) -> str:
    spec = text.partition("=")[2] if "=" in text.split(":")[0] else text  # "label=spec" in benchmark
    if spec in _agents() or ":" in spec:
        return text
    raise argparse.ArgumentTypeError(
        f"unknown agent {text!r}; choose from {sorted(_agents())}, sb3:<run folder or .zip>, or 'package.module:attr'"
    )


def _env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test", choices=[*SPLITS, "all"], help="persona split (default: test)")
    p.add_argument("--mode", default="act", choices=list(MODES), help="act (PersonaRec-v0) or text (PersonaRecText-v0)")
    p.add_argument(
        "--noise", type=_noise, default=0.0, help="semantic error rate of the user channel, e.g. 0, 0.15, 0.3"
    )
    p.add_argument("--tracker", default="rule", choices=list(TRACKER_MODES), help="dialogue-state tracker")
    p.add_argument("--reward-weights", default=None, help=REWARD_WEIGHTS_HELP)
    p.add_argument(
        "--user",
        default=DEFAULT_USER,
        help="user simulator: a registered name (agenda), 'package.module:attr', or an entry point of dialog_env.users",
    )
    p.add_argument("--world", default=None, help="world file (YAML/JSON); default: the shipped world")
    p.add_argument("--persona-file", default=None, help="JSONL personas to draw from instead of the split")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episode i uses seed+i)")
    p.add_argument(
        "--max-turns",
        type=_positive,
        default=None,
        help="truncate dialogues after this many agent turns (default: the user's patience ends them)",
    )


REWARD_WEIGHTS_HELP = (
    "reward terms as YAML/JSON: {name: weight}, {name: {weight: w, kwargs: {...}}} or a list of "
    "{name, weight, kwargs}; default: the default weights"
)


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"noise": args.noise, "tracker": args.tracker}
    if getattr(args, "user", DEFAULT_USER) != DEFAULT_USER:
        kw["user"] = args.user
    specs = reward_specs_from_config(getattr(args, "reward_weights", None), "--reward-weights")
    if specs is not None:
        kw["reward_weights"] = specs
    if args.world:
        kw["world"] = args.world
    if args.persona_file:
        kw["persona_file"] = args.persona_file
    if getattr(args, "max_turns", None):
        kw["max_turns"] = args.max_turns
    return kw


def build_parser() -> argparse.ArgumentParser:
    """The ``dialog-env`` argument parser."""
    p = argparse.ArgumentParser(
        prog="dialog-env", description="Dialogue policies against a simulated user with a hidden persona."
    )
    p.add_argument("--version", action="version", version=f"dialog-env {dialog_env.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="print transcripts of an agent with per-term rewards")
    s.add_argument(
        "--agent", type=_agent_spec, default="rule", help=f"agent: one of {sorted(_agents())} or module:attr"
    )
    s.add_argument("--episodes", type=_positive, default=3)
    _env_args(s)

    s = sub.add_parser("play", help="type the agent's turns yourself against the simulated user")
    s.add_argument("--reveal", action="store_true", help="show the hidden persona after the dialogue")
    _env_args(s)

    s = sub.add_parser("eval", help="agents x split x episodes -> metrics table with 95%% CIs")
    s.add_argument("--agents", type=_agent_spec, nargs="+", default=["random", "rule", "oracle"])
    s.add_argument("--episodes", type=_positive, default=300)
    s.add_argument("--out", default=None, help="run folder for results.json, results.md, transcripts.jsonl")
    s.add_argument("--transcripts", type=int, default=5, help="transcripts kept per agent in --out (default 5)")
    s.add_argument("--redact", action="store_true", help="replace persona values in written transcripts with [slot]")
    _quality_args(s)
    s.add_argument(
        "--baseline",
        default=None,
        help="label of one of --agents: also print every other agent's paired difference to it (same dialogues)",
    )
    s.add_argument(
        "--baseline-from",
        default=None,
        metavar="DIR",
        help="take the --baseline agent's dialogues from an earlier `eval --out DIR` with the same split, episodes, "
        "seed and env settings instead of playing them again",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _env_args(s)

    s = sub.add_parser("benchmark", help="agents x splits x noise levels x seeds -> leaderboard (JSON, Markdown, PNG)")
    s.add_argument(
        "--agents",
        type=_agent_spec,
        nargs="+",
        default=["random", "rule", "oracle"],
        help="agent specs, optionally labelled label=spec; same-label specs are pooled (e.g. training seeds)",
    )
    s.add_argument("--splits", nargs="+", default=["test", "test_unseen"], choices=[*SPLITS, "all"])
    s.add_argument("--noise", type=_noise, nargs="+", default=list(NOISE_LEVELS))
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluation seeds (persona sets)")
    s.add_argument("--episodes", type=_positive, default=200, help="episodes per agent spec, split, noise and seed")
    s.add_argument("--mode", default="act", choices=list(MODES))
    s.add_argument("--transcripts", type=int, default=2, help="transcripts kept per agent and condition")
    s.add_argument("--redact", action="store_true", help="replace persona values in written transcripts with [slot]")
    s.add_argument("--user", default=DEFAULT_USER, help="user simulator (see --user of eval)")
    s.add_argument("--reward-weights", default=None, help=REWARD_WEIGHTS_HELP)
    _quality_args(s)
    s.add_argument("--out", default="runs/benchmark", help="output folder")

    s = sub.add_parser(
        "collect", help="play dialogues with a non-privileged agent and write them as a chat data set (for SFT)"
    )
    from agents.collect import CollectConfig
    from dialog_env.cliargs import add_dataclass_arguments

    add_dataclass_arguments(s, CollectConfig)
    s.add_argument("--out", required=True, help="data set folder (train.jsonl + README.md card)")
    s.add_argument("--config", default=None, help="YAML file of the fields above; flags override it")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("train", help="train a policy")
    train_sub = s.add_subparsers(dest="trainer", required=True)
    from agents.sb3 import build_train_parser

    build_train_parser(train_sub.add_parser("sb3", help="stable-baselines3: ppo, a2c, dqn, maskable_ppo"))
    from agents.lm_train import build_lm_parser

    build_lm_parser(train_sub.add_parser("lm", help="an LM policy with TRL's GRPOTrainer (multi-turn rollouts)"))
    from agents.sft import build_sft_parser

    build_sft_parser(train_sub.add_parser("sft", help="an LM policy on demonstrations with TRL's SFTTrainer"))
    from agents.lm_meta import build_meta_parser

    build_meta_parser(
        train_sub.add_parser("meta", help="an LM policy that adapts to a returning user: Reptile over persona tasks")
    )
    from agents.adversarial import build_adversarial_parser

    build_adversarial_parser(
        train_sub.add_parser("adversarial", help="alternating rounds: a truthful-but-tricky user vs the assistant")
    )

    s = sub.add_parser(
        "demo", help="train MaskablePPO briefly, benchmark it against the baselines, print the leaderboard"
    )
    s.add_argument("--steps", type=_positive, default=300_000, help="training env steps (default 300000, ~3 min)")
    s.add_argument("--episodes", type=_positive, default=300, help="benchmark episodes per agent and split")
    s.add_argument(
        "--eval-episodes", type=_positive, default=200, help="valid-split episodes per evaluation in training"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/demo", help="parent folder; each demo gets a timestamped folder in it")

    s = sub.add_parser("personas", help="write personas of a split to JSONL")
    s.add_argument("--split", default="test", choices=[*SPLITS, "all"])
    s.add_argument("-n", "--count", type=_positive, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--world", default=None)
    s.add_argument("-o", "--output", required=True, help="JSONL file to write")
    return p


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run an agent and print each dialogue with its reward terms."""
    from agents import make_agent
    from dialog_env.evaluation import run_episode

    env = gym.make(MODES[args.mode], split=args.split, render_mode="ansi", **_env_kwargs(args))
    agent = make_agent(args.agent)
    for i in range(args.episodes):
        rec = run_episode(env, agent, seed=args.seed + i)
        print(
            f"=== episode {i} (seed {args.seed + i}): {rec.outcome}, return {rec.return_:+.2f}, {rec.turns} turns ==="
        )
        print(env.render())
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    """Interactive: the person at the keyboard is the agent."""
    env = gym.make("dialog_env/PersonaRecText-v0", split=args.split, render_mode="ansi", **_env_kwargs(args))
    core = env.unwrapped
    _, info = env.reset(seed=args.seed)
    print("You are the assistant. Find something the user will accept. /quit to stop, /help for help.")
    print(f"User: {info['user_text']}")
    total = 0.0
    while True:
        try:
            line = input("You: ")
        except EOFError:
            print()
            break
        if line.strip() == "/quit":
            break
        if line.strip() == "/help":
            print("Ask about the user (diet, pets, hobbies, music, ...), confirm what you heard, recommend an item by")
            print("name, or say goodbye. Items: " + ", ".join(it.name for it in core.world.items))
            continue
        _, reward, terminated, truncated, info = env.step(line)
        total += reward
        terms = "  ".join(f"{k}={v:+.2f}" for k, v in info["reward_terms"].items())
        print(f"User: {info['user_text']}")
        print(f"    [reward {reward:+.2f}: {terms}]  (understood: {', '.join(info['agent_acts'])})")
        if terminated or truncated:
            print(f"Dialogue over: {info['outcome'] or 'time limit'}; return {total:+.2f}.")
            break
    if args.reveal:
        print("The hidden persona was: " + " ".join(core.persona.facts(core.world)))
    return 0


def _table(summary: dict[str, dict[str, dict[str, float]]], privileged: Sequence[str] = ()) -> str:
    from dialog_env.benchmark import PRIVILEGED_MARK

    head = "| agent | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |"
    sep = "|---|" + "---|" * len(METRICS)
    rows = [head, sep]
    for agent, s in summary.items():
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['ci95']:.3f}" for m in METRICS]
        label = f"{agent} {PRIVILEGED_MARK}" if agent in privileged else agent
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _earlier_records(folder: Path, label: str, args: argparse.Namespace, env_kwargs: dict[str, Any]) -> list[Any]:
    """``label``'s records from an earlier ``eval --out`` folder, checked to be the dialogues this run plays.

    Raises:
        ValueError: No such folder or agent, or the folder's split, episodes, seed or env settings differ.
    """
    from dialog_env.evaluation import record_from_json

    results, rows = folder / "results.json", folder / "episodes.jsonl"
    if not results.is_file() or not rows.is_file():
        raise ValueError(f"{folder} holds no results.json and episodes.jsonl (write them with `eval --out {folder}`)")
    config = json.loads(results.read_text(encoding="utf-8"))["config"]
    wanted = {"split": args.split, "episodes": args.episodes, "seed": args.seed, **env_kwargs}
    for key in sorted(set(wanted) | (set(config) - {"mode", "modes", "privileged", "agents"})):
        if config.get(key) != wanted.get(key):
            raise ValueError(
                f"{folder} was played with {key}={config.get(key)!r}, this run with {key}={wanted.get(key)!r}: "
                "not the same dialogues"
            )
    with open(rows, encoding="utf-8") as f:
        records = [record_from_json(d) for line in f if (d := json.loads(line))["agent"] == label]
    if not records:
        agents = sorted({json.loads(line)["agent"] for line in rows.read_text(encoding="utf-8").splitlines()})
        raise ValueError(f"{folder} has no dialogues of {label!r} (agents: {agents})")
    return records


EVAL_OUTPUTS = ("results.json", "results.md", "transcripts.jsonl", "episodes.jsonl")
"""Files of an ``eval --out`` folder."""


def _quality_args(s: argparse.ArgumentParser) -> None:
    """The text-quality flags of ``eval`` and ``benchmark``."""
    s.add_argument(
        "--quality",
        action="store_true",
        help="also report text quality: distinct-1/2, words per turn, engagement (and BLEU / perplexity, below)",
    )
    s.add_argument("--references", default=None, help="--quality: BLEU against this demonstration set's agent turns")
    s.add_argument("--quality-lm", default=None, help="--quality: perplexity of the agent's turns under this LM")
    s.add_argument(
        "--quality-nli",
        action="store_true",
        help="--quality: PAML's consistency C of the agent's turns against the facts the user revealed (NLI detector)",
    )


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate agents and print (and optionally save) the metrics table."""
    from agents import make_agent

    progress = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        def progress(it):  # type: ignore[no-untyped-def]
            return tqdm(it, total=args.episodes, leave=False, file=sys.stderr)

    env_kwargs = _env_kwargs(args)
    if args.out:
        check_output_folder(Path(args.out), EVAL_OUTPUTS, "--out")
    if (args.references or args.quality_lm or args.quality_nli) and not args.quality:
        print("error: --references, --quality-lm and --quality-nli go with --quality", file=sys.stderr)
        return 2
    references = None
    if args.references:
        from dialog_env.quality import load_references

        try:
            references = load_references(args.references)
        except ValueError as e:
            print(f"error: --references: {e}", file=sys.stderr)
            return 2
    from dialog_env.benchmark import parse_agent_entry

    entries = [parse_agent_entry(e) for e in args.agents]
    labels = [label for label, _ in entries]
    earlier: list[Any] | None = None
    if args.baseline_from is not None:
        if args.baseline is None:
            print(
                "error: --baseline-from: give the label of the agent to take from it with --baseline", file=sys.stderr
            )
            return 2
        if args.baseline in labels:
            print(
                f"error: --baseline-from: {args.baseline!r} is taken from {args.baseline_from}; drop it from --agents",
                file=sys.stderr,
            )
            return 2
        try:
            earlier = _earlier_records(Path(args.baseline_from), args.baseline, args, env_kwargs)
        except ValueError as e:
            print(f"error: --baseline-from: {e}", file=sys.stderr)
            return 2
    elif args.baseline is not None and args.baseline not in labels:
        print(f"error: --baseline: expected one of the agents' labels {labels}, got {args.baseline!r}", file=sys.stderr)
        return 2
    summary: dict[str, dict[str, dict[str, float]]] = {}
    played_records: dict[str, list[Any]] = {}
    modes: dict[str, str] = {}
    privileged: list[str] = []  # agents that read the hidden persona: marked in the table
    transcripts: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for label, spec in entries:
        records = evaluate(
            lambda spec=spec: make_agent(spec),
            split=args.split,
            episodes=args.episodes,
            seed=args.seed,
            mode=args.mode,
            env_kwargs=env_kwargs,
            progress=progress,
        )
        summary[label] = summarize(records)
        played_records[label] = records
        modes[label] = records[0].mode  # an agent may need its own mode (lm: agents play text)
        if records[0].privileged:
            privileged.append(label)
        transcripts += [{"agent": label, **record_to_json(r, with_messages=True)} for r in records[: args.transcripts]]
    elapsed = time.perf_counter() - t0
    played = sorted(set(modes.values()))
    mode = played[0] if len(played) == 1 else ", ".join(f"{k}: {v}" for k, v in modes.items())
    title = f"split={args.split} mode={mode} noise={args.noise} episodes={args.episodes} seed={args.seed}"
    table = _table(summary, privileged)
    print(title)
    print(table)
    print("(mean ± 95% CI half-width over episodes)")
    paired: dict[str, dict[str, dict[str, float]]] = {}
    if args.baseline is not None:
        base = earlier if earlier is not None else played_records[args.baseline]
        paired = {k: paired_difference(v, base) for k, v in played_records.items() if k != args.baseline}
        diff_table = _table(paired)
        print(f"\npaired difference to {args.baseline} (same dialogues):")
        print(diff_table)
        print("(mean difference ± 95% CI half-width over dialogues; a CI that excludes 0 is significant)")
    text_quality: dict[str, dict[str, float]] = {}
    if args.quality:
        from dialog_env.quality import quality, quality_table

        text_quality = {
            k: quality(v, references, args.quality_lm, nli=args.quality_nli) for k, v in played_records.items()
        }
        print("\ntext quality (over all dialogues of each agent):")
        print(quality_table(text_quality))
    if args.out:
        out = Path(args.out)
        config = {
            "split": args.split,
            "mode": played[0] if len(played) == 1 else "mixed",
            "modes": modes,
            "privileged": privileged,
            "episodes": args.episodes,
            "seed": args.seed,
            "agents": args.agents,
            **env_kwargs,
        }
        results: dict[str, Any] = {"config": config, "results": summary, "seconds": elapsed}
        markdown = f"# Evaluation\n\n{title}\n\n{table}\n\nMean ± 95% CI half-width over episodes.\n"
        if paired:
            results["paired"] = {"baseline": args.baseline, "baseline_from": args.baseline_from, "difference": paired}
            markdown += (
                f"\n## Paired difference to {args.baseline}\n\n{_table(paired)}\n\n"
                "Mean of the per-dialogue difference ± 95% CI half-width (same personas and goals).\n"
            )
        if text_quality:
            from dialog_env.quality import quality_table

            results["quality"] = text_quality
            markdown += f"\n## Text quality\n\n{quality_table(text_quality)}\n"
        episodes = [{"agent": k, **record_to_json(r)} for k, rs in played_records.items() for r in rs]
        with publish_folder(out, EVAL_OUTPUTS) as staging:
            atomic_write_json(staging / "results.json", results)
            atomic_write_text(staging / "results.md", markdown)
            if args.redact:
                from dialog_env.safety import redact_rows

                transcripts = redact_rows(transcripts)
            atomic_write_jsonl(staging / "transcripts.jsonl", transcripts)
            atomic_write_jsonl(staging / "episodes.jsonl", episodes)
        print(
            f"results: {out / 'results.json'}, {out / 'results.md'}; transcripts: {out / 'transcripts.jsonl'}; "
            f"every dialogue's metrics: {out / 'episodes.jsonl'}"
        )
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark and print the leaderboard."""
    from dialog_env.benchmark import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig(
        agents=args.agents,
        splits=args.splits,
        noise=args.noise,
        seeds=args.seeds,
        episodes=args.episodes,
        mode=args.mode,
        transcripts=args.transcripts,
        reward_weights=args.reward_weights,
        user=args.user,
        redact=args.redact,
        quality=args.quality,
        references=args.references,
        quality_lm=args.quality_lm,
        quality_nli=args.quality_nli,
    )
    board = run_benchmark(cfg, args.out, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print((Path(args.out) / "leaderboard.md").read_text())
    print(f"leaderboard: {Path(args.out) / 'leaderboard.json'}; charts: {', '.join(board['charts'])}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """Collect demonstrations."""
    from agents.collect import main_args

    main_args(args)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) a policy."""
    if args.trainer == "lm":
        from agents.lm_train import run_lm_from_args

        run_lm_from_args(args)
    elif args.trainer == "sft":
        from agents.sft import run_sft_from_args

        run_sft_from_args(args)
    elif args.trainer == "meta":
        from agents.lm_meta import run_meta_from_args

        run_meta_from_args(args)
    elif args.trainer == "adversarial":
        from agents.adversarial import run_from_args as run_adversarial_from_args

        print(f"run folder: {run_adversarial_from_args(args)}")
    else:
        from agents.sb3 import run_from_args

        run_from_args(args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: a short MaskablePPO run, then the benchmark against random / rule / oracle."""
    from agents.sb3 import TrainConfig, train
    from dialog_env.benchmark import BenchmarkConfig, run_benchmark

    root = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    freq = max(1, args.steps // 4)
    cfg = TrainConfig(
        algo="maskable_ppo",
        total_timesteps=args.steps,
        seed=args.seed,
        exp_name="demo",
        eval_freq=freq,
        checkpoint_freq=freq,
        eval_episodes=args.eval_episodes,
        progress_bar=sys.stderr.isatty(),
    )
    print(
        f"[1/2] training MaskablePPO for {args.steps} steps on dialog_env/PersonaRec-v0 (train personas)...", flush=True
    )
    run = train(cfg, run_dir=root / "maskable_ppo")
    print(f"[2/2] benchmarking on held-out personas ({args.episodes} episodes per agent and split)...", flush=True)
    bench = BenchmarkConfig(
        agents=["random", "rule", "oracle", f"maskable_ppo=sb3:{run}"],
        splits=["test", "test_unseen"],
        noise=[0.0],
        seeds=[args.seed],
        episodes=args.episodes,
    )
    board = run_benchmark(bench, root / "benchmark")
    print((root / "benchmark" / "leaderboard.md").read_text())
    print(f"learning curve: {run / 'learning_curve.png'}")
    print(f"leaderboard: {root / 'benchmark' / 'leaderboard.md'} (and .json); charts: {', '.join(board['charts'])}")
    print(f"TensorBoard: tensorboard --logdir {run / 'tb'}")
    return 0


def cmd_personas(args: argparse.Namespace) -> int:
    """Write a reproducible persona set of a split."""
    world = load_world(args.world)
    personas = PersonaSampler(world, args.split).sample_many(args.count, args.seed)
    save_personas(args.output, personas)
    print(f"wrote {len(personas)} {args.split} personas to {args.output}")
    return 0


COMMANDS = {
    "simulate": cmd_simulate,
    "play": cmd_play,
    "eval": cmd_eval,
    "benchmark": cmd_benchmark,
    "collect": cmd_collect,
    "train": cmd_train,
    "demo": cmd_demo,
    "personas": cmd_personas,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dialog-env`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingInterrupted as e:
        print(f"dialog-env {args.command}: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as e:
        print(f"dialog-env {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
