"""GPT-2 124M on a GPU, trained by the recipes themselves: tokens/s, MFU and peak memory, the book's instruct run end
to end, a Kaggle sentiment epoch, and fp16 against bf16 on the same steps. Never run by the tests.

    .venv/bin/python bench/bench_gpu.py                                  # every part, on the GPU
    .venv/bin/python bench/bench_gpu.py --part lyrics --torch_compile    # one part, with a lever
    .venv/bin/python bench/bench_gpu.py --device cpu --arch tiny --block_size 128 --batch_size 2 --steps 2 \\
        --instruct_records 40 --sentiment_rows 256                       # the same code paths on a CPU, in seconds

lyrics: random-init 124M (the original GPT-2 config from ../shared/data/gpt2_tokenizer), songs.jsonl packed into
blocks of --block_size as the lyrics recipe packs them, --steps timed after --warmup. MFU = 6 x parameters x tokens/s
over the GPU's dense bf16 peak (H100 and H200 SXM: 989 TFLOP/s); attention adds 12 x layers x n_embd x block FLOPs
per token (forward and backward), printed beside it. instruct: the book's 1,100 records, 2 epochs, batch 8, wall time
of train(). sentiment: one epoch of the Kaggle train tweets. precision: the lyrics steps in bf16 and in fp16 (dropout
off, so both see the same network), the largest relative difference of the logged losses and fp16's skipped steps.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import DATA, GPT2_FILES, TINY, require_data, reset_peak_rss, rss_mib, timing_overrides
from transformers import TrainerCallback

from hf_recipes.recipes import instruct, lyrics, sentiment

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
NO_DROPOUT = "resid_pdrop=0.0,embd_pdrop=0.0,attn_pdrop=0.0,summary_first_dropout=0.0"


class StepClock(TrainerCallback):
    """Step end times, and which optimizer steps fp16's loss scaling skipped."""

    def __init__(self, accelerator):
        self.accelerator, self.ends, self.skipped = accelerator, [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())
        if self.accelerator.optimizer_step_was_skipped:
            self.skipped.append(state.global_step)


def model_settings(args, **extra) -> dict:
    gpu = args.device != "cpu"
    settings = timing_overrides(f"runs/bench/gpu-{args.arch}", use_cpu=not gpu, mixed_precision=args.precision,
                                optim="adamw_torch_fused", torch_compile=args.torch_compile, tf32=gpu or None,
                                dataloader_num_workers=args.workers, dataloader_pin_memory=gpu, **extra)
    if args.arch == "124m":
        settings.update(config_overrides=None, config_name=str(GPT2_FILES))
    if args.no_dropout:
        settings["config_overrides"] = ",".join(filter(None, [settings["config_overrides"] or "", NO_DROPOUT]))
    return settings


def memory() -> str:
    if torch.cuda.is_available():
        return f"peak GPU memory allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"peak RSS {rss_mib():.0f} MiB"


def reset_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def peak_flops() -> float | None:
    name = device_name()
    return next((flops for gpu, flops in PEAK_BF16_FLOPS.items() if gpu in name), None)


