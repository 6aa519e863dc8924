"""The causal-LM training loss is the mean over the real targets: every label that the model's shifted loss sees
and that is not -100 counts once, no more."""

import pytest

from hf_recipes.recipes import instruct, lyrics
from tests.conftest import hand_mean_loss, SAMPLES

NO_DROPOUT = "n_layer=1,n_embd=32,n_head=2,n_positions=128,resid_pdrop=0,embd_pdrop=0,attn_pdrop=0"


def one_step(tiny_model_args, **extra) -> dict:
    return {**tiny_model_args, "config_overrides": NO_DROPOUT, "max_steps": 1, "logging_steps": 1,
            "per_device_train_batch_size": 64, "gradient_accumulation_steps": 1, "learning_rate": 1e-3, **extra}




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


@pytest.mark.slow
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
