"""LoRA against full fine-tuning of the same model on real data: trainable parameters, seconds per step, peak memory
and the final evaluation loss.

    .venv/bin/python bench/bench_lora.py                       # CPU: tiny profile GPT-2, lyrics songs.jsonl
    .venv/bin/python bench/bench_lora.py --steps 30 --block_size 256
    .venv/bin/python bench/bench_lora.py --gpu                 # ~0.5B random-init Qwen2: full vs LoRA vs QLoRA

A random base of the chosen profile is saved to a temporary folder first (LoRA needs a saved base), then the lyrics
recipe trains it on ../shared/data/lyrics/songs.jsonl once in full and once with LoRA (r 16, all-linear), the same
data, steps, batch and learning-rate schedule (--full_lr and --lora_lr: LoRA usually wants a larger rate). On CPU the
peak is the process's resident set (VmHWM, reset before each side); with --gpu it is
torch.cuda.max_memory_allocated. Seconds per step leave out 2 warm-up steps. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch
from bench_floor import StepClock, reset_peak_rss, rss_mib
from common import DATA, GPT2_FILES, TINY, require_data, timing_overrides
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from hf_recipes.recipes import lyrics

WARMUP = 2
# Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864), random weights, GPT-2's vocabulary.
QWEN2_HALF_B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True}


def save_random_base(folder: Path, gpu: bool) -> str:
    tokenizer = AutoTokenizer.from_pretrained(GPT2_FILES)
    special = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    if gpu:
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN2_HALF_B, **special))
    else:
        config = GPT2Config(**special)
        config.update_from_string(TINY)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def peak_memory_mib(gpu: bool) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if gpu else rss_mib()


def reset_peak(gpu: bool) -> None:
    gc.collect()  # the previous side's model
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()


def train_side(base: str, output_dir: str, args, **side) -> dict:
    overrides = timing_overrides(
        output_dir, model_type=None, config_overrides=None, model_name_or_path=base, tokenizer_name=base,
        train_file=str(DATA / "lyrics" / "songs.jsonl"), title_column="title", block_size=args.block_size,
        max_steps=WARMUP + args.steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, max_eval_samples=args.eval_songs, logging_steps=10**6,
        use_cpu=not args.gpu, mixed_precision="bf16" if args.gpu else "no", **side)
    trainer, prepared = lyrics.build_trainer(**overrides)
    model = prepared.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    clock = StepClock()
    trainer.add_callback(clock)
    reset_peak(args.gpu)
    start = time.perf_counter()
    trainer.train()
    seconds = (clock.ends[-1] - clock.ends[WARMUP - 1]) / args.steps if args.steps else time.perf_counter() - start
    peak = peak_memory_mib(args.gpu)
    return {"trainable": trainable, "total": total, "s/step": seconds, "peak MiB": peak,
            "eval loss": trainer.evaluate()["eval_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="~0.5B Qwen2 on a CUDA GPU: full vs LoRA vs QLoRA")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (after 2 warm-up steps)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--eval_songs", type=int, default=100, help="validation songs for the final eval loss")
    parser.add_argument("--full_lr", type=float, default=5e-4)
    parser.add_argument("--lora_lr", type=float, default=2e-3)
    args = parser.parse_args()
    require_data()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("error: --gpu needs a CUDA GPU")
    sides = {"full": {"learning_rate": args.full_lr},
             "LoRA r16": {"learning_rate": args.lora_lr, "use_peft": True}}
    if args.gpu:
        sides["QLoRA r16 nf4"] = {"learning_rate": args.lora_lr, "use_peft": True, "load_in_4bit": True}
    with tempfile.TemporaryDirectory() as folder:
        base = save_random_base(Path(folder) / "base", args.gpu)
        results = {name: train_side(base, str(Path(folder) / name.split()[0]), args, **side)
                   for name, side in sides.items()}
    where = (torch.cuda.get_device_name() if args.gpu else f"CPU, {torch.get_num_threads()} threads")
    profile = "random-init Qwen2 ~0.5B (hidden 896, 24 layers), bf16" if args.gpu else f"tiny GPT-2 ({TINY}), fp32"
    print(f"\nlyrics on songs.jsonl, {profile}, {where}; batch {args.batch_size} x block {args.block_size}, "
          f"{args.steps} timed steps after {WARMUP} warm-up, eval on {args.eval_songs} songs")
    memory = "peak GPU MiB" if args.gpu else "peak RSS MiB"
    print(f"{'side':<15}{'trainable':>14}{'of total':>14}{'s/step':>10}{memory:>14}{'eval loss':>11}")
    for name, r in results.items():
        print(f"{name:<15}{r['trainable']:>14,}{r['total']:>14,}{r['s/step']:>10.4f}{r['peak MiB']:>14.0f}"
              f"{r['eval loss']:>11.4f}")


if __name__ == "__main__":
    main()
