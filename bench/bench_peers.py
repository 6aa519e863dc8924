"""Each recipe against what a user would pick instead: TRL's SFTTrainer and a plain Trainer script written the
way the transformers examples write it, on the same data, the same tiny model and the same number of steps.

    make install && .venv/bin/python -m pip install -e ".[bench]"      # TRL, for the SFTTrainer rows
    make bench BENCH=peers ARGS="--recipe instruct --steps 30"
    .venv/bin/python bench/bench_peers.py --recipe all --steps 30 --batch_size 8 --max_length 256 --records 400

One tiny GPT-2 (2 layers x 128, the real GPT-2 tokenizer) is saved once to a temporary folder; every contender
loads it from there, trains --steps optimizer steps of --batch_size rows at most --max_length tokens, fp32 (bf16
and fp16 off everywhere: this CPU may have AMX and TRL defaults to bf16), one process, the same learning rate,
linear schedule without warm-up, weight decay 0 and gradient clipping 1.0. Each runs in its own subprocess, one
after the other, so its peak RSS is its own. The first step (warm-up) is not timed. Each trained model is then
scored on the same held-out records with one loss for all (held_out_loss), whatever its training loss covered;
--seeds 1 2 3 repeats every contender per seed (data order, dropout, a classifier's new head) and prints the means.

Contenders (what each does with the data is its own default; the table says what its loss covers):
  recipe         hf_recipes' Python API: recipes.<name>.build_trainer(...) then trainer.train()
  example        plain Trainer as the transformers examples do it: sentiment run_classification.py (padding to
                 max length), lyrics run_clm.py (group_texts blocks, labels = inputs), instruct run_clm-style
                 (prompt + response + EOS as one text, full-sequence loss, padded to the longest in the batch)
  trl            SFTTrainer at its defaults (gradient checkpointing on, completion-only loss on prompt/completion
                 data, packing off); instruct: Alpaca prompt -> response; sentiment: tweet prompt -> label word;
                 lyrics: the song as plain text (language modelling)
  trl-packed     the same with packing=True (best-fit decreasing, padding-free)
  trl-no-ckpt    trl with gradient_checkpointing=False (the one default that costs time for the same work)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, GPT2_FILES, REPO, machine_line, require_data, step_clock

RECIPES = ("sentiment", "lyrics", "instruct")
CONTENDERS = ("recipe", "example", "trl", "trl-packed", "trl-no-ckpt")
TINY = dict(n_layer=2, n_embd=128, n_head=2, n_positions=1024)
LEARNING_RATE = 5e-4
SEED = 42
SENTIMENTS = ("negative", "neutral", "positive")  # the Kaggle tweets' labels


# ---- the shared inputs: one data file per recipe, one saved model ------------------------------------------------
def held_out_rows(records: int) -> int:
    return max(100, records // 4)


def write_inputs(folder: Path, recipe: str, records: int) -> dict:
    """The first ``records`` rows of the real data as train, the next few as validation, in the recipe's format."""
    held_out = held_out_rows(records)
    if recipe == "sentiment":
        with open(DATA / "tweet_sentiment" / "train.csv", newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if r["text"].strip()][: records + held_out]
        paths = {}
        for split, part in (("train", rows[:records]), ("validation", rows[records:])):
            paths[split] = folder / f"sentiment-{split}.csv"
            with open(paths[split], "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=["text", "sentiment"])
                writer.writeheader()
                writer.writerows({"text": r["text"], "sentiment": r["sentiment"]} for r in part)
    else:
        if recipe == "lyrics":
            lines = (DATA / "lyrics" / "songs.jsonl").read_text(encoding="utf-8").splitlines()
            rows = [{"title": r["title"], "text": r["text"]} for r in map(json.loads, lines)][: records + held_out]
        else:
            rows = json.loads((DATA / "instructions" / "instruction-data.json").read_text(encoding="utf-8"))
            rows = rows[: records + held_out]
        paths = {}
        for split, part in (("train", rows[:records]), ("validation", rows[records:])):
            paths[split] = folder / f"{recipe}-{split}.jsonl"
            paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    return {split: str(path) for split, path in paths.items()}


def save_tiny_model(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(GPT2_FILES)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **TINY)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# ---- what every contender shares inside its own process ----------------------------------------------------------
class Counted:
    """The collator, counting each batch's real tokens (the attention mask's ones, or every id without a mask)."""

    def __init__(self, collator):
        self.collator, self.tokens = collator, []

    def __call__(self, features):
        batch = self.collator(features)
        mask = batch.get("attention_mask")
        self.tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch


def shared_arguments(spec: dict) -> dict:
    """TrainingArguments every contender gets: the same optimisation, fp32, no evaluation or saving."""
    return dict(output_dir=spec["output_dir"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
                gradient_accumulation_steps=1, learning_rate=LEARNING_RATE, lr_scheduler_type="linear",
                warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=spec["seed"], bf16=False, fp16=False,
                logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True)


def alpaca_prompt(record: dict) -> str:
    from hf_recipes.prompts import ALPACA_INPUT, ALPACA_PROMPT  # the recipe's own: every contender sees one prompt

    section = ALPACA_INPUT.format(input=record["input"]) if (record.get("input") or "").strip() else ""
    return ALPACA_PROMPT.format(instruction=record["instruction"], input_section=section)


def recipe_trainer(spec: dict):
    from hf_recipes import recipes

    name = spec["recipe"]
    overrides = dict(model_name_or_path=spec["model"], train_file=spec["files"]["train"],
                     validation_file=spec["files"]["validation"], mixed_precision="no", report=False,
                     overwrite_output_dir=True, load_best_model_at_end=False, **shared_arguments(spec))
    if name == "sentiment":
        overrides.update(dataset_name=None, label_column="sentiment", max_seq_length=spec["max_length"])
    elif name == "lyrics":
        overrides.update(block_size=spec["max_length"])
    else:
        overrides.update(max_seq_length=spec["max_length"])
    overrides.update(spec.get("recipe_overrides", {}))
    trainer, _ = recipes.get(name).build_trainer(None, **overrides)
    return trainer, {"sentiment": "cross-entropy on the label (last real token pooled)",
                     "lyrics": "every token of packed blocks, songs kept apart",
                     "instruct": "response tokens + EOS only"}[name]


def example_trainer(spec: dict):
    """The transformers example scripts' way, written plainly (run_classification.py / run_clm.py)."""
    from itertools import chain

    from datasets import load_dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorForLanguageModeling, Trainer, TrainingArguments, default_data_collator)

    name, limit = spec["recipe"], spec["max_length"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.pad_token = tokenizer.eos_token
    builder = "csv" if name == "sentiment" else "json"
    raw = load_dataset(builder, data_files={"train": spec["files"]["train"]})["train"]
    if name == "sentiment":
        labels = sorted(set(raw["sentiment"]))
        model = AutoModelForSequenceClassification.from_pretrained(
            spec["model"], num_labels=len(labels), label2id={label: i for i, label in enumerate(labels)})
        model.config.pad_token_id = tokenizer.pad_token_id

        def tokenize(batch):  # run_classification.py: pad_to_max_length defaults to True
            out = tokenizer(batch["text"], padding="max_length", max_length=limit, truncation=True)
            out["label"] = [labels.index(s) for s in batch["sentiment"]]
            return out

        data = raw.map(tokenize, batched=True, remove_columns=raw.column_names)
        collator, loss = default_data_collator, f"cross-entropy on the label, every row padded to {limit}"
    elif name == "lyrics":
        model = AutoModelForCausalLM.from_pretrained(spec["model"])
        tokenized = raw.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=raw.column_names)

        def group_texts(examples):  # run_clm.py, verbatim in effect
            concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
            total = len(concatenated["input_ids"]) // limit * limit
            result = {k: [t[i: i + limit] for i in range(0, total, limit)] for k, t in concatenated.items()}
            result["labels"] = result["input_ids"].copy()
            return result

        data = tokenized.map(group_texts, batched=True)
        collator, loss = default_data_collator, "every token of group_texts blocks (songs run together, no EOS)"
    else:
        model = AutoModelForCausalLM.from_pretrained(spec["model"])
        texts = raw.map(lambda r: {"text": alpaca_prompt(r) + r["output"] + tokenizer.eos_token},
                        remove_columns=raw.column_names)
        data = texts.map(lambda b: tokenizer(b["text"], truncation=True, max_length=limit), batched=True,
                         remove_columns=["text"])
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        loss = "every token (prompt included), padded to the longest; pad = EOS so EOS is masked too"
    trainer = Trainer(model=model, args=TrainingArguments(**shared_arguments(spec)), train_dataset=data,
                      data_collator=collator, processing_class=tokenizer)
    return trainer, loss


def trl_trainer(spec: dict, packing: bool, checkpointing: bool):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    name = spec["recipe"]
    builder = "csv" if name == "sentiment" else "json"
    raw = load_dataset(builder, data_files={"train": spec["files"]["train"]})["train"]
    if name == "sentiment":
        data = raw.map(lambda r: {"prompt": f"Tweet: {r['text']}\nSentiment:", "completion": f" {r['sentiment']}"},
                       remove_columns=raw.column_names)
        loss = "the label word + EOS (completion-only)"
    elif name == "lyrics":
        data = raw.select_columns(["text"])
        loss = "every token (plain text, EOS appended)"
    else:
        data = raw.map(lambda r: {"prompt": alpaca_prompt(r), "completion": r["output"]},
                       remove_columns=raw.column_names)
        loss = "response tokens + EOS only (completion-only)"
    config = SFTConfig(**shared_arguments(spec), max_length=spec["max_length"], packing=packing,
                       **({} if checkpointing else {"gradient_checkpointing": False}))
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(spec["model"]))
    settings = ["packed" if packing else "unpacked",
                "gradient checkpointing " + ("on" if config.gradient_checkpointing else "off")]
    return trainer, f"{loss}; {', '.join(settings)}"


