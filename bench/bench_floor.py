"""A recipe's own training steps against the floor: a bare PyTorch loop over the same model, batches and optimizer.

    make bench BENCH=floor                                             # sentiment: an epoch; the others --steps
    .venv/bin/python bench/bench_floor.py --recipe sentiment          # one (or several) recipes
    .venv/bin/python bench/bench_floor.py --recipe lyrics --no_dropout # losses agree exactly (no dropout RNG)
    .venv/bin/python bench/bench_floor.py --whole_epoch               # every recipe for --steps, no epoch
    .venv/bin/python bench/bench_floor.py --recipe lyrics --batch_size 16 --fused_lm_loss false  # transformers' loss

The model is the demo profile (hf_recipes/recipes/demo/<recipe>.yaml: tiny GPT-2) on the real data in ../shared/data, fp32.
Both sides run the same first batches of the recipe's train dataloader (sequential order), the same initial
weights, AdamW with the recipe's lr, weight decay groups, schedule and gradient clipping. Each side runs 2 untimed
warm-up steps, then --steps timed ones (--whole_epoch recipes: the rest of an epoch). Prints seconds per step, real
tokens/s, peak RSS and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import yaml
from common import DATA, GPT2_FILES, require_data, reset_peak_rss, rss_mib, timing_overrides
from transformers import TrainerCallback, get_scheduler

from hf_recipes.fused_loss import TORCH_CHUNKS, fused_loss_sum
from hf_recipes.recipes import instruct, lyrics, sentiment

WARMUP = 2
NO_DROPOUT = "resid_pdrop=0.0,embd_pdrop=0.0,attn_pdrop=0.0,summary_first_dropout=0.0"
RECIPES = {
    "sentiment": (sentiment, {"train_file": str(DATA / "tweet_sentiment" / "train.csv"), "test_file": None,
                              "label_column": "sentiment"}),
    "lyrics": (lyrics, {"train_file": str(DATA / "lyrics" / "songs.jsonl")}),
    "instruct": (instruct, {"train_file": str(DATA / "instructions" / "instruction-data.json")}),
}


def real_tokens(batch: dict) -> int:
    """Counted as RecipeTrainer counts them: the attention mask's ones, or every input id without a mask."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def fused_adamw_on_cpu() -> bool:
    try:
        param = torch.nn.Parameter(torch.zeros(2))
        param.grad = torch.ones(2)
        torch.optim.AdamW([param], fused=True).step()
        return True
    except (RuntimeError, TypeError):
        return False


def floor_steps(trainer, model, batches: list[dict], fused: bool) -> list[float]:
    """The bare loop: forward, backward, clip, AdamW (+ the recipe's lr schedule), zero grads. Returns step ends."""
    args = trainer.args
    decay = set(trainer.get_decay_parameter_names(model))  # Trainer's weight-decay groups (no bias / LayerNorm)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if n in decay], "weight_decay": args.weight_decay},
              {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  eps=args.adam_epsilon, **({"fused": True} if fused else {"foreach": True}))
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(len(batches)),
                              num_training_steps=len(batches))
    model.train()
    ends = []
    head = model.get_output_embeddings() if trainer.fused_head is not None else None
    for batch in batches:
        if head is None:
            loss = model(**batch).loss
        else:  # the recipe's fused LM-head loss, so both sides do the same arithmetic
            total, count = fused_loss_sum(model, head, batch)
            loss = total / count
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
    return ends


@torch.no_grad()
def loss_on(model, batch: dict) -> float:
    model.eval()
    return float(model(**batch).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), nargs="+", default=list(RECIPES),
                        help="recipes to compare with their floors (default: all three)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (after 2 warm-up steps)")
    parser.add_argument("--whole_epoch", choices=sorted(RECIPES), nargs="*", default=["sentiment"],
                        help="recipes timed over one whole epoch of their train split instead of --steps (the first 2 "
                        "steps untimed); default: sentiment, whose steps are too short to time 20 of them")
    parser.add_argument("--batch_size", type=int, help="per-device train batch size (default: the demo profile's)")
    parser.add_argument("--fused_lm_loss", choices=["true", "false"], default="true",
                        help="causal LMs: the fused LM-head loss (the default) or the model's own, on both sides")
    parser.add_argument("--no_dropout", action="store_true",
                        help="switch dropout off, so both sides' losses match without sharing the dropout RNG")
    args = parser.parse_args()
    require_data()
    for name in args.recipe:
        compare(name, args)


