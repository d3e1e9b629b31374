"""Which agent acts contradict the user, and what the user's turn before them was.

    python scripts/contradiction_acts.py --agent sb3:runs/mppo_n15/best_model.zip \
        --user agenda adv:runs/adv_h5_s0/rounds/round_1/adversary.zip --noise 0.15 --episodes 300

For each user simulator, the agent plays ``--episodes`` act-level dialogues (seeds 0, 1, ...) and
every agent turn is counted by its intents, with the turns that contradict a fact the user truly
revealed (:func:`rewards.builtin.consistency_counts`) apart, and by the intents of the user turn the
agent was answering (as the agent's tracker understood it). It says where an attack's contradictions
come from: under a noisy channel, an assistant that confirms a misheard value contradicts the user.
Prints one JSON object per user; ``--out`` also writes them (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class _TurnCounter(gym.Wrapper):
    """Counts each agent turn by its intents, the contradicting ones, and the user turn before them."""

    def __init__(self, env: gym.Env) -> None:
        from rewards.builtin import consistency_counts

        super().__init__(env)
        self._counts = consistency_counts
        self.acts: Counter[str] = Counter()
        self.contradicting: Counter[str] = Counter()
        self.after: Counter[str] = Counter()  # contradicting turns by the user intents they answered
        self._before: str = ""

    def reset(self, **kwargs: Any) -> Any:
        out = self.env.reset(**kwargs)
        self._before = self._user_intents()
        return out

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        ctx = self.env.unwrapped.last_context
        key = "+".join(sorted({a.intent for a in ctx.agent_acts})) or "none"
        self.acts[key] += 1
        if self._counts(ctx)[1]:
            self.contradicting[key] += 1
            self.after[self._before] += 1
        self._before = self._user_intents()
        return out

    def _user_intents(self) -> str:
        return "+".join(sorted({a.intent for a in self.env.unwrapped.tracker.last_user_acts})) or "none"


def count(agent_spec: str, user: str, episodes: int, noise: float, split: str) -> dict[str, Any]:
    """Play ``episodes`` dialogues of one agent with one user; the turn counts."""
    from agents.base import make_agent
    from dialog_env.evaluation import run_episode

    env = _TurnCounter(gym.make("dialog_env/PersonaRec-v0", split=split, noise=noise, user=user))
    agent = make_agent(agent_spec)
    records = [run_episode(env, agent, seed) for seed in range(episodes)]
    return {
        "agent": agent_spec,
        "user": user,
        "noise": noise,
        "split": split,
        "episodes": episodes,
        "agent_turns": sum(r.turns for r in records),
        "turns_by_intent": dict(env.acts.most_common()),
        "contradicting_turns_by_intent": dict(env.contradicting.most_common()),
        "contradicting_turns_by_user_turn_before": dict(env.after.most_common()),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Command line: ``--agent SPEC --user U [U ...]``; returns the counts per user."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agent", required=True, help="agent spec, e.g. sb3:runs/x/best_model.zip or rule")
    p.add_argument("--user", nargs="+", default=["agenda"], help="user simulators (agenda, adv:<run>, ...)")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--noise", type=float, default=0.0, help="semantic error rate of the user channel")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the counts")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes: expected a positive integer, got {args.episodes}")
    rows = [count(args.agent, u, args.episodes, args.noise, args.split) for u in args.user]
    for row in rows:
        print(json.dumps(row))
    if args.out is not None:
        from dialog_env.io import atomic_write_json

        atomic_write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
