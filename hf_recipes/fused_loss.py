"""A causal LM's training loss without whole logits: the output head's cross-entropy chunk by chunk, its gradients
made in the forward pass.

Transformers makes the [tokens x vocab] logits, their log-softmax and both gradients whole; with a 50,257-word head
that is most of a small model's step time and memory. Torch 2.13's ``linear_cross_entropy`` computes it in chunks of
rows; on older torch, :class:`FusedLinearCrossEntropy` does (the arrangement of Liger's fused linear cross-entropy,
in plain PyTorch). Evaluation sums each sequence's token losses the same way.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F

from hf_recipes.metrics import token_losses

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 2**24  # 64 MiB of fp32 logits per chunk: 333 rows of GPT-2 (faster on CPU than 1,335 or 2,048)
# torch.nn.functional.linear_cross_entropy, where torch has it: 2,048 x 128 x 50,257 fp32, forward + backward on 2 CPU
# cores (bench/bench_lm_head.py, load below 2), it took 0.44-0.50 s and +106-131 MiB with 128-256 rows per chunk,
# against 0.61-0.62 s and +209 MiB for FusedLinearCrossEntropy and 0.89 s and +1,236 MiB for whole logits (at load 4
# the two chunked ways were within noise); evaluation's per-sequence sums of 16 x 128 tokens took 0.15 s against
# 0.40 s. Its default options chunk by 4 rows there (3.6x to 7x slower), hence an explicit size: 32 MiB of fp32
# logits, 166 rows of GPT-2.
TORCH_CHUNK_ELEMENTS = 2**23
TORCH_CHUNKS = getattr(torch.nn, "LinearCrossEntropyOptions", None)  # torch >= 2.13
IGNORE = -100
PROBE_LOGIT_STD = 8.0  # logits this spread out are changed visibly by soft-capping at 30 (Gemma 2)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets`` (-100 ignored), ``chunk`` rows at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        wide = torch.promote_types(hidden.dtype, torch.float32)  # softmax and sums never below fp32
        total = hidden.new_zeros((), dtype=wide)
        grad_hidden = torch.empty_like(hidden)  # every chunk writes its rows
        grad_weight = torch.zeros_like(weight, dtype=wide)
        for start in range(0, hidden.shape[0], chunk):
            rows, labels = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (rows @ weight.t()).to(wide)
            real, index = labels != IGNORE, labels.clamp(min=0)
            target = logits.gather(1, index[:, None])[:, 0]
            # One pass each for max, exp and sum, all in place: the logits become the softmax, which minus the
            # one-hot target is d loss / d logits.
            peak = logits.amax(-1, keepdim=True)
            probs = logits.sub_(peak).exp_()
            norm = probs.sum(-1, keepdim=True)
            total += ((peak[:, 0] + norm[:, 0].log() - target) * real).sum()
            probs.div_(norm)
            probs[torch.arange(len(labels), device=labels.device), index] -= 1
            probs.index_fill_(0, torch.nonzero(~real).flatten(), 0.0)  # rows with no target (cheaper than a mask)
            grad = probs.to(hidden.dtype)
            torch.mm(grad, weight, out=grad_hidden[start : start + chunk])
            grad_weight.addmm_(grad.t().to(wide), rows.to(wide))
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total, grad_weight * grad_total, None, None


def chunk_rows(vocab_size: int, elements: int) -> int:
    return max(1, elements // vocab_size)


def torch_chunks(vocab_size: int):
    return TORCH_CHUNKS(batch_chunk_size=chunk_rows(vocab_size, TORCH_CHUNK_ELEMENTS))


def torch_chunked(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether torch's ``linear_cross_entropy`` applies: it keeps its input's dtype, so bf16/fp16 weights (pure
    low-precision training) would get a bf16 loss, where the model's own loss and ours are fp32."""
    return TORCH_CHUNKS is not None and hidden.dtype == weight.dtype == torch.float32


def summed_token_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    rows, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if not torch_chunked(hidden, weight):
        return FusedLinearCrossEntropy.apply(rows, weight, flat_targets, chunk_rows(weight.shape[0], CHUNK_ELEMENTS))
    return F.linear_cross_entropy(rows, weight, flat_targets, reduction="sum", ignore_index=IGNORE,
                                  options=torch_chunks(weight.shape[0]))


