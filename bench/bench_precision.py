"""CPU precision by measurement: GPT-2 124M training steps in fp32 and under bf16 autocast on this CPU.

    make bench BENCH=precision
    .venv/bin/python bench/bench_precision.py --tokens 256 --steps 3

Random-init GPT-2 124M (the original config from ../shared/data/gpt2_tokenizer, no weights), one row of --tokens
tokens of real lyrics per step, AdamW, causal-LM loss. Each precision runs 1 untimed warm-up step, then --steps timed
ones. Prints the CPU's flags, the one-off matmul check behind `mixed_precision: measure`, and per precision seconds
per step, tokens/s, peak RSS and the last loss. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import DATA, GPT2_FILES, require_data, reset_peak_rss, rss_mib
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_recipes.precision import BF16_MIN_SPEEDUP, autocast_dtype_for_cpu, cpu_matmul_rates


def cpu_description() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(info.split())
    found = [flag for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if flag in flags]
    return f"{name}, {torch.get_num_threads()} threads, flags: {' '.join(found) or 'none of amx/avx512/avx2'}"


def train_steps(model, batch: torch.Tensor, steps: int, dtype: torch.dtype | None) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ends, loss = [], float("nan")
    for _ in range(1 + steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
    return (ends[-1] - ends[0]) / steps, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens per step (one row)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision (after 1 warm-up)")
    args = parser.parse_args()
    require_data()
    tokenizer = AutoTokenizer.from_pretrained(GPT2_FILES)
    songs = [json.loads(line)["text"] for line in (DATA / "lyrics" / "songs.jsonl").open(encoding="utf-8")]
    ids = tokenizer("\n\n".join(songs[:50]))["input_ids"][: args.tokens]
    batch = torch.tensor([ids])
    config = GPT2Config.from_pretrained(GPT2_FILES)

    print(f"CPU: {cpu_description()}")
    rates = cpu_matmul_rates()
    print(f"mixed_precision auto (CPU flags): {'bf16' if autocast_dtype_for_cpu() else 'fp32'}; "
          f"measure: fp32 {rates['fp32']:.1f} GFLOP/s, bf16 {rates['bf16']:.1f} GFLOP/s -> "
          f"{'bf16' if rates['bf16'] >= BF16_MIN_SPEEDUP * rates['fp32'] else 'fp32'}")
    print(f"GPT-2 124M ({config.n_layer} layers, n_embd {config.n_embd}), random init, {len(ids)} tokens/step, "
          f"{args.steps} timed steps after 1 warm-up")
    print(f"{'precision':<11}{'s/step':>9}{'tokens/s':>10}{'peak RSS MiB':>14}{'last loss':>11}")
    results = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).train()
        reset_peak_rss()
        seconds, loss = train_steps(model, batch, args.steps, dtype)
        results[name] = seconds
        print(f"{name:<11}{seconds:>9.2f}{len(ids) / seconds:>10.0f}{rss_mib():>14.0f}{loss:>11.4f}")
        del model
    print(f"bf16 / fp32 time per step: {results['bf16'] / results['fp32']:.2f}x")


if __name__ == "__main__":
    main()
