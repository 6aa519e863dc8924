"""Sentiment recipe speed: the recipe against padding every tweet to 1,024 tokens, and CPU bf16 against fp32.

    .venv/bin/python bench/bench_sentiment.py --n 2000          # recipe vs the pad-to-1,024 way (tiny GPT-2)
    .venv/bin/python bench/bench_sentiment.py --precision       # 124M GPT-2 (random init): fp32 vs bf16 autocast

Reads the Kaggle tweets and the GPT-2 tokenizer from ../shared/data. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import Trainer, TrainingArguments, default_data_collator  # noqa: E402

from hf_recipes.recipes import sentiment  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TINY = "n_layer=2,n_embd=128,n_head=2,n_positions=1024"


def recipe_overrides(args, output_dir: str, **extra) -> dict:
    return {
        "model_name_or_path": None,
        "model_type": "gpt2",
        "config_overrides": TINY,
        "tokenizer_name": str(DATA / "gpt2_tokenizer"),
        "dataset_name": None,
        "train_file": str(DATA / "tweet_sentiment" / "train.csv"),
        "test_file": str(DATA / "tweet_sentiment" / "test.csv"),
        "label_column": "sentiment",
        "max_train_samples": args.n,
        "max_test_samples": args.test_n,
        "num_train_epochs": 1,
        "learning_rate": args.lr,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": args.accumulation,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "logging_steps": 20,
        "disable_tqdm": True,
        "output_dir": output_dir,
        "overwrite_output_dir": True,
        "mixed_precision": "no",
        "report": False,
        **extra,
    }


def accuracy(trainer: Trainer, dataset) -> float:
    output = trainer.predict(dataset)
    return float(np.mean(np.asarray(output.predictions).argmax(-1) == output.label_ids))


def padding_vs_recipe(args) -> None:
    trainer, prepared = sentiment.build_trainer(**recipe_overrides(args, "runs/bench/sentiment"))
    start_model = copy.deepcopy(prepared.model)
    # Plain Trainer would also sum this classifier's loss over accumulation steps (4x the gradient); switch
    # that off so the two runs differ only in padding.
    start_model.accepts_loss_kwargs = False
    tokenizer = prepared.tokenizer
    text, label = "text", "sentiment"
    label2id = prepared.model.config.label2id

    # The seed tutorial's way: pad every tweet to 1,024 tokens in map, plain Trainer, random batches.
    def pad_to_1024(batch):
        encoded = tokenizer(batch[text], padding="max_length", truncation=True, max_length=1024)
        encoded["labels"] = [label2id[v] for v in batch[label]]
        return encoded

    padded = {s: prepared.raw[s].map(pad_to_1024, batched=True, remove_columns=prepared.raw[s].column_names)
              for s in ("train", "test")}
    naive_args = TrainingArguments(
        output_dir="runs/bench/sentiment-padded",
        num_train_epochs=1,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        weight_decay=0.01,
        save_strategy="no",
        logging_steps=20,
        report_to="none",
        disable_tqdm=True,
        seed=trainer.args.seed,
        dataloader_pin_memory=False,
    )
    naive = Trainer(model=start_model, args=naive_args, train_dataset=padded["train"],
                    data_collator=default_data_collator, processing_class=tokenizer)
    naive_runtime = naive.train().metrics["train_runtime"]
    naive_accuracy = accuracy(naive, padded["test"])
    naive_share = float(np.mean([sum(m) / len(m) for m in padded["train"]["attention_mask"]]))

    recipe_runtime = trainer.train().metrics["train_runtime"]
    recipe_accuracy = accuracy(trainer, prepared.datasets["test"])
    share = trainer.real_token_share()

    majority = max(np.bincount(prepared.datasets["test"]["labels"])) / len(prepared.datasets["test"])
    print(f"\nSentiment, {len(prepared.raw['train'])} Kaggle tweets, 1 epoch, tiny GPT-2 ({TINY}), "
          f"batch {args.batch_size} x accumulation {args.accumulation}, {torch.get_num_threads()} CPU threads")
    print(f"{'way':<28}{'train_runtime s':>16}{'real tokens':>13}{'test accuracy':>15}")
    print(f"{'pad to 1,024 in map':<28}{naive_runtime:>16.2f}{naive_share:>13.1%}{naive_accuracy:>15.3f}")
    print(f"{'recipe (dynamic, grouped)':<28}{recipe_runtime:>16.2f}{share:>13.1%}{recipe_accuracy:>15.3f}")
    print(f"speed-up: {naive_runtime / recipe_runtime:.1f}x; majority-class test accuracy {majority:.3f} "
          f"({len(prepared.datasets['test'])} test tweets)")


def precision_comparison(args) -> None:
    """124M GPT-2 classifier from random init: the same steps in fp32 and in bf16 autocast."""
    config = DATA / "gpt2_tokenizer"
    results = {}
    for precision in ("no", "bf16"):
        overrides = recipe_overrides(
            args, f"runs/bench/sentiment-{precision}", config_overrides=None, config_name=str(config),
            mixed_precision=precision, max_steps=args.steps, max_train_samples=args.steps * args.batch_size * args.accumulation,
            learning_rate=5e-5, logging_steps=max(1, args.steps // 4),
        )
        trainer, prepared = sentiment.build_trainer(**overrides)
        start = time.perf_counter()
        metrics = trainer.train().metrics
        elapsed = time.perf_counter() - start
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        results[precision] = (trainer.real_tokens / elapsed, metrics["train_loss"], losses)
    print(f"\n124M GPT-2 classifier, random init, {args.steps} steps of {args.batch_size}x{args.accumulation} tweets, "
          f"{torch.get_num_threads()} CPU threads")
    for precision, (tokens_per_s, loss, losses) in results.items():
        name = "fp32" if precision == "no" else "bf16 autocast"
        print(f"{name:<14} {tokens_per_s:>9.0f} real tokens/s   mean train loss {loss:.4f}   logged {np.round(losses, 3)}")
    ratio = results["bf16"][0] / results["no"][0]
    print(f"bf16 / fp32 speed: {ratio:.2f}x -> CPU default: {'bf16' if ratio > 1 else 'fp32'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="training tweets")
    parser.add_argument("--test_n", type=int, default=1000, help="test tweets")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--precision", action="store_true", help="compare fp32 and bf16 on the 124M architecture")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps for --precision")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA} not found (the benchmarks read the real data beside the repo)")
    if args.precision:
        precision_comparison(args)
    else:
        padding_vs_recipe(args)


if __name__ == "__main__":
    main()