def run_one(spec: dict) -> dict:
    """Build, train and measure one contender (inside its own process)."""
    started = time.perf_counter()
    contender = spec["contender"]
    if contender == "recipe":
        trainer, loss_on = recipe_trainer(spec)
    elif contender == "example":
        trainer, loss_on = example_trainer(spec)
    else:
        trainer, loss_on = trl_trainer(spec, packing=contender == "trl-packed", checkpointing=contender != "trl-no-ckpt")
    counted = trainer.data_collator = Counted(trainer.data_collator)
    clock = step_clock()
    trainer.add_callback(clock)
    built = time.perf_counter()
    trainer.train()
    steps = len(clock.ends)
    if steps < 2:
        raise SystemExit(f"error: {contender} ran {steps} steps; raise --records or lower --batch_size")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    timed_tokens = sum(counted.tokens[1:steps])
    seconds = (clock.ends[-1] - clock.ends[0]) / (steps - 1)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before scoring the held-out records
    return {"contender": contender, "steps": steps, "s_per_step": seconds,
            "tokens_per_s": timed_tokens / (clock.ends[-1] - clock.ends[0]),
            "tokens_per_step": timed_tokens / (steps - 1), "build_s": built - started, "peak_rss_mib": peak_rss,
            "final_loss": sum(losses[-5:]) / len(losses[-5:]), "loss_on": loss_on,
            "held_out_loss": held_out_loss(spec, trainer.model)}


