"""Instruction recipe speed: batching ways on the 1,100 book instructions; 2 epochs of 124M GPT-2.

    .venv/bin/python bench/bench_instruct.py --steps 30            # tiny GPT-2: four ways of batching, same steps
    .venv/bin/python bench/bench_instruct.py --arch 124m --steps 20 # 124M: time 20 steps, project 2 epochs
    .venv/bin/python bench/bench_instruct.py --arch 124m --steps 0  # 124M: the whole 2 epochs

Reads ../shared/data/instructions/instruction-data.json and the GPT-2 tokenizer. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import DATA, GPT2_FILES, TINY, require_data, timing_overrides

from hf_recipes.collators import LabelPaddingCollator
from hf_recipes.recipes import instruct


def overrides(args, **extra) -> dict:
    return timing_overrides("runs/bench/instruct", **{
        "train_file": str(DATA / "instructions" / "instruction-data.json"),
        "max_steps": args.steps or -1,
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-4,
        "logging_steps": 10,
        **extra,
    })


def timed_training(trainer) -> float:
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def batching_ways(args) -> None:
    ways = {
        "pad to 1,024": dict(train_sampling_strategy="random"),
        "pad to batch longest": dict(train_sampling_strategy="random"),
        "recipe: grouped by length": dict(train_sampling_strategy="group_by_length"),
        "recipe: padding-free": dict(train_sampling_strategy="random", padding_free=True),
    }
    results = {}
    for way, extra in ways.items():
        trainer, prepared = instruct.build_trainer(**overrides(args, **extra))
        if way == "pad to 1,024":
            trainer.data_collator = LabelPaddingCollator(prepared.tokenizer, padding="max_length", max_length=1024)
        runtime = timed_training(trainer)
        results[way] = (trainer.real_tokens / runtime, trainer.real_token_share(), runtime,
                        trainer.state.log_history[-1]["train_loss"])
    print(f"\nInstructions ({len(prepared.raw['train'])} train records of the book's 1,100), tiny GPT-2 ({TINY}), "
          f"{trainer.state.global_step} steps of {args.batch_size} records, {torch.get_num_threads()} CPU threads")
    print(f"{'way':<28}{'real tokens/s':>14}{'real share':>12}{'runtime s':>11}{'train loss':>12}")
    for way, (rate, share, runtime, loss) in results.items():
        print(f"{way:<28}{rate:>14.0f}{share:>12.1%}{runtime:>11.2f}{loss:>12.4f}")
    base = results["pad to 1,024"][0]
    print("real tokens/s against pad to 1,024: " + ", ".join(f"{w} {r[0] / base:.1f}x" for w, r in results.items()))


def epochs_124m(args) -> None:
    trainer, prepared = instruct.build_trainer(**overrides(
        args, config_overrides=None, config_name=str(GPT2_FILES), learning_rate=5e-5,
        train_sampling_strategy="group_by_length", mixed_precision=args.precision))
    runtime = timed_training(trainer)
    lengths = [len(ids) for ids in prepared.datasets["train"]["input_ids"]]
    total_real = sum(lengths) * args.epochs
    print(f"\nInstructions, 124M GPT-2 (random init; the same compute as pretrained), batch {args.batch_size}, "
          f"grouped by length, precision {args.precision}, {torch.get_num_threads()} CPU threads")
    print(f"{trainer.state.global_step} steps, {trainer.real_tokens} real tokens in {runtime:.1f} s: "
          f"{trainer.real_tokens / runtime:.0f} real tokens/s, real share {trainer.real_token_share():.1%}")
    if args.steps:
        projected = runtime * total_real / trainer.real_tokens
        print(f"projected {args.epochs} epochs ({total_real} real tokens): {projected:.0f} s = {projected / 60:.1f} min "
              "(book: 5.7 min on an M3 laptop CPU)")
    else:
        print(f"{args.epochs} epochs: {runtime:.0f} s = {runtime / 60:.1f} min (book: 5.7 min on an M3 laptop CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per way (0: whole epochs)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--arch", choices=["tiny", "124m"], default="tiny")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16", "auto"], default="auto", help="124m only")
    args = parser.parse_args()
    require_data()
    epochs_124m(args) if args.arch == "124m" else batching_ways(args)


if __name__ == "__main__":
    main()
