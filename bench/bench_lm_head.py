"""The LM head's cross-entropy three ways: whole logits, hf_recipes' chunked autograd function, torch's own.

    make bench BENCH=lm_head
    .venv/bin/python bench/bench_lm_head.py --repeats 5 --torch_chunks 256 512 1024 2048

The demo lyrics profile (GPT-2, 2 layers x 128, 50,257-word head), a batch of 16 x 128 token ids, fp32, no dropout.
For each way, one forward + backward of the whole model: the median seconds and the median peak memory above the
memory before the step (peak RSS; large allocations are mmapped, so freed memory leaves the RSS and each step's peak
is its own), over --repeats rounds in which every way runs once, in a rotating order, so that the load of a shared
machine falls on all alike. The ways: transformers' own loss (whole [tokens x vocab] logits);
hf_recipes.fused_loss.FusedLinearCrossEntropy (gradients made chunk by chunk in the forward pass, its chunk size);
torch.nn.functional.linear_cross_entropy with each --torch_chunks rows per chunk (and, with --torch_default, with
its default options). Also the loss and the largest gradient difference against transformers' loss. With --profile,
a torch.profiler table of one step of each way first. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# glibc keeps freed blocks of up to 32 MiB in the heap once it has seen them freed, so one way's freed logits would
# hide the next way's peak: a fixed threshold maps every block over 1 MiB on its own and unmaps it when freed.
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import machine_line, reset_peak_rss, rss_mib  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_recipes.fused_loss import CHUNK_ELEMENTS, FusedLinearCrossEntropy, chunk_rows  # noqa: E402

WHOLE = "whole logits (transformers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch_chunks", type=int, nargs="+", default=[256, 512, 1024, 2048],
                        help="rows per chunk for torch.nn.functional.linear_cross_entropy")
    parser.add_argument("--torch_default", action="store_true",
                        help="also torch's function with LinearCrossEntropyOptions() (chunk size chosen by torch)")
    parser.add_argument("--profile", action="store_true", help="print a profiler table of one step of each way")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=2, n_positions=128, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, config.vocab_size, (16, 128))
    targets = ids[:, 1:].reshape(-1)
    weight = model.lm_head.weight
    ours_rows = chunk_rows(config.vocab_size, CHUNK_ELEMENTS)

    def hidden():
        return model.transformer(input_ids=ids, use_cache=False).last_hidden_state[:, :-1].reshape(-1, config.n_embd)

    def whole_logits():
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    def ours():
        return FusedLinearCrossEntropy.apply(hidden(), weight, targets, ours_rows) / len(targets)

    def torchs(options):
        return lambda: F.linear_cross_entropy(hidden(), weight, targets, options=options)

    ways = {WHOLE: whole_logits, f"hf_recipes, chunks of {ours_rows}": ours}
    for rows in args.torch_chunks:
        ways[f"torch, chunks of {rows}"] = torchs(torch.nn.LinearCrossEntropyOptions(batch_chunk_size=rows))
    if args.torch_default:
        ways["torch, default options"] = torchs(torch.nn.LinearCrossEntropyOptions())

    if args.profile:
        for name, step in ways.items():
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                step().backward()
            model.zero_grad(set_to_none=True)
            print(f"{name}:")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))

    seconds, peaks, results = {n: [] for n in ways}, {n: [] for n in ways}, {}
    names = list(ways)
    for _ in range(args.repeats + 1):  # the first round warms up and is not counted
        for name in names:
            model.zero_grad(set_to_none=True)
            before = rss_mib("VmRSS")
            reset_peak_rss()
            start = time.perf_counter()
            loss = ways[name]()
            loss.backward()
            seconds[name].append(time.perf_counter() - start)
            peaks[name].append(rss_mib() - before)
            results[name] = (loss.item(), model.transformer.wte.weight.grad.clone())
        names = names[1:] + names[:1]
    reference_loss, reference_grad = results[WHOLE]
    tokens = ids.numel()
    print(machine_line())
    print(f"{torch.__version__}, {torch.get_num_threads()} threads, fp32, {tokens} tokens x {config.n_embd} x "
          f"{config.vocab_size} per forward + backward; medians of {args.repeats} rounds after 1 warm-up round")
    print(f"{'loss computed as':<34}{'s':>8}{'min s':>8}{'max s':>8}{'peak +MiB':>11}{'loss':>12}{'max grad diff':>15}")
    for name in ways:
        loss, grad = results[name]
        times = seconds[name][1:]
        print(f"{name:<34}{statistics.median(times):>8.3f}{min(times):>8.3f}{max(times):>8.3f}"
              f"{statistics.median(peaks[name][1:]):>11.0f}{loss:>12.6f}"
              f"{(grad - reference_grad).abs().max().item():>15.2e}")


if __name__ == "__main__":
    main()
