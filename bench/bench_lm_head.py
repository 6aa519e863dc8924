"""Where a tiny-lyrics training step goes, and whether computing the LM head's cross-entropy in chunks helps.

    make bench BENCH=lm_head
    .venv/bin/python bench/bench_lm_head.py --repeats 4

The demo lyrics profile (GPT-2, 2 layers x 128, 50,257-word head), a batch of 16 x 128 token ids, fp32, no dropout.
Prints seconds per forward + backward (best of --repeats, interleaved) for: transformers' own loss (whole
[tokens x vocab] logits); the loss in row chunks recomputed in the backward pass (torch.utils.checkpoint); and the
fused linear cross-entropy the recipes train with in fp32 (hf_recipes.fused_loss: gradients made chunk by chunk in
the forward pass), with the largest gradient difference against transformers' loss; before that, a torch.profiler
table of one forward + backward with the first and with the last. Asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import rss_mib
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint
from transformers import GPT2Config, GPT2LMHeadModel

from hf_recipes.fused_loss import chunk_rows, summed_token_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=2048, help="rows per chunk for the recomputed chunks")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=2, n_positions=128, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, config.vocab_size, (16, 128))
    targets = ids[:, 1:].reshape(-1)

    def hidden():
        return model.transformer(input_ids=ids, use_cache=False).last_hidden_state[:, :-1].reshape(-1, config.n_embd)

    def whole_logits():
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    def recomputed_chunks():
        rows, weight = hidden(), model.lm_head.weight
        piece = lambda h, y: F.cross_entropy(h @ weight.t(), y, reduction="sum")  # noqa: E731
        return sum(checkpoint(piece, rows[i : i + args.chunk], targets[i : i + args.chunk], use_reentrant=False)
                   for i in range(0, len(targets), args.chunk)) / len(targets)

    def fused():
        return summed_token_loss(hidden(), model.lm_head.weight, targets) / len(targets)

    for name, step in (("whole logits (transformers)", whole_logits), ("fused (hf_recipes.fused_loss)", fused)):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            step().backward()
        model.zero_grad()
        print(f"{name}:")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))

    sides = {"whole logits (transformers)": whole_logits, f"chunks of {args.chunk}, recomputed": recomputed_chunks,
             f"fused, chunks of {chunk_rows(config.vocab_size)} (recipes)": fused}
    grads, best = {}, {}
    for _ in range(args.repeats):
        for name, step in sides.items():
            start = time.perf_counter()
            loss = step()
            loss.backward()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
            grads[name] = (loss.item(), model.transformer.wte.weight.grad.clone())
            model.zero_grad()
    reference_loss, reference_grad = grads["whole logits (transformers)"]
    tokens = ids.numel()
    print(f"{torch.get_num_threads()} threads, {tokens} tokens per forward + backward; peak RSS {rss_mib():.0f} MiB")
    print(f"{'loss computed as':<32}{'s':>8}{'tokens/s':>10}{'loss':>12}{'max grad diff':>15}")
    for name, seconds in best.items():
        loss, grad = grads[name]
        print(f"{name:<32}{seconds:>8.3f}{tokens / seconds:>10.0f}{loss:>12.6f}"
              f"{(grad - reference_grad).abs().max().item():>15.2e}")


if __name__ == "__main__":
    main()
