"""The one Trainer factory every recipe goes through."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, TrainingArguments
from transformers.trainer_utils import unwrap_peft_model

from hf_recipes.adapters import check_adapter_checkpoint
from hf_recipes.errors import RecipeError
from hf_recipes.fused_loss import fusable_head, fused_loss_sum, sequence_loss_sums
from hf_recipes.metrics import EXACT_LOSS, token_loss_sums
from hf_recipes.run_folder import ADAPTER_CONFIG, last_complete_checkpoint, read_json
from hf_recipes.upstream import TrainerWorkarounds, loss_averages_over_batch_tokens

logger = logging.getLogger(__name__)


class RecipeTrainer(TrainerWorkarounds):
    """A Trainer that counts real (non-padding) tokens, stops on a non-finite loss, evaluates with its own collator
    and reports the exact evaluation loss; it scales every model's loss correctly (see hf_recipes.upstream). For fp32
    causal LMs it computes the loss without whole logits (hf_recipes.fused_loss) where that reproduces the model's."""

    def __init__(self, *args, eval_data_collator: Callable | None = None, fused_lm_loss: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator  # e.g. padding for evaluation where training is padding-free
        self.real_tokens = 0
        self.computed_tokens = 0
        self.fused_head = fusable_head(self.model) if fused_lm_loss and self.fused_loss_applies() else None
        self.evaluating_fused = False
        if self.fused_head is not None:
            logger.info("Loss: fused LM-head cross-entropy, training and evaluation (no whole [tokens x vocab] logits)")

    def call_model_init(self, trial=None):
        # A sweep trains a fresh model each trial: the fused loss must use that model's head, not the first one's.
        model = super().call_model_init(trial)
        if self.fused_head is not None:
            self.fused_head = fusable_head(model)
        return model

    def fused_loss_applies(self) -> bool:
        """The fused loss is written for fp32 causal LMs whose head weight is whole in every process: not under
        autocast (the model's head would run in bf16/fp16), sharding (FSDP, DeepSpeed), DataParallel or compile."""
        args = self.args
        return (loss_averages_over_batch_tokens(unwrap_peft_model(self.model)) and not (args.bf16 or args.fp16)
                and not (self.is_fsdp_enabled or self.is_deepspeed_enabled or args.torch_compile or args.n_gpu > 1)
                and self.label_smoother is None and self.compute_loss_func is None)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.fused_head is None or return_outputs or not model.training or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        total, count = fused_loss_sum(model, self.fused_head, inputs)
        loss = total / (num_items_in_batch if num_items_in_batch is not None else count)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # As Trainer.compute_loss scales a loss divided by the all-process token count: DDP averages gradients.
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

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
        with self.fused_evaluation():
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        exact = output.metrics.pop(f"{metric_key_prefix}_{EXACT_LOSS}", None)
        if exact is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = exact
        return output

    @contextlib.contextmanager
    def fused_evaluation(self):
        """With the fused loss, evaluation makes each sequence's loss sums itself (prediction_step) instead of whole
        logits that ``token_loss_sums`` then reduces; the metrics see the same two numbers per sequence."""
        reduce = self.preprocess_logits_for_metrics
        self.evaluating_fused = self.fused_head is not None and reduce is token_loss_sums
        if self.evaluating_fused:
            self.preprocess_logits_for_metrics = None
        try:
            yield
        finally:
            self.preprocess_logits_for_metrics, self.evaluating_fused = reduce, False

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if not self.evaluating_fused or "labels" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        sums = sequence_loss_sums(model, self.fused_head, inputs)
        loss = sums[:, 0].sum() / sums[:, 1].sum().clamp(min=1)
        return (loss, None, None) if prediction_loss_only else (loss, sums, inputs["labels"])

    def real_token_share(self) -> float | None:
        """Share of computed tokens that were real, summed over all processes."""
        counts = torch.tensor([self.real_tokens, self.computed_tokens], device=self.args.device, dtype=torch.float64)
        real, computed = self.accelerator.gather(counts.unsqueeze(0)).sum(0).tolist()
        return real / computed if computed else None


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
    fused_lm_loss: bool = False,
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
        fused_lm_loss=fused_lm_loss,
        **kwargs,
    )


def check_checkpoint(checkpoint: str | os.PathLike, model) -> None:
    """A checkpoint to resume from must be a complete one of the same architecture and size as ``model``."""
    path = Path(checkpoint)
    if not (path / "trainer_state.json").is_file():
        raise RecipeError(f"resume_from_checkpoint {path} is not a complete checkpoint folder")
    if check_adapter_checkpoint(path, model):
        return
    if not (path / "config.json").is_file():
        raise RecipeError(f"resume_from_checkpoint {path} holds neither a model (config.json) nor an adapter "
                          f"({ADAPTER_CONFIG})")
    saved = read_json(path / "config.json", "checkpoint config")
    expected = model.config.to_dict()
    architecture = type(model).__name__
    if architecture not in (saved.get("architectures") or [architecture]):
        raise RecipeError(f"checkpoint {path} is of a {', '.join(saved['architectures'])}, but this run trains a "
                          f"{architecture}: resume from a checkpoint of the same recipe and model")
    if "id2label" in saved and "id2label" in expected:
        saved["num_labels"], expected["num_labels"] = len(saved["id2label"]), len(expected["id2label"])
    for key in ("model_type", "vocab_size", "num_labels", "n_embd", "hidden_size", "n_layer", "num_hidden_layers"):
        if key in saved and key in expected and saved[key] != expected[key]:
            raise RecipeError(f"checkpoint {path} has {key} {saved[key]}, but this run's model has {expected[key]}: "
                              "resume from a checkpoint of the same recipe and model")
