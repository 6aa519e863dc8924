"""The causal-LM training loss is the mean over the real targets: every label that the model's shifted loss sees
and that is not -100 counts once, no more."""

import pytest
import torch
import torch.nn.functional as F

from hf_recipes.recipes import instruct, lyrics
from tests.conftest import SAMPLES

NO_DROPOUT = "n_layer=1,n_embd=32,n_head=2,n_positions=128,resid_pdrop=0,embd_pdrop=0,attn_pdrop=0"


def one_step(tiny_model_args, **extra) -> dict:
    return {**tiny_model_args, "config_overrides": NO_DROPOUT, "max_steps": 1, "logging_steps": 1,
            "per_device_train_batch_size": 64, "gradient_accumulation_steps": 1, "learning_rate": 1e-3, **extra}


def hand_mean_loss(model, examples) -> tuple[float, int]:
    """Each example alone: summed cross-entropy of label[i + 1] given tokens up to i, over labels that are not
    -100, divided by how many there are."""
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            inputs = {"input_ids": torch.tensor([example["input_ids"]])}
            if "position_ids" in example:
                inputs["position_ids"] = torch.tensor([example["position_ids"]])
            logits = model(**inputs, use_cache=False).logits[0, :-1]
            targets = torch.tensor(example["labels"][1:])
            total += F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
            count += int((targets != -100).sum())
    return total / count, count


CASES = {
    "lyrics": (lyrics, {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 16,
                        "max_train_samples": 6}),
    "instruct padded": (instruct, {"train_file": str(SAMPLES / "instructions" / "instructions.json"),
                                   "max_train_samples": 6}),
    "instruct padding-free": (instruct, {"train_file": str(SAMPLES / "instructions" / "instructions.json"),
                                         "max_train_samples": 6, "padding_free": True}),
    "instruct train_on_inputs": (instruct, {"train_file": str(SAMPLES / "instructions" / "instructions.json"),
                                            "max_train_samples": 6, "train_on_inputs": True}),
    "instruct padding-free train_on_inputs": (instruct, {
        "train_file": str(SAMPLES / "instructions" / "instructions.json"), "max_train_samples": 6,
        "padding_free": True, "train_on_inputs": True}),
}


@pytest.mark.parametrize("fused", [True, False], ids=["fused LM loss", "model's own loss"])
@pytest.mark.parametrize("case", CASES)
def test_logged_training_loss_of_one_step_is_the_mean_over_real_targets(case, fused, tiny_model_args):
    recipe, extra = CASES[case]
    trainer, prepared = recipe.build_trainer(**one_step(tiny_model_args, fused_lm_loss=fused, **extra))
    assert (trainer.fused_head is not None) == fused
    train = list(prepared.datasets["train"])
    assert len(train) <= 64  # one step sees every example
    expected, targets = hand_mean_loss(prepared.model.eval(), train)
    trainer.train()
    logged = trainer.state.log_history[0]["loss"]
    # Counting one target too many per row would scale the loss by (targets) / (targets + rows)
    assert abs(expected * targets / (targets + len(train)) - expected) > 1e-3
    assert logged == pytest.approx(expected, rel=1e-5)
