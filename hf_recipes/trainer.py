"""The one Trainer factory every recipe goes through."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments

from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from torch.utils.data import SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import has_length

from hf_recipes.errors import RecipeError
from hf_recipes.metrics import EXACT_LOSS
from hf_recipes.model import autocast_dtype_for_cpu

logger = logging.getLogger(__name__)


def loss_averages_over_batch_tokens(model: PreTrainedModel) -> bool:
    """True for causal LMs, whose loss divides by ``num_items_in_batch`` (tokens in the whole accumulated,
    all-process batch). Classification heads take a plain per-micro-batch mean and ignore it."""
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """LengthGroupedSampler whose order depends on (seed, epoch) only.

    Trainer 5.23 builds LengthGroupedSampler without a generator, so each epoch's permutation is drawn from the
    global torch RNG when the epoch starts. A run resumed mid-epoch starts that epoch in a fresh process, whose
    RNG (restored from the checkpoint only after the first batches are fetched) differs from the uninterrupted
    run's, so it skipped the right number of batches of a different order. Trainer calls ``set_epoch`` on the
    sampler every epoch (as for accelerate's seedable RandomSampler), and the order is drawn from a generator
    seeded by seed + epoch, the same in every process and on every resume.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class RecipeTrainer(Trainer):
    """A Trainer that counts real (non-padding) tokens and scales every model's loss correctly."""

    def __init__(self, *args, eval_data_collator: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator  # e.g. padding for evaluation where training is padding-free
        # Trainer assumes any forward(**kwargs) normalises its loss by num_items_in_batch; for a classifier
        # that would sum the losses over gradient-accumulation steps and scale them by the process count.
        if not loss_averages_over_batch_tokens(self.accelerator.unwrap_model(self.model)):
            self.model_accepts_loss_kwargs = False
        else:
            # A causal LM's loss shifts the labels, so a row's first label is never a target. Trainer counts
            # num_items_in_batch over labels[..., 1:] only for models whose loss_type it recognises; GPT-2's is None,
            # and counting every label would divide the loss by one token too many per row.
            self._loss_shifts_labels = True
        self.real_tokens = 0
        self.computed_tokens = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        input_ids = inputs.get("input_ids")
        if input_ids is not None:
            mask = inputs.get("attention_mask")
            self.computed_tokens += input_ids.numel()
            self.real_tokens += int(mask.sum()) if mask is not None else input_ids.numel()
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Trainer would filter a NaN out of the logged loss and go on training broken weights; stop instead,
        # before the step's checkpoint is written, so the newest checkpoint is the last good one.
        if not torch.isfinite(loss).all():
            good = last_complete_checkpoint(self.args.output_dir)
            raise RecipeError(
                f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopped "
                f"({'last good checkpoint: ' + good if good else 'no checkpoint was saved'}); "
                "lower learning_rate or check the data"
            )
        return loss

    @contextlib.contextmanager
    def evaluation_collator(self):
        training_collator = self.data_collator
        self.data_collator = self.eval_data_collator or training_collator
        try:
            yield
        finally:
            self.data_collator = training_collator

    def get_eval_dataloader(self, eval_dataset=None):
        with self.evaluation_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self.evaluation_collator():
            return super().get_test_dataloader(test_dataset)

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        exact = output.metrics.pop(f"{metric_key_prefix}_{EXACT_LOSS}", None)
        if exact is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = exact
        return output

    def train(self, *args, **kwargs):
        # evaluate() before train() (the starting model's loss) prepares the bare model for evaluation and marks it
        # as prepared, so accelerate would skip wrapping it in DistributedDataParallel and every process would train
        # on its own gradients. Forget that evaluation-only preparation.
        if self.model_wrapped is self.model and getattr(self.model, "_is_accelerate_prepared", False):
            del self.model._is_accelerate_prepared
            self.accelerator._models = [m for m in self.accelerator._models if m is not self.model]
        return super().train(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            # Group by the global batch (every process, every accumulation step) rather than one process's share,
            # so the order of the data, and so the trained model, is the same for any number of processes.
            global_batch = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * max(
                self.args.world_size, 1)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(global_batch, lengths=sampler.lengths, seed=seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        # Under group_by_length, Trainer 5.23 also shuffles evaluation into length groups, so predict() would return
        # rows out of dataset order. Evaluate in order: predictions line up with the rows they belong to.
        if eval_dataset is None or not has_length(eval_dataset) or self.args.world_size > 1:
            return None  # accelerate shards in order and gathers back in order
        return SequentialSampler(eval_dataset)

    def _run_epoch(self, *args, **kwargs):
        # Trainer 5.23 checks for max_steps only after a step, so a run resumed from its final checkpoint (killed
        # while evaluating) would train one extra step whenever max_steps is not a whole number of epochs.
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def real_token_share(self) -> float | None:
        """Share of computed tokens that were real, summed over all processes."""
        counts = torch.tensor([self.real_tokens, self.computed_tokens], device=self.args.device, dtype=torch.float64)
        real, computed = self.accelerator.gather(counts.unsqueeze(0)).sum(0).tolist()
        return real / computed if computed else None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that was written to the end, or None.

    Trainer writes a checkpoint's ``trainer_state.json`` last, after weights, optimizer and RNG states, so a
    checkpoint whose state file is missing, truncated or names another step was interrupted and is skipped.
    """
    folder = Path(output_dir)
    steps = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit()) if folder.is_dir() else []
    for step, path in reversed(steps):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("global_step") == step and any(path.glob("*.safetensors")):
            return str(path)
        logger.warning("Skipping incomplete checkpoint %s", path)
    return None


def resolve_precision(training_args: TrainingArguments, mixed_precision: str) -> str:
    """Turn ``mixed_precision`` (auto/no/bf16/fp16) into TrainingArguments.bf16/fp16; explicit flags win."""
    if training_args.bf16 or training_args.fp16:
        return "bf16" if training_args.bf16 else "fp16"
    if mixed_precision == "auto":
        if torch.cuda.is_available() and not training_args.use_cpu:
            mixed_precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            mixed_precision = "bf16" if autocast_dtype_for_cpu() is not None else "no"
    training_args.bf16 = mixed_precision == "bf16"
    training_args.fp16 = mixed_precision == "fp16"
    training_args.mixed_precision = mixed_precision  # what Trainer hands to Accelerator (set in __post_init__)
    return mixed_precision


def make_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    training_args: TrainingArguments,
    train_dataset,
    eval_dataset,
    data_collator: Callable,
    compute_metrics: Callable | None = None,
    preprocess_logits_for_metrics: Callable | None = None,
    callbacks: list[TrainerCallback] | None = None,
    eval_data_collator: Callable | None = None,
    **kwargs: Any,
) -> RecipeTrainer:
    return RecipeTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        callbacks=callbacks,
        eval_data_collator=eval_data_collator,
        **kwargs,
    )
