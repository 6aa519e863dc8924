"""Crash and resume: kill -9 a training run at random moments, run the same command again, compare final metrics.

    .venv/bin/python bench/bench_resume.py --trials 4            # 4 kills per recipe (12 in all)
    .venv/bin/python bench/bench_resume.py --recipes lyrics --trials 10
    .venv/bin/python bench/bench_resume.py --recipes sentiment --steps 24 --save_steps 5 --after_checkpoint 15 \
        --flags --train_file ../shared/data/tweet_sentiment/train.csv --test_file ../shared/data/tweet_sentiment/test.csv \
        --max_train_samples 720 --per_device_train_batch_size 16 --gradient_accumulation_steps 4 \
        --tokenizer_name ../shared/data/gpt2_tokenizer

Each trial starts `hf-recipes train RECIPE` (tiny GPT-2, bundled sample data, accumulation 3; 24 steps span 4 or 5
epochs, which for sentiment and instruct end in a partial accumulation step; a checkpoint every 2 steps), kills it
with SIGKILL at a random moment of its training (or as soon as checkpoint N is complete, --after_checkpoint N), and
re-runs the identical command, which resumes from the newest complete checkpoint. The final eval/test metrics must
equal an uninterrupted run's. --flags appends CLI flags that override these settings (the third example is the
shipped sentiment settings on 720 real tweets: batch 16 x 4, group_by_length, epochs of 11 whole steps and one of
a single batch). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import REPO

from hf_recipes.run_folder import last_complete_checkpoint

SAMPLES = REPO / "hf_recipes" / "samples"
OUT = REPO / "runs" / "bench" / "resume"
TASK_FLAGS = {  # sentiment, instruct: 100 train rows, 13 batches of 8, so an epoch is 4 steps of 3 and one of 1
    "sentiment": ["--train_file", str(SAMPLES / "sentiment" / "train.csv"), "--test_file",
                  str(SAMPLES / "sentiment" / "test.csv"), "--label_column", "sentiment", "--max_train_samples", "100"],
    "lyrics": ["--train_file", str(SAMPLES / "lyrics" / "songs.txt"), "--block_size", "64", "--max_new_tokens", "8"],
    "instruct": ["--train_file", str(SAMPLES / "instructions" / "instructions.json"), "--max_new_tokens", "8",
                 "--max_train_samples", "100"],
}


def command(recipe: str, output_dir: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "hf_recipes.cli", "train", recipe, *TASK_FLAGS[recipe],
        "--model_name_or_path", "", "--model_type", "gpt2", "--config_overrides",
        "n_layer=2,n_embd=64,n_head=2,n_positions=256", "--tokenizer_name", str(SAMPLES / "tokenizer"),
        "--output_dir", str(output_dir), "--max_steps", str(args.steps), "--save_strategy", "steps",
        "--save_steps", str(args.save_steps), "--save_total_limit", "2", "--eval_strategy", "no",
        "--load_best_model_at_end", "false", "--logging_steps", "1", "--per_device_train_batch_size", "8",
        "--gradient_accumulation_steps", "3", "--learning_rate", "1e-3", "--mixed_precision", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", *args.flags,
    ]


def final_metrics(output_dir: Path) -> dict[str, float]:
    results = json.loads((output_dir / "all_results.json").read_text())
    return {k: v for k, v in results.items() if k.startswith(("eval_", "test_")) and isinstance(v, float)
            and not any(t in k for t in ("runtime", "per_second", "preparation_time"))}


def difference(key: str, a: float, b: float) -> float:
    """Absolute difference; perplexity, being exp(loss), is compared as a loss."""
    return abs(math.log(a) - math.log(b)) if "perplexity" in key else abs(a - b)


def run(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def checkpoints(output_dir: Path) -> list[str]:
    return sorted((p.name for p in output_dir.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def trial(recipe: str, args: argparse.Namespace, reference: dict, training_window: tuple[float, float], index: int,
          rng) -> dict:
    output_dir = OUT / f"{recipe}-{index}"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    log = output_dir.parent / f"{recipe}-{index}.log"
    log.unlink(missing_ok=True)
    start = time.perf_counter()
    process = run(command(recipe, output_dir, args), log)
    if args.after_checkpoint:
        wanted = str(output_dir / f"checkpoint-{args.after_checkpoint}")
        while process.poll() is None and last_complete_checkpoint(output_dir) != wanted:
            time.sleep(0.01)
    else:
        time.sleep(rng.uniform(*training_window))
    kill_after = time.perf_counter() - start
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before_kill = (output_dir / "recipe.json").exists()  # written last: the run was complete
    resumed_from = last_complete_checkpoint(output_dir)
    # A run that ended before the kill is complete: re-running it would (rightly) refuse a finished output_dir.
    code = 0 if finished_before_kill else run(command(recipe, output_dir, args), log).wait()
    metrics = final_metrics(output_dir) if code == 0 else {}
    worst = max((difference(k, metrics[k], v) for k, v in reference.items()), default=float("nan")) if metrics \
        else float("nan")
    loss = next((k for k in ("test_loss", "eval_loss") if k in reference), None)
    return {"recipe": recipe, "kill at s": round(kill_after, 1), "finished before kill": finished_before_kill,
            "resumed from": resumed_from and Path(resumed_from).name, "resume exit": code,
            loss: metrics.get(loss), "max |diff|": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(TASK_FLAGS))
    parser.add_argument("--trials", type=int, default=4, help="kills per recipe")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--save_steps", type=int, default=2)
    parser.add_argument("--after_checkpoint", type=int, help="kill as soon as checkpoint-N is complete")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="CLI flags appended to every run")
    args = parser.parse_args()
    logging.getLogger("hf_recipes.trainer").setLevel(logging.ERROR)  # polling meets checkpoints being written
    rng = random.Random(args.seed)
    rows = []
    for recipe in args.recipes:
        reference_dir = OUT / f"{recipe}-reference"
        shutil.rmtree(reference_dir, ignore_errors=True)
        reference_dir.mkdir(parents=True)
        start = time.perf_counter()
        process = run(command(recipe, reference_dir, args), OUT / f"{recipe}-reference.log")
        seen, first_save, last_save = 0, None, None
        while process.poll() is None:
            count = len(checkpoints(reference_dir))
            if count != seen:  # a checkpoint appeared (or an old one was rotated away)
                seen, last_save = count, time.perf_counter() - start
                first_save = first_save or last_save
            time.sleep(0.05)
        if process.returncode != 0 or first_save is None:
            sys.exit(f"error: the uninterrupted {recipe} run failed; see {OUT / (recipe + '-reference.log')}")
        total = time.perf_counter() - start
        reference = final_metrics(reference_dir)
        state = json.loads((reference_dir / "trainer_state.json").read_text())
        window = (first_save, total)  # kills land from the first save to the last result file
        print(f"{recipe}: uninterrupted run {total:.1f} s, {state['global_step']} steps over {state['epoch']:.2f} "
              f"epochs, checkpoints written from {first_save:.1f} s to {last_save:.1f} s; {len(reference)} final "
              f"metrics{', test_loss %.5f' % reference['test_loss'] if 'test_loss' in reference else ''}", flush=True)
        for index in range(args.trials):
            rows.append(trial(recipe, args, reference, window, index, rng))
            print("  " + json.dumps(rows[-1]), flush=True)
    exact = sum(r["resume exit"] == 0 and r["max |diff|"] == 0 for r in rows)
    print(f"\n{exact} of {len(rows)} killed runs resumed to exactly the uninterrupted metrics "
          f"(largest difference {max(r['max |diff|'] for r in rows):.2e})")


if __name__ == "__main__":
    main()
