"""Which precision a run trains in: bf16/fp16 mixed precision on GPUs, and on CPUs bf16 only where it runs natively."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

logger = logging.getLogger(__name__)


def cpu_matmul_rates(size: int = 512, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a ``size``-square matmul in fp32 and under bf16 autocast on this CPU, best of ``repeats``:
    a one-off check (about a second) of whether bf16 runs natively or is emulated."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    rates = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        best = float("inf")
        for _ in range(repeats + 1):  # the first call warms up
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * size**3 / best / 1e9
    return rates


def autocast_dtype_for_cpu(flags: set[str] | None = None) -> torch.dtype | None:
    """bf16 pays off on CPUs with AMX tiles only. AVX2-only CPUs emulate it (GPT-2 124M trained 17x slower); with
    AVX512-BF16 but no AMX it measured no faster than fp32 (124M: 0.97x to 1.65x the fp32 step time) and would cost
    causal LMs the fused fp32 loss. ``flags``: the CPU's, read from /proc/cpuinfo when not given."""
    if flags is None:
        try:
            flags = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            return None
    return torch.bfloat16 if "amx_bf16" in flags else None


# bf16 must beat fp32 by this much on the measured matmul to be chosen: native bf16 is ~2x, emulated ~0.1x
BF16_MIN_SPEEDUP = 1.2


def resolve_precision(training_args: TrainingArguments, mixed_precision: str) -> str:
    """Turn ``mixed_precision`` (auto/measure/no/bf16/fp16) into TrainingArguments.bf16/fp16; explicit flags win.
    On CPU, auto reads the CPU flags; measure times a matmul in fp32 and bf16 once and takes the faster."""
    if training_args.bf16 or training_args.fp16:
        return "bf16" if training_args.bf16 else "fp16"
    if mixed_precision in ("auto", "measure"):
        if torch.cuda.is_available() and not training_args.use_cpu:
            mixed_precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif mixed_precision == "measure":
            rates = cpu_matmul_rates()
            faster = rates["bf16"] >= BF16_MIN_SPEEDUP * rates["fp32"]
            logger.info("CPU matmul: fp32 %.1f GFLOP/s, bf16 autocast %.1f GFLOP/s: %s", rates["fp32"],
                        rates["bf16"], "bf16" if faster else "fp32")
            mixed_precision = "bf16" if faster else "no"
        else:
            mixed_precision = "bf16" if autocast_dtype_for_cpu() is not None else "no"
    training_args.bf16 = mixed_precision == "bf16"
    training_args.fp16 = mixed_precision == "fp16"
    training_args.mixed_precision = mixed_precision  # what Trainer hands to Accelerator (set in __post_init__)
    return mixed_precision


