"""Padding-free vs padded scoring of rollouts of different lengths: forward + backward, same run.

TRL scores a batch of rollouts as one tensor padded to the longest; :class:`agents.lm_trainer.DialogueGRPOTrainer`
scores each rollout at its own length. This script times one forward and backward pass over 16 rows whose
lengths spread like a branch-mode batch (60 to 350 tokens), both ways, interleaved in every repeat, and prints
the median and min-max seconds and the ratio (padding-free / padded).

    python scripts/bench_padding.py --model runs/sft_smollm2/final_model --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dialog_env.lm import resolve_model_path

LENGTHS = (60, 80, 100, 120, 150, 170, 200, 220, 240, 260, 280, 300, 320, 330, 340, 350)
SCORED = 40  # completion tokens scored per row


def main() -> None:
    from transformers import AutoModelForCausalLM

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model))
    width = max(LENGTHS)
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(LENGTHS):
        ids[r, width - n :] = torch.randint(5, model.config.vocab_size, (n,), generator=g)
        mask[r, width - n :] = 1
    half = args.dtype == "bfloat16"

    def score(x: torch.Tensor, m: torch.Tensor | None) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            logits = model(input_ids=x, attention_mask=m).logits[:, -SCORED:]
        logits.float().logsumexp(-1).sum().backward()

    ways = {
        "padded": lambda: score(ids, mask),
        "padding-free": lambda: [score(ids[r : r + 1, width - n :], None) for r, n in enumerate(LENGTHS)],
    }
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):
        for k, fn in ways.items():
            model.zero_grad()
            t0 = time.perf_counter()
            fn()
            seconds[k].append(time.perf_counter() - t0)
    base = statistics.median(seconds["padded"])
    print(f"16 rows of {min(LENGTHS)}-{width} tokens (real/padded tokens {sum(LENGTHS) / (len(LENGTHS) * width):.2f})")
    for k, v in seconds.items():
        med = statistics.median(v)
        print(f"{k}: {med:.1f} s ({min(v):.1f}-{max(v):.1f}), ratio {med / base:.2f}x")


if __name__ == "__main__":
    main()
