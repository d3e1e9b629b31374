"""Benchmark agents on held-out personas: agents x splits x noise levels x seeds -> leaderboard.

    python scripts/benchmark.py --agents random rule oracle mppo=sb3:runs/<run> --episodes 200

Same as ``dialog-env benchmark ...``: writes leaderboard.json, leaderboard.md, PNG bar charts
and transcripts.jsonl into --out.
"""

import sys

from dialog_env.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
