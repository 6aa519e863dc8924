"""Every place hf-recipes works around transformers / accelerate behaviour, with the versions it was written for.

Each workaround says what upstream does (as of transformers 5.23, accelerate 1.15), why that is wrong for these
recipes, what the workaround does and when it can go. ``tests/test_upstream.py`` checks that each upstream behaviour
still holds in the installed versions and fails when it changes; pyproject pins transformers to the versions those
tests pass on. When one fails after an upgrade, revisit the workaround it names here before widening the pin.
"""

from __future__ import annotations

import logging
import sys

import torch
from torch.utils.data import SequentialSampler
from transformers import PreTrainedModel, Trainer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import has_length, unwrap_peft_model


def loss_averages_over_batch_tokens(model: PreTrainedModel) -> bool:
    """True for causal LMs, whose loss divides by ``num_items_in_batch`` (tokens in the whole accumulated,
    all-process batch). Classification heads take a plain per-micro-batch mean and ignore it."""
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """LengthGroupedSampler whose order depends on (seed, epoch) only.

    Upstream: Trainer 5.23 builds ``LengthGroupedSampler`` without a generator, so each epoch's permutation is drawn
    from the global torch RNG when the epoch starts.
    Wrong for us: a run resumed mid-epoch starts that epoch in a fresh process, whose RNG (restored from the
    checkpoint only after the first batches are fetched) differs from the uninterrupted run's, so it skipped the
    right number of batches of a different order.
    Workaround: Trainer calls ``set_epoch`` on the sampler every epoch (through accelerate's data loader, as for its
    seedable RandomSampler), and the order is drawn from a generator seeded by seed + epoch, the same in every
    process and on every resume.
    Remove when: Trainer seeds the training LengthGroupedSampler per epoch itself.
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


class TrainerWorkarounds(Trainer):
    """The Trainer overrides that exist only to correct upstream behaviour; each method says which."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_averages_over_batch_tokens(unwrap_peft_model(self.accelerator.unwrap_model(self.model))):
            self._count_loss_tokens_after_the_shift()
        else:
            self._keep_num_items_in_batch_from_per_batch_losses()

    def _keep_num_items_in_batch_from_per_batch_losses(self) -> None:
        """Upstream: Trainer 5.23 sets ``model_accepts_loss_kwargs`` for any model whose ``forward`` takes
        ``**kwargs`` (every transformers model), and then trusts the model to have divided its loss by
        ``num_items_in_batch``: it skips dividing by the gradient-accumulation steps and multiplies by the process
        count (``average_tokens_across_devices``).
        Wrong for us: a classification head (GPT2ForSequenceClassification) ignores ``num_items_in_batch`` and
        returns a per-micro-batch mean, so the loss would be summed over accumulation steps and scaled by the number
        of processes.
        Workaround: ``model_accepts_loss_kwargs = False`` for every model that is not a causal LM.
        Remove when: Trainer asks the model whether its loss uses ``num_items_in_batch`` (e.g. ``accepts_loss_kwargs``
        set False on classification heads)."""
        self.model_accepts_loss_kwargs = False

    def _count_loss_tokens_after_the_shift(self) -> None:
        """Upstream: Trainer 5.23 counts ``num_items_in_batch`` over ``labels[..., 1:]`` only when
        ``_loss_shifts_labels``, which it sets from the model's ``loss_type``; GPT-2's ``loss_type`` is None, so it
        counts every label.
        Wrong for us: a causal LM's loss shifts the labels, so a row's first label is never a target; counting it
        divides the loss by one token too many per row.
        Workaround: ``_loss_shifts_labels = True`` for causal LMs.
        Remove when: Trainer recognises a causal LM whose ``loss_type`` is None (GPT-2) as shifting its labels."""
        self._loss_shifts_labels = True

    def train(self, *args, **kwargs):
        """Upstream: evaluate() before train() makes accelerate 1.15 prepare the bare model for evaluation only,
        which marks it ``_is_accelerate_prepared`` and records it in ``accelerator._models``; Trainer 5.23's
        training preparation then calls ``prepare`` on it, which returns a model so marked untouched.
        Wrong for us: the starting model's loss is measured before training, so accelerate would skip wrapping the
        model in DistributedDataParallel and every process would train on its own gradients.
        Workaround: forget that evaluation-only preparation before training.
        Remove when: accelerate prepares for training a model it prepared in evaluation mode."""
        if self.model_wrapped is self.model and getattr(self.model, "_is_accelerate_prepared", False):
            del self.model._is_accelerate_prepared
            self.accelerator._models = [m for m in self.accelerator._models if m is not self.model]
        return super().train(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        """Upstream: under group_by_length, Trainer 5.23 groups by one process's share of the batch
        (``train_batch_size * gradient_accumulation_steps``) and draws each epoch's order from the global RNG.
        Wrong for us: the order of the data, and so the trained model, would depend on the number of processes, and
        a resumed run would see a different order (see :class:`EpochSeededLengthGroupedSampler`).
        Workaround: group by the global batch (every process, every accumulation step), seeded per epoch.
        Remove when: both are upstream."""
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            global_batch = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * max(
                self.args.world_size, 1)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(global_batch, lengths=sampler.lengths, seed=seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        """Upstream: under group_by_length, Trainer 5.23 also shuffles evaluation into length groups.
        Wrong for us: predict() would return rows out of dataset order, so predictions would not line up with the
        rows they belong to.
        Workaround: evaluate in order (sequentially; across processes accelerate shards in order and gathers back in
        order).
        Remove when: Trainer's evaluation sampler ignores the training sampling strategy."""
        if eval_dataset is None or not has_length(eval_dataset) or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)

    def _run_epoch(self, *args, **kwargs):
        """Upstream: Trainer 5.23 checks for max_steps only after a step.
        Wrong for us: a run resumed from its final checkpoint (killed while evaluating) trains one extra step
        whenever max_steps is not a whole number of epochs.
        Workaround: stop before the epoch when max_steps is already reached.
        Remove when: Trainer checks max_steps before the first step of a resumed epoch."""
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)


def log_to_current_stderr() -> None:
    """Upstream: transformers 5.23 binds its default log handler's ``flush`` to the ``sys.stderr`` of its import
    (an instance attribute), and a ``StreamHandler`` keeps the stream it was created with.
    Wrong for us: a later run in the same process (a notebook, a test that captures stderr) would log to, and
    flush, a stream that may be replaced or closed.
    Workaround: point the root and transformers stream handlers (not stdout ones) at the current ``sys.stderr``,
    and its ``flush``; assigning the stream directly, since ``setStream`` would flush the old one.
    Remove when: transformers' handler no longer binds ``flush`` (the stream part stays: it is how logging works)."""
    for handler in logging.getLogger().handlers + logging.getLogger("transformers").handlers:
        if type(handler) is logging.StreamHandler and handler.stream is not sys.stdout:
            handler.stream = sys.stderr
            if "flush" in vars(handler):
                handler.flush = sys.stderr.flush
