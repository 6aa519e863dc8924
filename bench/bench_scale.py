"""How data preparation and the automatic checks grow with the data: synthetic-but-realistic corpora of 10k, 100k
and 1M rows (sentiment, instruct) or 10 MB, 100 MB and 1 GB of song text (lyrics), made from the real data.

    make bench BENCH=scale                                        # every recipe at 10k / 10MB and 100k / 100MB
    .venv/bin/python bench/bench_scale.py --recipe sentiment --sizes 10k 100k 1M
    .venv/bin/python bench/bench_scale.py --recipe lyrics --sizes 10MB --train_steps 20

Rows are real tweets / Alpaca records / songs from ../shared/data with variation, so the leakage screen is not
tripped by copies: two words of each text replaced by words drawn from the corpus, two words swapped, and songs
made of another song's lines shuffled. Each size runs in a subprocess of its own (its peak RSS is its own) with a
fresh datasets cache, on the demo profile (tiny GPT-2 with the real GPT-2 tokenizer, fp32). Printed per size:
  load       the recipe's load_data (reading the file, checking columns, carving validation/test)
  tokenize   the recipe's prepare (tokenizing; the tiny model's construction, under a second, included)
  floor      the fast tokenizer called in batches of 1,000 on the same texts (every split), nothing else
  checks     each automatic check timed on its own: leakage screen, targets check, label balance + majority +
             TF-IDF baselines (sentiment; against random predictions standing in for the fine-tuned model),
             forgetting perplexity (lyrics: the generated corpus as the forgetting file, default 20,000-token cap)
  RSS        the process's peak resident set after preparation and checks (before any training)
  epoch      the smallest size only: --train_steps optimizer steps timed after 2 warm-up steps, and the epoch
             extrapolated from them (steps per epoch x seconds per step)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from common import DATA, GPT2_FILES, REPO, machine_line, require_data, step_clock, timing_overrides

SIZES = {"sentiment": ("10k", "100k", "1M"), "instruct": ("10k", "100k", "1M"), "lyrics": ("10MB", "100MB", "1GB")}
DEFAULT_SIZES = ("10k", "100k", "10MB", "100MB")
WARMUP = 2


def parse_size(size: str) -> tuple[str, int]:
    """("rows", 10_000) for 10k, ("bytes", 10 * 2**20) for 10MB."""
    match = re.fullmatch(r"(\d+)(k|M|MB|GB)", size)
    if not match:
        raise SystemExit(f"error: size '{size}' is not like 10k, 1M, 10MB or 1GB")
    number, unit = int(match.group(1)), match.group(2)
    if unit in ("MB", "GB"):
        return "bytes", number * 2 ** (20 if unit == "MB" else 30)
    return "rows", number * (1000 if unit == "k" else 1_000_000)


# ---- synthetic data ---------------------------------------------------------------------------------------------
def vary(text: str, vocabulary: list[str], rng: random.Random) -> str:
    """Two words replaced by corpus words and two swapped: a new row that reads like the old one."""
    words = text.split(" ")
    for _ in range(2):
        words[rng.randrange(len(words))] = rng.choice(vocabulary)
    if len(words) > 2:
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def corpus_words(texts: list[str]) -> list[str]:
    return sorted({w for t in texts for w in t.split() if w.isalpha()})


def write_sentiment(path: Path, rows: int, rng: random.Random) -> None:
    with open(DATA / "tweet_sentiment" / "train.csv", newline="", encoding="utf-8") as handle:
        source = [(r["text"].strip(), r["sentiment"]) for r in csv.DictReader(handle) if r["text"].strip()]
    vocabulary = corpus_words([t for t, _ in source])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "sentiment"])
        for _ in range(rows):
            text, label = rng.choice(source)
            writer.writerow([vary(text, vocabulary, rng), label])


def write_instruct(path: Path, rows: int, rng: random.Random) -> None:
    source = json.loads((DATA / "instructions" / "instruction-data.json").read_text(encoding="utf-8"))
    vocabulary = corpus_words([r["instruction"] + " " + r["output"] for r in source])
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            record = rng.choice(source)
            varied = {"instruction": vary(record["instruction"], vocabulary, rng), "input": record["input"],
                      "output": vary(record["output"], vocabulary, rng)}
            handle.write(json.dumps(varied, ensure_ascii=False) + "\n")


def write_lyrics(path: Path, size: int, rng: random.Random) -> None:
    lines = (DATA / "lyrics" / "songs.jsonl").read_text(encoding="utf-8").splitlines()
    source = [json.loads(line) for line in lines]
    vocabulary = corpus_words([s["text"] for s in source[:300]])
    written, number = 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < size:
            song = rng.choice(source)
            verses = [vary(line, vocabulary, rng) if line.strip() else line for line in song["text"].split("\n")]
            rng.shuffle(verses)
            number += 1
            line = json.dumps({"title": f"{song['title']} ({number})", "text": "\n".join(verses)}, ensure_ascii=False)
            written += handle.write(line + "\n")


def write_data(recipe: str, size: str, folder: Path) -> tuple[Path, float]:
    kind, amount = parse_size(size)
    rng = random.Random(zlib.crc32(f"{recipe} {size}".encode()))
    start = time.perf_counter()
    path = folder / f"{recipe}-{size}.{'csv' if recipe == 'sentiment' else 'jsonl'}"
    if recipe == "sentiment":
        write_sentiment(path, amount, rng)
    elif recipe == "instruct":
        write_instruct(path, amount, rng)
    else:
        write_lyrics(path, amount, rng)
    return path, time.perf_counter() - start


# ---- one size, in its own process ---------------------------------------------------------------------------------
def timed(results: dict, name: str, function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    results[name] = time.perf_counter() - start
    return value


def floor_texts(recipe_name: str, recipe, raw, args) -> list[list[str]]:
    """The texts the recipe's tokenization reads, per call it makes: sentiment the text, lyrics the song,
    instruct the rendered prompt and the response."""
    texts = []
    for dataset in raw.values():
        if recipe_name == "instruct":
            texts += [recipe.prompts(dataset, args.task), list(dataset[args.task.output_column])]
        else:
            texts.append(list(dataset[args.data.text_column]))
    return texts


def tokenizer_floor(tokenizer, texts: list[list[str]]) -> float:
    start = time.perf_counter()
    for column in texts:
        for i in range(0, len(column), 1000):
            tokenizer(column[i:i + 1000], add_special_tokens=False)
    return time.perf_counter() - start


def sentiment_baselines(recipe, prepared, args) -> None:
    """The classification-baselines check as a run makes it, given random predictions for the fine-tuned model."""
    import numpy as np
    from transformers.trainer_utils import PredictionOutput

    from hf_recipes.baselines import ClassificationBaselines
    from hf_recipes.checks import RunState

    split = "test" if "test" in prepared.datasets else "validation"
    logits = np.random.default_rng(0).normal(size=(len(prepared.datasets[split]), len(prepared.label_names)))
    state = RunState(recipe, args, None, prepared, scored=PredictionOutput(logits, None, {}))
    ClassificationBaselines().after_training(state)


def measure_streaming(spec: dict) -> dict:
    """``--streaming true``: from the start of build_trainer to the end of the first optimizer step, and on to
    ``train_steps`` steps; the process's peak RSS (it never holds the corpus)."""
    from hf_recipes import recipes

    recipe = recipes.get(spec["recipe"])
    start = time.perf_counter()
    trainer, prepared = recipe.build_trainer(recipe.demo_config, **training_overrides(
        spec, streaming=True, max_steps=spec["train_steps"]))
    built = time.perf_counter() - start
    clock = step_clock()
    trainer.add_callback(clock)
    trainer.train()
    return {"build_s": built, "first_step_s": clock.ends[0] - start, "steps": len(clock.ends),
            "s_per_step": (clock.ends[-1] - clock.ends[0]) / max(1, len(clock.ends) - 1),
            "leakage_sample_rows": prepared.leakage.streamed_train_sample if prepared.leakage else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(spec: dict) -> dict:
    if spec.get("streaming"):
        return measure_streaming(spec)
    from hf_recipes import recipes, run
    from hf_recipes.forgetting import text_perplexity

    name, results = spec["recipe"], {}
    recipe = recipes.get(name)
    overrides = training_overrides(spec)
    args = recipe.parse(recipe.demo_config, [], **overrides)
    raw = timed(results, "load", recipe.load_data, args)
    rows = {split: len(dataset) for split, dataset in raw.items()}
    checks = {}
    leakage = timed(checks, "leakage screen", run.screen, recipe, raw, args)
    prepared = timed(results, "tokenize", recipe.prepare, args, raw)
    prepared.leakage = leakage
    timed(checks, "targets", run.check_prepared, recipe, prepared, args)
    if name == "sentiment":
        timed(checks, "baselines", sentiment_baselines, recipe, prepared, args)
    if name == "lyrics":
        text = Path(spec["file"]).read_text(encoding="utf-8")
        timed(checks, "forgetting", text_perplexity, prepared.model, prepared.tokenizer, text,
              args.checks.forgetting_max_tokens)
        del text
    # Before the floor: its own lists of every text would count otherwise
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["floor"] = tokenizer_floor(prepared.tokenizer, floor_texts(name, recipe, raw, args))
    results.update(rows=rows, checks=checks, train_rows=len(prepared.datasets["train"]))
    del raw, prepared
    if spec["train"]:
        results["epoch"] = time_epoch(recipe, spec)
    return results


def training_overrides(spec: dict, **extra) -> dict:
    overrides = timing_overrides(spec["output_dir"], train_file=spec["file"], tokenizer_name=str(GPT2_FILES),
                                 logging_steps=10**6, **extra)
    overrides.pop("config_overrides")  # the demo profile's model
    if spec["recipe"] == "sentiment":
        overrides.update(test_file=None, label_column="sentiment")
    return overrides


def time_epoch(recipe, spec: dict) -> dict:
    """One epoch of the train split, extrapolated from a few timed steps."""
    trainer, _ = recipe.build_trainer(recipe.demo_config,
                                      **training_overrides(spec, max_steps=WARMUP + spec["train_steps"]))
    clock = step_clock()
    trainer.add_callback(clock)
    trainer.train()
    seconds = (clock.ends[-1] - clock.ends[WARMUP - 1]) / (len(clock.ends) - WARMUP)
    batches = len(trainer.get_train_dataloader())
    epoch_steps = batches // trainer.args.gradient_accumulation_steps
    return {"steps_timed": len(clock.ends) - WARMUP, "s_per_step": seconds, "epoch_steps": epoch_steps,
            "epoch_s": seconds * epoch_steps}


def run_size(recipe: str, size: str, folder: Path, opts, train: bool) -> dict | None:
    path, generated = write_data(recipe, size, folder)
    spec = {"recipe": recipe, "file": str(path), "train": train, "train_steps": opts.train_steps,
            "output_dir": str(folder / f"run-{recipe}-{size}"), "streaming": opts.streaming}
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / f"cache-{recipe}-{size}"), "TOKENIZERS_PARALLELISM": "true"}
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"[{recipe} {size}] failed (exit {done.returncode}):\n" + "\n".join(done.stderr.splitlines()[-4:]))
        return None
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result.update(size=size, megabytes=path.stat().st_size / 2**20, generated_s=generated)
    path.unlink()
    return result