def lyrics_steps(args, precision: str | None = None) -> dict:
    total = args.warmup + args.steps
    settings = model_settings(args, train_file=str(DATA / "lyrics" / "songs.jsonl"), block_size=args.block_size,
                              per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                              max_steps=total, learning_rate=6e-4,
                              logging_steps=1, warmup_steps=0.1, train_sampling_strategy="sequential")
    if precision:
        settings["mixed_precision"] = precision
    trainer, prepared = lyrics.build_trainer(**settings)
    clock = StepClock(trainer.accelerator)
    trainer.add_callback(clock)
    reset_memory()
    trainer.train()
    seconds = (clock.ends[-1] - clock.ends[args.warmup - 1]) / args.steps
    config = prepared.model.config
    return {"trainer": trainer, "config": config, "seconds": seconds, "memory": memory(),
            "tokens_per_s": args.batch_size * args.block_size / seconds,
            "parameters": prepared.model.num_parameters(), "skipped": clock.skipped,
            "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e]}


def part_lyrics(args) -> None:
    run = lyrics_steps(args)
    config, tokens_per_s = run["config"], run["tokens_per_s"]
    model_flops = 6 * run["parameters"] * tokens_per_s
    attention_flops = 12 * config.n_layer * config.n_embd * args.block_size * tokens_per_s
    peak = peak_flops()
    print(f"\nlyrics: GPT-2 {run['parameters'] / 1e6:.0f}M, block {args.block_size}, batch {args.batch_size}, "
          f"{args.precision}{', compiled' if args.torch_compile else ''}, on {device_name()}, {args.steps} steps after "
          f"{args.warmup}")
    print(f"{run['seconds']:.4f} s/step, {tokens_per_s:,.0f} tokens/s, {run['memory']}, fused LM loss: "
          f"{run['trainer'].fused_head is not None}")
    if peak:
        print(f"MFU {model_flops / peak:.1%} (6N); with attention FLOPs {(model_flops + attention_flops) / peak:.1%} "
              f"(peak {peak / 1e12:.0f} TFLOP/s dense bf16)")
    else:
        print(f"{model_flops / 1e12:.2f} TFLOP/s (6N) + {attention_flops / 1e12:.2f} attention; no peak known for "
              f"{device_name()}")


def per_step(trainer) -> int:
    return trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps * trainer.args.world_size


def part_instruct(args) -> None:
    # hf_recipes/recipes/instruct.yaml's settings are the book's: 2 epochs of batch 8, lr 5e-5
    settings = model_settings(args, train_file=str(DATA / "instructions" / "instruction-data.json"),
                              max_train_samples=args.instruct_records)
    trainer, prepared = instruct.build_trainer(**settings)
    reset_memory()
    metrics = trainer.train().metrics
    print(f"\ninstruct: {len(prepared.datasets['train'])} train records, {trainer.args.num_train_epochs:g} epochs "
          f"({trainer.state.global_step} steps of {per_step(trainer)}) on {device_name()}: "
          f"{metrics['train_runtime']:.1f} s of training, {trainer.real_tokens / metrics['train_runtime']:,.0f} real "
          f"tokens/s, {memory()}")


def part_sentiment(args) -> None:
    # hf_recipes/recipes/sentiment.yaml's batch (8 x accumulation 4), lr and length grouping; one epoch instead of 3
    settings = model_settings(args, train_file=str(DATA / "tweet_sentiment" / "train.csv"), test_file=None,
                              label_column="sentiment", num_train_epochs=1, max_train_samples=args.sentiment_rows)
    trainer, prepared = sentiment.build_trainer(**settings)
    reset_memory()
    metrics = trainer.train().metrics
    print(f"\nsentiment: one epoch of {len(prepared.datasets['train']):,} tweets ({trainer.state.global_step} steps "
          f"of {per_step(trainer)}) on {device_name()}: {metrics['train_runtime']:.1f} s, "
          f"{trainer.real_tokens / metrics['train_runtime']:,.0f} real tokens/s, {memory()}")


def part_precision(args) -> None:
    if args.device == "cpu":
        raise SystemExit("error: --part precision compares fp16 with bf16 on a GPU; fp16 AMP needs one")
    args.no_dropout = True
    runs = {precision: lyrics_steps(args, precision) for precision in ("bf16", "fp16")}
    bf16, fp16 = runs["bf16"]["losses"], runs["fp16"]["losses"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(bf16, fp16))
    print(f"\nprecision: {len(bf16)} lyrics steps each on {device_name()}, dropout off")
    for name, run in runs.items():
        print(f"{name}: {run['seconds']:.4f} s/step, {run['tokens_per_s']:,.0f} tokens/s, {run['memory']}, last loss "
              f"{run['losses'][-1]:.4f}, skipped steps {run['skipped'] or 'none'}")
    print(f"largest relative difference of the logged losses: {worst:.2%}")


PARTS = {"lyrics": part_lyrics, "instruct": part_instruct, "sentiment": part_sentiment, "precision": part_precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), nargs="+", default=list(PARTS))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--arch", choices=["124m", "tiny"], default="124m", help=f"tiny: {TINY}")
    parser.add_argument("--precision", choices=["bf16", "fp16", "no", "auto"], default="bf16")
    parser.add_argument("--block_size", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=16, help="lyrics blocks per step")
    parser.add_argument("--steps", type=int, default=30, help="timed lyrics steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed lyrics steps first (compilation, allocator)")
    parser.add_argument("--workers", type=int, default=2, help="dataloader_num_workers")
    parser.add_argument("--torch_compile", action="store_true")
    parser.add_argument("--no_dropout", action="store_true")
    parser.add_argument("--instruct_records", type=int, help="instruct: only the first N records (default: all)")
    parser.add_argument("--sentiment_rows", type=int, help="sentiment: only the first N tweets (default: all)")
    args = parser.parse_args()
    require_data()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; --device cpu runs the same code paths")
    for part in args.part:
        PARTS[part](args)


if __name__ == "__main__":
    main()
