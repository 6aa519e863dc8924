"""How long the lyrics recipe takes to evaluate, with the fused LM loss (sequence loss sums made chunk by chunk) and
with the model's own logits reduced by ``token_loss_sums``.

    make bench BENCH=eval
    .venv/bin/python bench/bench_eval.py --repeats 2 --batch_size 16

The demo lyrics profile (GPT-2, 2 layers x 128, block 128) on the validation split carved from songs.jsonl, untrained
(evaluation costs the same at any weights), fp32. Prints seconds per evaluate() (best of --repeats), blocks/s, peak
RSS and the eval loss of each way. Asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import DATA, require_data, reset_peak_rss, rss_mib, timing_overrides

from hf_recipes.recipes import lyrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16, help="per_device_eval_batch_size")
    args = parser.parse_args()
    require_data()
    overrides = timing_overrides("runs/bench/eval", train_file=str(DATA / "lyrics" / "songs.jsonl"), max_steps=1,
                                 per_device_eval_batch_size=args.batch_size)
    overrides.pop("config_overrides")  # the demo profile's model
    print(f"{'loss':<34}{'s':>8}{'blocks/s':>10}{'peak RSS MiB':>14}{'eval loss':>14}")
    for fused in (True, False):
        trainer, prepared = lyrics.build_trainer(lyrics.demo_config, **overrides, fused_lm_loss=fused)
        blocks = len(prepared.datasets["validation"])
        reset_peak_rss()
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            loss = trainer.evaluate()["eval_loss"]
            best = min(best, time.perf_counter() - start)
        name = "fused (sequence loss sums)" if fused else "model's logits + token_loss_sums"
        print(f"{name:<34}{best:>8.2f}{blocks / best:>10.1f}{rss_mib():>14.0f}{loss:>14.9f}")
    print(f"{blocks} validation blocks of 128 tokens, batch {args.batch_size}, {torch.get_num_threads()} CPU threads")


if __name__ == "__main__":
    main()
