"""Train a stable-baselines3 agent (PPO, A2C, DQN, MaskablePPO) on a PersonaRec environment.

    python scripts/train_sb3.py --algo maskable_ppo --total-timesteps 200000 --seed 0
    python scripts/train_sb3.py --resume runs/<run folder>        # after an interruption

Same as ``dialog-env train sb3 ...``. See agents/sb3/ for the run folder's contents.
"""

import sys

from agents.sb3 import ConfigError, main
from dialog_env.interrupt import EXIT_INTERRUPTED, TrainingInterrupted

if __name__ == "__main__":
    try:
        main()
    except TrainingInterrupted as e:
        print(f"train_sb3: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except ConfigError as e:
        print(f"train_sb3: error: {e}", file=sys.stderr)
        sys.exit(2)