def print_table(recipe: str, results: list[dict]) -> None:
    print(f"\n{recipe}: demo profile (tiny GPT-2, real GPT-2 tokenizer), fp32; seconds unless marked")
    print(f"machine: {machine_line()}")
    check_names = list(dict.fromkeys(c for r in results for c in r["checks"]))
    header = (f"{'size':<7}{'file MB':>8}{'train rows':>11}{'load':>8}{'tokenize':>9}{'floor':>8}{'x floor':>8}"
              + "".join(f"{c:>16}" for c in check_names) + f"{'checks':>8}{'peak RSS MiB':>13}")
    print(header)
    for r in results:
        prep = r["load"] + r["tokenize"]
        print(f"{r['size']:<7}{r['megabytes']:>8.1f}{r['rows']['train']:>11}{r['load']:>8.2f}{r['tokenize']:>9.2f}"
              f"{r['floor']:>8.2f}{prep / r['floor']:>8.2f}" + "".join(f"{r['checks'][c]:>16.2f}" for c in check_names)
              + f"{sum(r['checks'].values()):>8.2f}{r['peak_rss_mib']:>13.0f}")
    timed = next((r for r in results if "epoch" in r), None)
    if timed is None:
        return
    e = timed["epoch"]
    how = f"{e['steps_timed']} steps timed after {WARMUP} warm-up at {timed['size']}"
    for r in results:
        # A step costs the same at every size (same batch and length cap): a larger size's epoch is its steps
        # (train rows in the same proportion) times the seconds per step timed at the smallest.
        steps = round(e["epoch_steps"] * r["train_rows"] / timed["train_rows"])
        epoch_s = steps * e["s_per_step"]
        share = sum(r["checks"].values()) / epoch_s
        print(f"{r['size']}: one epoch {epoch_s:.1f} s ({steps} steps x {e['s_per_step']:.3f} s; {how}, "
              f"extrapolated); the checks are {share:.1%} of it")