def next_token_targets(inputs: dict) -> torch.Tensor:
    """What transformers' causal-LM loss scores at each position: the collator's ``shift_labels``, else the labels
    shifted left with nothing (-100) after each row's last position."""
    if inputs.get("shift_labels") is not None:
        return inputs["shift_labels"]
    return F.pad(inputs["labels"][..., 1:], (0, 1), value=IGNORE)


@contextlib.contextmanager
def captured_head_input(head: torch.nn.Module):
    """Inside, the head's input is kept in ``captured["hidden"]`` and the head itself computes only each row's first
    position (logits nobody reads), so the model's forward runs as usual, through any DDP wrapper, minus the head."""
    captured = {}

    def keep_and_shrink(module, args):
        captured["hidden"] = args[0]
        return (args[0][..., :1, :], *args[1:])

    handle = head.register_forward_pre_hook(keep_and_shrink)
    try:
        yield captured
    finally:
        handle.remove()


def head_input_and_targets(model: torch.nn.Module, head: torch.nn.Linear, inputs: dict):
    """The model's forward without its labels (and without the head's logits): the head's input and the targets."""
    rest = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    with captured_head_input(head) as captured:
        model(**rest)
    return captured["hidden"], next_token_targets(inputs)


def fused_loss_sum(model: torch.nn.Module, head: torch.nn.Linear, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed next-token loss of ``inputs`` and the number of tokens it sums over."""
    hidden, targets = head_input_and_targets(model, head, inputs)
    return summed_token_loss(hidden, head.weight, targets), targets.ne(IGNORE).sum()


@torch.no_grad()
def sequence_loss_sums(model: torch.nn.Module, head: torch.nn.Linear, inputs: dict) -> torch.Tensor:
    """Evaluation's :func:`hf_recipes.metrics.token_loss_sums` without whole logits: per sequence, the summed
    next-token loss and the number of tokens it covers, the head's logits made chunk by chunk."""
    hidden, targets = head_input_and_targets(model, head, inputs)
    rows, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    wide = torch.promote_types(hidden.dtype, torch.float32)
    if torch_chunked(hidden, head.weight):
        losses = F.linear_cross_entropy(rows, head.weight, flat_targets, reduction="none", ignore_index=IGNORE,
                                        options=torch_chunks(head.out_features)).to(wide)
    else:
        losses = torch.empty(flat_targets.shape, dtype=wide, device=hidden.device)
        chunk = chunk_rows(head.out_features, CHUNK_ELEMENTS)
        for start in range(0, rows.shape[0], chunk):
            logits = (rows[start : start + chunk] @ head.weight.t()).to(wide)
            losses[start : start + chunk] = token_losses(logits, flat_targets[start : start + chunk])
    return torch.stack([losses.view(targets.shape).sum(-1), targets.ne(IGNORE).sum(-1).to(wide)], dim=-1)


def fusable_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's output head when the fused loss reproduces the model's own loss, else None.

    Checked on a tiny batch rather than by family: a head with a bias, a logit scale or soft-capping, an adapter on
    the head or any other twist shows up as a different loss. The head's weight is scaled up for the check, so that
    even a fresh model's near-zero logits are large enough for soft-capping to show, then restored exactly."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        logger.info("The output head is a %s, not a plain Linear layer (e.g. an adapter wraps it), so the fused loss "
                    "does not apply; training keeps the model's own loss", type(head).__name__)
        return None
    if head.bias is not None:
        logger.info("The output head has a bias, which the fused loss does not add; training keeps the model's own "
                    "loss")
        return None
    was_training, weight = model.training, head.weight.detach().clone()
    model.eval()  # no dropout: both losses see the same network
    try:
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, head.out_features, (2, 8), generator=generator).to(head.weight.device)
        labels = ids.clone()
        labels[0, :3] = IGNORE
        with torch.no_grad():
            spread = model(input_ids=ids).logits.float().std()
            head.weight.mul_(PROBE_LOGIT_STD / spread.clamp(min=1e-6))
            own = model(input_ids=ids, labels=labels).loss.float()
            total, count = fused_loss_sum(model, head, {"input_ids": ids, "labels": labels})
        fused = total / count
        agrees = bool(torch.allclose(fused, own, rtol=1e-4, atol=1e-5))
    finally:
        with torch.no_grad():
            head.weight.copy_(weight)
        model.train(was_training)
    if not agrees:
        logger.info("The fused LM loss differs from %s's own loss on a test batch (%.6f vs %.6f); training keeps the "
                    "model's own loss", type(model).__name__, float(fused), float(own))
    return head if agrees else None
