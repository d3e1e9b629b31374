"""Fine-tune an LM policy on demonstrations with TRL's SFTTrainer (LoRA by default).

    dialog-env collect --agent planner --split train --episodes 400 --out data/planner
    python scripts/train_sft.py --data data/planner --run-dir runs/sft          # embedded SmolLM2-135M
    python scripts/train_sft.py --model Qwen/Qwen2.5-0.5B-Instruct --data data/planner --no-lora
    python scripts/train_sft.py --resume runs/sft
    accelerate launch scripts/train_sft.py ...                                 # several GPUs or nodes

Same as ``dialog-env train sft ...``. See agents/sft.py for the run folder.
"""

import sys

from agents.collect import CollectError
from agents.sft import SFTConfigError, main
from dialog_env.interrupt import EXIT_INTERRUPTED, TrainingInterrupted

if __name__ == "__main__":
    try:
        main()
    except TrainingInterrupted as e:
        print(f"train_sft: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (SFTConfigError, CollectError) as e:
        print(f"train_sft: error: {e}", file=sys.stderr)
        sys.exit(2)
