"""The upstream behaviour each workaround in hf_recipes/upstream.py corrects still holds in the installed
transformers / accelerate. A failure here means upstream changed: revisit the workaround named in the test (it may
be obsolete, or need to follow the change) before widening the transformers pin in pyproject.toml."""

import inspect
import io
import logging
import sys

import pytest
import torch
import transformers
from datasets import Dataset
from torch.utils.data import SequentialSampler
from transformers import (
    GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, Trainer, TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import logging as hf_logging

from hf_recipes import upstream
from hf_recipes.trainer import RecipeTrainer
from hf_recipes.upstream import EpochSeededLengthGroupedSampler, TrainerWorkarounds

VOCAB = 64
LABELS = torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100]])  # 5 labels; 3 of them follow a first token


def tiny_config(**overrides):
    return GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=32, vocab_size=VOCAB, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **overrides)


def tiny_lm():
    torch.manual_seed(0)
    return GPT2LMHeadModel(tiny_config())


def training_args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "run"), use_cpu=True, report_to=[], disable_tqdm=True,
                    per_device_train_batch_size=2, per_device_eval_batch_size=2, save_strategy="no",
                    dataloader_num_workers=0, learning_rate=1e-3, seed=0)
    return TrainingArguments(**{**settings, **overrides})


def token_rows(n, seed=0):
    """n rows of causal-LM data with lengths 2..9, so length grouping has something to group."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(1, VOCAB, (2 + i % 8,), generator=g).tolist() for i in range(n)]
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


def fixed_rows(n, length=4):
    rows = [[1 + (i + j) % (VOCAB - 1) for j in range(length)] for i in range(n)]
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


def test_every_private_trainer_method_we_override_exists_with_the_signature_we_rely_on():
    overrides = {name for name, value in vars(TrainerWorkarounds).items() if callable(value) and hasattr(Trainer, name)}
    assert overrides == {"__init__", "train", "_get_train_sampler", "_get_eval_sampler", "_run_epoch"}
    overridden = {name for name in overrides if not name.startswith("__") and name.startswith("_")}
    parameters = {name: list(inspect.signature(getattr(Trainer, name)).parameters) for name in overridden}
    assert parameters["_get_train_sampler"] == ["self", "train_dataset"]
    assert parameters["_get_eval_sampler"] == ["self", "eval_dataset"]
    assert parameters["_run_epoch"] == [
        "self", "model", "epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch", "trial",
        "ignore_keys_for_eval", "start_time", "resume_from_checkpoint", "epochs_trained",
        "steps_trained_in_current_epoch",
    ]
    # The attributes the loss workarounds set are still the ones Trainer counts and scales the loss by.
    counting = inspect.getsource(Trainer._get_num_items_in_batch)
    assert "self._loss_shifts_labels" in counting and "self.model_accepts_loss_kwargs" in counting


def test_stock_trainer_counts_the_unshifted_first_label_of_gpt2(tmp_path):
    """_count_loss_tokens_after_the_shift: GPT-2's loss_type is None, so Trainer counts every label."""
    model = tiny_lm()
    assert model.loss_type is None
    stock = Trainer(model=model, args=training_args(tmp_path))
    assert stock._loss_shifts_labels is False
    assert int(stock._get_num_items_in_batch([{"labels": LABELS}], torch.device("cpu"))) == 5
    ours = RecipeTrainer(model=model, args=training_args(tmp_path))
    assert int(ours._get_num_items_in_batch([{"labels": LABELS}], torch.device("cpu"))) == 3
    # ... while GPT-2's loss does shift: the summed loss over the 3 shifted targets divided by 3 is what it returns.
    input_ids = LABELS.clamp(min=1)
    logits = model(input_ids=input_ids).logits[:, :-1]
    summed = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), LABELS[:, 1:].reshape(-1),
                                               ignore_index=-100, reduction="sum")
    loss = model(input_ids=input_ids, labels=LABELS, num_items_in_batch=torch.tensor(3)).loss
    torch.testing.assert_close(loss, summed / 3)


def test_stock_trainer_passes_num_items_in_batch_to_a_classifier_that_ignores_it(tmp_path):
    """_keep_num_items_in_batch_from_per_batch_losses: Trainer trusts any forward(**kwargs) to normalise by it."""
    torch.manual_seed(0)
    classifier = GPT2ForSequenceClassification(tiny_config(num_labels=3))
    stock = Trainer(model=classifier, args=training_args(tmp_path))
    assert stock.model_accepts_loss_kwargs is True
    assert RecipeTrainer(model=classifier, args=training_args(tmp_path)).model_accepts_loss_kwargs is False
    inputs = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6]]), "labels": torch.tensor([0, 2])}
    # The classifier's loss is the batch mean whatever num_items_in_batch says ...
    torch.testing.assert_close(classifier(**inputs, num_items_in_batch=torch.tensor(100)).loss,
                               classifier(**inputs).loss)
    # ... and Trainer then skips dividing it by the accumulation steps (ours divides: 4 micro-batches, 4 means).
    mean = classifier(**inputs).loss.detach()
    for trainer, expected in ((stock, mean), (RecipeTrainer(model=classifier, args=training_args(tmp_path)), mean / 4)):
        trainer.current_gradient_accumulation_steps = 4
        torch.testing.assert_close(trainer.training_step(classifier, dict(inputs), num_items_in_batch=torch.tensor(2)),
                                   expected)


def group_by_length_args(tmp_path, **overrides):
    return training_args(tmp_path, **{"train_sampling_strategy": "group_by_length", "gradient_accumulation_steps": 2,
                                      **overrides})


