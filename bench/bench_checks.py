"""The every-run checks on the real data: leakage per recipe, label balance and the classification baselines on
the Kaggle tweets, and what the few-shot and forgetting commands cost with a GPT-2 124M-shaped model.

    python bench/bench_checks.py [--few_shot_rows 64] [--forgetting_tokens 8192]

GPT-2's pretrained weights cannot be downloaded here, so the few-shot and forgetting figures are timings (the
124M architecture, randomly initialised); their accuracies and perplexities say nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter

from common import DATA, GPT2_FILES, require_data

import numpy as np
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_recipes import recipes, run
from hf_recipes import baselines
from hf_recipes.forgetting import text_perplexity

REAL_DATA = {
    "sentiment": {"train_file": DATA / "tweet_sentiment" / "train.csv", "test_file": DATA / "tweet_sentiment" / "test.csv",
                  "label_column": "sentiment"},
    "lyrics": {"train_file": DATA / "lyrics" / "songs.jsonl"},
    "instruct": {"train_file": DATA / "instructions" / "instruction-data.json"},
}


def leakage(name: str, output_dir: str):
    recipe = recipes.get(name)
    overrides = {key: str(value) if not isinstance(value, str) else value for key, value in REAL_DATA[name].items()}
    args = recipe.parse(None, [], model_name_or_path=None, model_type="gpt2", tokenizer_name=str(GPT2_FILES),
                        dataset_name=None, output_dir=output_dir, **overrides)
    start = time.perf_counter()
    raw = recipe.load_data(args)
    loaded = time.perf_counter()
    found = run.screen(recipe, raw, args)
    screened = time.perf_counter()
    overlaps = ", ".join(f"{split} {o.exact} exact / {o.normalized} normalised of {o.rows}"
                         for split, o in found.overlaps.items())
    print(f"[{name}] unit {found.unit}: {overlaps}; inside train ({found.train_rows} rows) {found.train_exact_repeats} "
          f"exact / {found.train_normalized_repeats} normalised repeats; check {screened - loaded:.2f} s "
          f"(loading {loaded - start:.2f} s)")
    return raw


def classification_baselines(raw) -> None:
    names = sorted(set(raw["train"]["sentiment"]))
    keep = [i for i, t in enumerate(raw["train"]["text"]) if isinstance(t, str) and t.strip()]
    train_texts = [raw["train"]["text"][i] for i in keep]
    train_labels = [names.index(raw["train"]["sentiment"][i]) for i in keep]
    test_texts, y_true = list(raw["test"]["text"]), [names.index(s) for s in raw["test"]["sentiment"]]
    for split, labels in (("train", train_labels), ("test", y_true)):
        counts = Counter(labels)
        print(f"[sentiment] {split} balance: " + ", ".join(f"{n} {counts[i]} ({counts[i] / len(labels):.1%})"
                                                         for i, n in enumerate(names)))
    row = baselines.score_row("majority", y_true, baselines.majority_class_predictions(train_labels, len(y_true)), 3)
    print(f"[sentiment] majority class: test accuracy {row['accuracy']:.4f}, macro-F1 {row['macro-F1']:.4f}")
    start = time.perf_counter()
    predicted = baselines.tfidf_logistic_regression_predictions(train_texts, train_labels, test_texts, seed=42)
    row = baselines.score_row("tfidf", y_true, predicted, 3)
    print(f"[sentiment] TF-IDF + logistic regression: test accuracy {row['accuracy']:.4f}, macro-F1 "
          f"{row['macro-F1']:.4f} ({len(train_texts)} train rows, {time.perf_counter() - start:.1f} s)")
    return train_texts, train_labels, test_texts, names


def model_costs(train_texts, train_labels, test_texts, names, few_shot_rows: int, forgetting_tokens: int) -> None:
    """Few-shot scoring and forgetting perplexity with the GPT-2 124M architecture (random weights: timings only)."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(GPT2_FILES)
    tokenizer.pad_token = tokenizer.eos_token
    model = GPT2LMHeadModel(GPT2Config.from_pretrained(GPT2_FILES)).eval()
    for k, reuse in ((0, True), (4, True), (4, False)):
        shots = [(train_texts[i], names[train_labels[i]]) for i in baselines.pick_demonstrations(train_labels, k, 42)]
        prompts = baselines.few_shot_prompts(test_texts[:few_shot_rows], shots)
        start = time.perf_counter()
        baselines.label_log_likelihoods(model, tokenizer, prompts, names, batch_size=32, reuse_prefix=reuse)
        seconds = time.perf_counter() - start
        how = "" if k == 0 else ", demonstrations' keys/values reused" if reuse else ", every prompt whole"
        print(f"[few-shot] 124M-shaped, k={k}{how}: {few_shot_rows / seconds:.1f} test rows/s "
              f"(the whole 3,534-row test split: {3534 / few_shot_rows * seconds / 60:.1f} min)")
    text = (DATA / "lyrics" / "all_songs.txt").read_text(encoding="utf-8")
    start = time.perf_counter()
    result = text_perplexity(model, tokenizer, text, forgetting_tokens)
    seconds = time.perf_counter() - start
    print(f"[forgetting] 124M-shaped: {result.tokens / seconds:.0f} tokens/s over {result.tokens} tokens "
          f"(default cap 20,000 tokens: {20_000 / (result.tokens / seconds) / 60:.1f} min per model)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--few_shot_rows", type=int, default=64)
    parser.add_argument("--forgetting_tokens", type=int, default=8192)
    opts = parser.parse_args()
    require_data()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        raw = leakage("sentiment", tmp)
        leakage("lyrics", tmp)
        leakage("instruct", tmp)
    data = classification_baselines(raw)
    model_costs(*data, opts.few_shot_rows, opts.forgetting_tokens)
    print(f"[machine] {torch.get_num_threads()} threads, torch {torch.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