def held_out_loss(spec: dict, model) -> float:
    """One loss for every contender, on the validation records none trained on, whatever its training loss covered:
    instruct the response + EOS after the Alpaca prompt, lyrics every token of each song + EOS, both averaged over
    the tokens scored (the first --max_length of each record); sentiment the cross-entropy over the three classes,
    averaged over the tweets (a classifier's head on the tweet's tokens; TRL's causal LM: its next-token scores of
    the three label words after the prompt it trained on)."""
    import torch
    from transformers import AutoTokenizer

    name, limit = spec["recipe"], spec["max_length"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    path = spec["files"]["validation"]
    with open(path, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle)) if name == "sentiment" else [json.loads(line) for line in handle]
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for record in records:
            if name == "sentiment" and spec["contender"].startswith("trl"):
                ids = tokenizer(f"Tweet: {record['text']}\nSentiment:")["input_ids"][-limit:]
                first = [tokenizer(f" {word}")["input_ids"][0] for word in SENTIMENTS]
                scores = model(input_ids=torch.tensor([ids])).logits[0, -1, first]
                total -= torch.log_softmax(scores, -1)[SENTIMENTS.index(record["sentiment"])].item()
                count += 1
            elif name == "sentiment":
                ids = tokenizer(record["text"], truncation=True, max_length=limit)["input_ids"]
                scores = model(input_ids=torch.tensor([ids])).logits[0]
                total -= torch.log_softmax(scores, -1)[model.config.label2id[record["sentiment"]]].item()
                count += 1
            else:
                if name == "lyrics":
                    context, target = [], tokenizer(record["text"])["input_ids"] + [tokenizer.eos_token_id]
                else:
                    context = tokenizer(alpaca_prompt(record))["input_ids"]
                    target = tokenizer(record["output"])["input_ids"] + [tokenizer.eos_token_id]
                ids = (context + target)[:limit]
                scored = len(ids) - max(len(context), 1)  # next-token predictions of target tokens
                if scored <= 0:
                    continue
                logits = model(input_ids=torch.tensor([ids])).logits[0, -scored - 1:-1].float()
                total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[-scored:]), reduction="sum").item()
                count += scored
    return total / count


