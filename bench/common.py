"""What the benchmark scripts share: the real data beside the repo, the tiny GPT-2, and settings for timing."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
GPT2_FILES = DATA / "gpt2_tokenizer"  # the original GPT-2 tokenizer and the 124M config
TINY = "n_layer=2,n_embd=128,n_head=2,n_positions=1024"


def require_data() -> None:
    if not DATA.is_dir():
        sys.exit(f"error: {DATA} not found (the benchmarks read the real data beside the repo)")


def timing_overrides(output_dir: str, **extra) -> dict:
    """A tiny GPT-2 from scratch with the real tokenizer; no evaluation, checkpoints or report while timing."""
    return {
        "model_name_or_path": None,
        "model_type": "gpt2",
        "config_overrides": TINY,
        "tokenizer_name": str(GPT2_FILES),
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "disable_tqdm": True,
        "output_dir": output_dir,
        "overwrite_output_dir": True,
        "mixed_precision": "no",
        "report": False,
        **extra,
    }


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) so each side gets its own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib(field: str = "VmHWM") -> float:
    """The peak (VmHWM) or current (VmRSS) resident set; ru_maxrss (the process's peak) where /proc lacks it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_line() -> str:
    """CPU model, bf16 instruction flags and load average: timings on a shared machine mean little without them."""
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and model == "unknown CPU":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags] or ["none"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}; bf16 flags: {' '.join(bf16)}; {os.cpu_count()} CPUs; load average {load}"


def step_clock():
    """A Trainer callback that records when each optimizer step ends (its ``ends``)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepClock()