def compare(name: str, args: argparse.Namespace) -> None:
    recipe, data = RECIPES[name]
    demo = recipe.demo_config
    steps, epoch = args.steps, name in args.whole_epoch
    total = WARMUP + steps
    length = {"num_train_epochs": 1, "max_steps": -1} if epoch else {"max_steps": total}
    overrides = timing_overrides(f"runs/bench/floor-{name}", **data, tokenizer_name=str(GPT2_FILES),
                                 **length, logging_steps=10**6, train_sampling_strategy="sequential",
                                 fused_lm_loss=args.fused_lm_loss == "true")
    if args.batch_size:
        overrides["per_device_train_batch_size"] = args.batch_size
    overrides.pop("config_overrides")  # the demo profile's model
    if args.no_dropout:
        overrides["config_overrides"] = yaml.safe_load(demo.read_text())["config_overrides"] + "," + NO_DROPOUT
    trainer, prepared = recipe.build_trainer(demo, **overrides)
    floor_model = copy.deepcopy(prepared.model)  # the same initial weights
    if trainer.args.gradient_accumulation_steps != 1:
        raise SystemExit("error: the floor loop takes one batch per optimizer step; the demo profile accumulates")
    batches = []
    for batch in trainer.get_train_dataloader():
        batches.append(dict(batch))
        if len(batches) == total and not epoch:
            break
    if epoch:
        total, steps = len(batches), len(batches) - WARMUP
    if len(batches) < total or steps < 1:
        raise SystemExit(f"error: only {len(batches)} batches in the train split; lower --steps")
    timed_tokens = sum(real_tokens(b) for b in batches[WARMUP:])
    fused = fused_adamw_on_cpu()

    start_rss = rss_mib("VmRSS")
    reset_peak_rss()
    ends = floor_steps(trainer, floor_model, batches, fused)
    floor = ((ends[-1] - ends[WARMUP - 1]) / steps, rss_mib())

    clock = StepClock()
    trainer.add_callback(clock)
    reset_peak_rss()
    trainer.train()
    recipe_side = ((clock.ends[-1] - clock.ends[WARMUP - 1]) / steps, rss_mib())
    if trainer.real_tokens != sum(real_tokens(b) for b in batches):
        print("note: the recipe's train() saw other batches than the materialised ones")

    model = prepared.model
    print(f"\n{name}: demo profile ({model.config.n_layer} layers, n_embd {model.config.n_embd}), "
          f"{Path(data['train_file']).name}, batch {trainer.args.per_device_train_batch_size}, fp32, "
          f"{steps} timed steps after {WARMUP} warm-up, {torch.get_num_threads()} CPU threads, "
          f"{timed_tokens / steps:.0f} real tokens/step, dropout {'off' if args.no_dropout else 'on'}")
    chunked_by = "torch's linear_cross_entropy" if TORCH_CHUNKS else "FusedLinearCrossEntropy"
    loss_kind = f"fused LM-head cross-entropy ({chunked_by})" if trainer.fused_head else "model's own"
    print(f"loss: {loss_kind}, both sides")
    print(f"optimizer: {trainer.args.optim.value} (recipe) vs torch.optim.AdamW({'fused' if fused else 'foreach'}=True) "
          f"(floor), lr {trainer.args.learning_rate:g}, {trainer.args.lr_scheduler_type.value} schedule, "
          f"clip {trainer.args.max_grad_norm:g}; RSS before training {start_rss:.0f} MiB (data, tokenizer, model)")
    print(f"{'side':<8}{'s/step':>10}{'real tokens/s':>15}{'peak RSS MiB':>14}{'loss after':>12}")
    for side, (seconds, rss), trained in (("floor", floor, floor_model), ("recipe", recipe_side, model)):
        print(f"{side:<8}{seconds:>10.4f}{timed_tokens / steps / seconds:>15.0f}{rss:>14.0f}"
              f"{loss_on(trained, batches[0]):>12.5f}")
    print(f"recipe / floor time per step: {recipe_side[0] / floor[0]:.2f}x  "
          f"(loss after = eval-mode loss on the first batch after {total} steps)")


if __name__ == "__main__":
    main()