def print_streaming(recipe: str, results: list[dict]) -> None:
    print(f"\n{recipe}, --streaming true: demo profile (tiny GPT-2, real GPT-2 tokenizer), fp32")
    print(f"machine: {machine_line()}")
    print(f"{'size':<7}{'file MB':>9}{'build s':>9}{'first step s':>14}{'steps':>7}{'s/step':>8}{'leakage rows':>14}"
          f"{'peak RSS MiB':>14}")
    for r in results:
        print(f"{r['size']:<7}{r['megabytes']:>9.0f}{r['build_s']:>9.1f}{r['first_step_s']:>14.1f}{r['steps']:>7}"
              f"{r['s_per_step']:>8.3f}{r['leakage_sample_rows'] or 0:>14}{r['peak_rss_mib']:>14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=[*SIZES, "all"], default="all")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES),
                        help="rows (10k, 100k, 1M) for sentiment / instruct, text (10MB, 100MB, 1GB) for lyrics; "
                        "each recipe runs the sizes of its kind (default: 10k 100k 10MB 100MB)")
    parser.add_argument("--train_steps", type=int, default=20,
                        help="steps timed for the smallest size's one-epoch estimate")
    parser.add_argument("--no_train", action="store_true", help="skip the one-epoch figure")
    parser.add_argument("--streaming", action="store_true",
                        help="lyrics: train with --streaming true for --train_steps steps; print the time to the first "
                        "step and the peak RSS")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single size, in a subprocess
    opts = parser.parse_args()
    if opts.one:
        print("RESULT " + json.dumps(measure(json.loads(opts.one))))
        return
    require_data()
    for size in opts.sizes:
        parse_size(size)
    failed = []
    for recipe in SIZES if opts.recipe == "all" else (opts.recipe,):
        kind = "bytes" if recipe == "lyrics" else "rows"
        sizes = sorted((s for s in opts.sizes if parse_size(s)[0] == kind), key=lambda s: parse_size(s)[1])
        if not sizes:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results = [run_size(recipe, size, Path(tmp), opts, train=not opts.no_train and size == sizes[0])
                       for size in sizes]
        failed += [f"{recipe} {size}" for size, result in zip(sizes, results) if result is None]
        if opts.streaming:
            print_streaming(recipe, [r for r in results if r])
        else:
            print_table(recipe, [r for r in results if r])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