def test_stock_training_sampler_groups_one_process_share_in_an_order_drawn_from_the_global_rng(tmp_path,
                                                                                               monkeypatch):
    """TrainerWorkarounds._get_train_sampler / EpochSeededLengthGroupedSampler."""
    stock = Trainer(model=tiny_lm(), args=group_by_length_args(tmp_path), train_dataset=token_rows(48))
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    sampler = stock._get_train_sampler()
    assert type(sampler) is LengthGroupedSampler
    assert sampler.batch_size == 2 * 2  # per-device batch x accumulation steps, not x 2 processes
    assert sampler.generator is None and not hasattr(sampler, "set_epoch")
    orders = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        orders.append(list(sampler))
    assert orders[0] == orders[2] != orders[1]
    ours = RecipeTrainer(model=tiny_lm(), args=group_by_length_args(tmp_path), train_dataset=token_rows(48))
    sampler = ours._get_train_sampler()
    assert type(sampler) is EpochSeededLengthGroupedSampler and sampler.batch_size == 2 * 2 * 2
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(1)
    assert list(sampler) == first


def test_trainer_hands_every_epoch_to_the_sampler_through_accelerate(tmp_path, monkeypatch):
    """EpochSeededLengthGroupedSampler relies on Trainer calling set_epoch on the training sampler every epoch."""
    epochs = []
    monkeypatch.setattr(EpochSeededLengthGroupedSampler, "set_epoch",
                        lambda self, epoch: (epochs.append(epoch), setattr(self, "epoch", epoch)))
    args = group_by_length_args(tmp_path, num_train_epochs=3, gradient_accumulation_steps=1,
                                per_device_train_batch_size=4)
    RecipeTrainer(model=tiny_lm(), args=args, train_dataset=fixed_rows(4)).train()
    assert sorted(set(epochs)) == [0, 1, 2]


def test_stock_evaluation_under_group_by_length_is_out_of_order(tmp_path):
    """TrainerWorkarounds._get_eval_sampler."""
    rows = token_rows(24)
    stock = Trainer(model=tiny_lm(), args=group_by_length_args(tmp_path))
    sampler = stock._get_eval_sampler(rows)
    assert isinstance(sampler, LengthGroupedSampler) and list(sampler) != list(range(24))
    ours = RecipeTrainer(model=tiny_lm(), args=group_by_length_args(tmp_path))
    assert type(ours._get_eval_sampler(rows)) is SequentialSampler


@pytest.mark.parametrize("trainer_class, final_step", [(Trainer, 3), (RecipeTrainer, 2)])
def test_resuming_from_the_final_checkpoint_trains_past_max_steps_upstream(trainer_class, final_step, tmp_path):
    """TrainerWorkarounds._run_epoch: 3 steps an epoch, max_steps 2; resuming from checkpoint-2 re-enters the
    epoch, and stock Trainer takes its third step before it checks max_steps."""
    args = training_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    Trainer(model=tiny_lm(), args=args, train_dataset=fixed_rows(6)).train()
    resumed = trainer_class(model=tiny_lm(), args=args, train_dataset=fixed_rows(6))
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed.state.global_step == final_step


@pytest.mark.parametrize("trainer_class, prepares_for_training", [(Trainer, False), (RecipeTrainer, True)])
def test_evaluation_before_training_leaves_the_model_marked_prepared(trainer_class, prepares_for_training, tmp_path,
                                                                     monkeypatch):
    """TrainerWorkarounds.train: accelerate returns a model marked prepared without preparing it (in a
    multi-process run: without wrapping it in DistributedDataParallel)."""
    trainer = trainer_class(model=tiny_lm(), args=training_args(tmp_path, max_steps=1),
                            train_dataset=fixed_rows(2), eval_dataset=fixed_rows(2))
    trainer.evaluate()
    assert trainer.model._is_accelerate_prepared is True
    assert any(m is trainer.model for m in trainer.accelerator._models)
    accelerator, checks = trainer.accelerator, []
    prepare_model, verify_device_map = accelerator.prepare_model, accelerator.verify_device_map

    def spied_prepare_model(model, *args, **kwargs):
        checks.append("entered")
        return prepare_model(model, *args, **kwargs)

    # Past its already-prepared early return, prepare_model checks the model's device map before anything else.
    monkeypatch.setattr(accelerator, "prepare_model", spied_prepare_model)
    monkeypatch.setattr(accelerator, "verify_device_map",
                        lambda model: (checks and checks.append("prepared"), verify_device_map(model))[1])
    trainer.train()
    assert checks[0] == "entered" and ("prepared" in checks) is prepares_for_training


def test_transformers_binds_its_log_handler_flush_to_the_stderr_of_its_import(monkeypatch):
    """log_to_current_stderr."""
    import_time, later = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", import_time)
        hf_logging._reset_library_root_logger()
        hf_logging._configure_library_root_logger()
        handler = hf_logging._default_handler
        assert handler in logging.getLogger("transformers").handlers and type(handler) is logging.StreamHandler
        monkeypatch.setattr(sys, "stderr", later)
        assert vars(handler)["flush"] == import_time.flush and handler.stream is import_time
        upstream.log_to_current_stderr()
        assert handler.stream is later and handler.flush == later.flush
        transformers.logging.get_logger("transformers").warning("to the current stderr")
        assert "to the current stderr" in later.getvalue() and not import_time.getvalue()
    finally:
        monkeypatch.undo()
        hf_logging._reset_library_root_logger()
        hf_logging._configure_library_root_logger()
