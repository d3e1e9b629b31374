"""Train an LM policy on PersonaRecText-v0 with TRL's GRPOTrainer (LoRA by default).

    python scripts/train_lm.py --max-steps 100                       # embedded SmolLM2-135M
    python scripts/train_lm.py --model HuggingFaceTB/SmolLM2-360M-Instruct --no-lora --learning-rate 1e-5
    python scripts/train_lm.py --resume runs/<run folder>
    accelerate launch scripts/train_lm.py ...                        # several GPUs or nodes

Same as ``dialog-env train lm ...``. See agents/lm_train.py for the run folder.
"""

import sys

from agents.lm_train import LMConfigError, main
from dialog_env.interrupt import EXIT_INTERRUPTED, TrainingInterrupted

if __name__ == "__main__":
    try:
        main()
    except TrainingInterrupted as e:
        print(f"train_lm: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except LMConfigError as e:
        print(f"train_lm: error: {e}", file=sys.stderr)
        sys.exit(2)
