"""The NLI contradiction detector: held-out accuracy, agreement with the structured detector, and its cost.

    python scripts/eval_nli.py --agents random rule planner --episodes 50 --out runs/nli_eval

1. Held-out accuracy (pairs whose premise is a slot value no training pair has) for several seeds,
   each with its own held-out values.
2. Agreement on real dialogues: every agent turn of each agent's text-mode dialogues on ``test``
   personas, after the user revealed something, is judged by the structured detector (a parsed act
   contradicts a revealed fact) and by the NLI detector (a sentence contradicts one); the table gives
   both rates, their agreement and Cohen's kappa.
3. Cost: text-env steps per second of the planner with the default reward and with
   ``nli_consistency`` added (the same dialogues, in the same process; median of the repeats).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def agreement(pairs: list[tuple[bool, bool]]) -> dict[str, float]:
    """Rates, agreement and Cohen's kappa of (structured, nli) judgements."""
    n = len(pairs)
    if not n:
        return {"turns": 0}
    s = sum(a for a, _ in pairs) / n
    m = sum(b for _, b in pairs) / n
    agree = sum(a == b for a, b in pairs) / n
    chance = s * m + (1 - s) * (1 - m)
    kappa = (agree - chance) / (1 - chance) if chance < 1 else float("nan")  # undefined: one class only
    both = sum(a and b for a, b in pairs)
    return {"turns": n, "structured_rate": s, "nli_rate": m, "agreement": agree, "kappa": kappa, "both": both}


def judge_dialogues(spec: str, episodes: int, detector: Any) -> list[tuple[bool, bool]]:
    """(structured, nli) contradiction judgements of every agent turn after a first revealed fact."""
    from agents.base import make_agent
    from dialog_env.envs.persona_rec_text import PersonaRecTextEnv
    from rewards.builtin import consistency_counts

    env = PersonaRecTextEnv(split="test")
    out = []
    for seed in range(episodes):
        agent = make_agent(spec)
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        while True:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            ctx = env.last_context
            if ctx.revealed_before and ctx.agent_text:
                facts = [ctx.world.value(s, v).fact + "." for s, v in ctx.revealed_before.items()]
                nli = detector.contradictions(facts, [ctx.agent_text])[0] > 0
                out.append((consistency_counts(ctx)[1] > 0, nli))
            if terminated or truncated:
                break
    return out


def steps_per_second(reward_weights: Any, episodes: int) -> float:
    """Planner text-mode steps per second under ``reward_weights``."""
    from dialog_env.evaluation import evaluate

    t0 = time.perf_counter()
    from agents.base import make_agent

    records = evaluate(
        lambda: make_agent("planner"), split="test", episodes=episodes, mode="text",
        env_kwargs={"reward_weights": reward_weights},
    )  # fmt: skip
    return sum(r.turns for r in records) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", nargs="+", default=["random", "rule", "planner"])
    p.add_argument("--episodes", type=int, default=50, help="test dialogues per agent")
    p.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="detector seeds (held-out splits); none: skip part 1"
    )
    p.add_argument("--cost-episodes", type=int, default=20, help="dialogues per timing run")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats; 0: skip part 3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="folder for nli_eval.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dialog_env.nli import load_detector, train_detector
    from rewards import DEFAULT_WEIGHTS

    result: dict[str, Any] = {"accuracy": {}, "agreement": {}, "cost": {}}
    if args.repeats < 0 or args.episodes < 0:
        p.error("--repeats and --episodes must be >= 0")
    if args.seeds:
        print("| detector seed | train pairs | held-out pairs | held-out accuracy | entail | neutral | contradict |")
        print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        _, rep = train_detector(seed=seed)
        by = rep["test_accuracy_by_label"]
        result["accuracy"][seed] = rep
        print(f"| {seed} | {rep['train_pairs']} | {rep['test_pairs']} | {rep['test_accuracy']:.3f} | "
              f"{by['entail']:.3f} | {by['neutral']:.3f} | {by['contradict']:.3f} |")  # fmt: skip
    detector = load_detector()
    print("\n| agent | judged turns | structured rate | NLI rate | both | agreement | Cohen's kappa |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.agents:
        a = agreement(judge_dialogues(spec, args.episodes, detector))
        result["agreement"][spec] = a
        if a["turns"]:
            print(f"| {spec} | {a['turns']} | {a['structured_rate']:.3f} | {a['nli_rate']:.3f} | {a['both']} | "
                  f"{a['agreement']:.3f} | {a['kappa']:.3f} |")  # fmt: skip
    with_nli = {**DEFAULT_WEIGHTS, "nli_consistency": 1.0}
    if args.repeats:
        steps_per_second(with_nli, 2)  # warm-up: the detector is loaded and the template sentences embedded
    base, nli = [], []
    for _ in range(args.repeats):
        base.append(steps_per_second(None, args.cost_episodes))
        nli.append(steps_per_second(with_nli, args.cost_episodes))
    ratios = [n / b for n, b in zip(nli, base, strict=True)]
    result["cost"] = {"structured_steps_per_s": base, "nli_steps_per_s": nli, "ratio": ratios}
    if ratios:
        print(f"\nplanner text-env steps/s: default reward median {statistics.median(base):.1f} "
              f"(min {min(base):.1f}, max {max(base):.1f}); with nli_consistency median "
              f"{statistics.median(nli):.1f} (min {min(nli):.1f}, max {max(nli):.1f}); ratio median "
              f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")  # fmt: skip
    if args.out:
        from dialog_env.io import atomic_write_json

        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "nli_eval.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
