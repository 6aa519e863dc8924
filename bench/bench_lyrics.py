"""Lyrics recipe speed: packed blocks against padding every song to 1,024 tokens; 124M fp32 against bf16.

    .venv/bin/python bench/bench_lyrics.py --steps 30            # tiny GPT-2: recipe vs pad-each-song-to-1,024
    .venv/bin/python bench/bench_lyrics.py --arch 124m --steps 3 # 124M GPT-2: fp32 vs bf16 autocast tokens/s

Reads ../shared/data/lyrics/songs.jsonl (one song per record) and the GPT-2 tokenizer. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import DATA, GPT2_FILES, TINY, require_data, timing_overrides
from transformers import TrainingArguments, default_data_collator

from hf_recipes.trainer import make_trainer
from hf_recipes.recipes import lyrics


def overrides(args, **extra) -> dict:
    return timing_overrides("runs/bench/lyrics", **{
        "train_file": str(DATA / "lyrics" / "songs.jsonl"),
        "block_size": args.block_size,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-4,
        "logging_steps": max(1, args.steps // 3),
        **extra,
    })


def packed_vs_padded(args) -> None:
    trainer, prepared = lyrics.build_trainer(**overrides(args))
    tokenizer, eos = prepared.tokenizer, prepared.tokenizer.eos_token_id

    def pad_each_song(batch):
        ids = [song[:1023] + [eos] for song in tokenizer(batch["text"])["input_ids"]]
        masks = [[1] * len(s) + [0] * (1024 - len(s)) for s in ids]
        labels = [s + [-100] * (1024 - len(s)) for s in ids]
        return {"input_ids": [s + [eos] * (1024 - len(s)) for s in ids], "attention_mask": masks, "labels": labels}

    padded = prepared.raw["train"].map(pad_each_song, batched=True, remove_columns=prepared.raw["train"].column_names)
    naive_args = TrainingArguments(
        output_dir="runs/bench/lyrics-padded", max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=5e-4, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
        logging_steps=max(1, args.steps // 3),
    )
    naive = make_trainer(model=copy.deepcopy(prepared.model), tokenizer=tokenizer, training_args=naive_args, train_dataset=padded, eval_dataset=None,
                         data_collator=default_data_collator)
    naive_runtime = naive.train().metrics["train_runtime"]
    recipe_runtime = trainer.train().metrics["train_runtime"]
    naive_rate, recipe_rate = naive.real_tokens / naive_runtime, trainer.real_tokens / recipe_runtime
    print(f"\nLyrics, songs.jsonl ({len(prepared.raw['train'])} train songs), tiny GPT-2 ({TINY}), "
          f"{args.steps} steps of {args.batch_size} x 1,024 tokens, {torch.get_num_threads()} CPU threads")
    print(f"{'way':<26}{'real tokens/s':>15}{'real share':>12}{'runtime s':>11}")
    print(f"{'pad each song to 1,024':<26}{naive_rate:>15.0f}{naive.real_token_share():>12.1%}{naive_runtime:>11.2f}")
    print(f"{'recipe (packed blocks)':<26}{recipe_rate:>15.0f}{trainer.real_token_share():>12.1%}"
          f"{recipe_runtime:>11.2f}")
    print(f"real text per second: {recipe_rate / naive_rate:.1f}x")


def precision_124m(args) -> None:
    results = {}
    for precision in ("no", "bf16"):
        trainer, _ = lyrics.build_trainer(**overrides(
            args, config_overrides=None, config_name=str(GPT2_FILES), mixed_precision=precision,
            learning_rate=5e-5))
        runtime = trainer.train().metrics["train_runtime"]
        results[precision] = trainer.real_tokens / runtime
    print(f"\nLyrics, 124M GPT-2 (random init), block {args.block_size}, batch {args.batch_size}, {args.steps} steps, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"fp32: {results['no']:.0f} tokens/s; bf16 autocast: {results['bf16']:.0f} tokens/s "
          f"({results['bf16'] / results['no']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--arch", choices=["tiny", "124m"], default="tiny")
    parser.add_argument("--block_size", type=int, default=1024)
    args = parser.parse_args()
    require_data()
    precision_124m(args) if args.arch == "124m" else packed_vs_padded(args)


if __name__ == "__main__":
    main()