def compare(recipe: str, opts, folder: Path, model: str) -> None:
    files = write_inputs(folder, recipe, opts.records)
    runs = {}  # contender -> its results, one per seed
    for seed in opts.seeds:
        for contender in opts.contenders:
            spec = {"recipe": recipe, "contender": contender, "model": model, "files": files, "steps": opts.steps,
                    "batch_size": opts.batch_size, "max_length": opts.max_length, "seed": seed,
                    "recipe_overrides": dict(opts.recipe_overrides),
                    "output_dir": str(folder / f"run-{recipe}-{contender}-{seed}")}
            done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                  text=True, cwd=REPO)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                tail = "\n".join(done.stderr.strip().splitlines()[-3:])
                print(f"[{recipe}] {contender} (seed {seed}) failed (exit {done.returncode}):\n{tail}")
                continue
            runs.setdefault(contender, []).append(json.loads(lines[-1].removeprefix("RESULT ")))
    seeds = ", ".join(map(str, opts.seeds))
    print(f"\n{recipe}: {opts.records} train records, {opts.steps} steps of batch {opts.batch_size}, max length "
          f"{opts.max_length}, fp32, lr {LEARNING_RATE:g} linear, seed {seeds} (figures: their mean); s/step and "
          "tokens/s exclude step 1" + (f"; recipe with {' '.join(f'{k}={v}' for k, v in opts.recipe_overrides)}"
                                       if opts.recipe_overrides
                                       else ""))
    print(f"machine: {machine_line()}")
    print(f"{'contender':<13}{'s/step':>9}{'real tok/s':>12}{'tok/step':>10}{'build s':>9}{'peak RSS MiB':>14}"
          f"{'final loss':>12}{'held-out':>10}  loss on")
    mean = {contender: {key: sum(r[key] for r in rs) / len(rs) for key in rs[0] if isinstance(rs[0][key], float)}
            for contender, rs in runs.items()}
    base = mean.get("recipe")
    for contender, r in mean.items():
        ratio = f" ({r['s_per_step'] / base['s_per_step']:.2f}x recipe)" if base and r is not base else ""
        print(f"{contender:<13}{r['s_per_step']:>9.4f}{r['tokens_per_s']:>12.0f}{r['tokens_per_step']:>10.0f}"
              f"{r['build_s']:>9.1f}{r['peak_rss_mib']:>14.0f}{r['final_loss']:>12.4f}{r['held_out_loss']:>10.4f}"
              f"  {runs[contender][0]['loss_on']}{ratio}")
    print(f"held-out: the same loss for every contender on the {held_out_rows(opts.records)} validation records "
          "(see held_out_loss)")
    if len(opts.seeds) > 1:
        for contender, rs in runs.items():
            print(f"  {contender}: held-out per seed " + ", ".join(f"{r['held_out_loss']:.4f}" for r in rs))


def setting(text: str) -> tuple[str, object]:
    """KEY=VALUE from the command line; VALUE as JSON when it parses (numbers, true/false), else the text."""
    key, equals, value = text.partition("=")
    if not (key and equals):
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=[*RECIPES, "all"], default="all")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per contender (the first untimed)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=256,
                        help="max tokens per row (lyrics: the block size of packed / grouped blocks)")
    parser.add_argument("--records", type=int, default=400,
                        help="train records taken from the real data (the next quarter of that, at least 100, held out)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[SEED],
                        help="run every contender once per seed (data order, dropout, new heads) and print the means")
    parser.add_argument("--recipe_overrides", nargs="+", default=[], metavar="KEY=VALUE", type=setting,
                        help="settings of the recipe contender only, e.g. train_sampling_strategy=random "
                        "(a value reads as JSON when it can: 1e-3, true)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single contender, in a subprocess
    opts = parser.parse_args()
    if opts.one:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print("RESULT " + json.dumps(run_one(json.loads(opts.one))))
        return
    require_data()
    if any(c.startswith("trl") for c in opts.contenders):
        try:
            import trl  # noqa: F401
        except ImportError:
            sys.exit('error: TRL is not installed; pip install -e ".[bench]" (or leave out the trl contenders)')
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = save_tiny_model(folder / "tiny-gpt2")
        for recipe in RECIPES if opts.recipe == "all" else (opts.recipe,):
            compare(recipe, opts, folder, model)


if __name__ == "__main__":
    main()
