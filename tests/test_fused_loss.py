"""The fused LM-head loss equals transformers' own loss and gradients, trains to the same losses, and steps aside
for any head it does not reproduce."""

import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from hf_recipes import fused_loss
from hf_recipes.fused_loss import fusable_head, sequence_loss_sums, summed_token_loss
from hf_recipes.metrics import token_loss_sums
from hf_recipes.recipes import instruct, lyrics
from tests.conftest import SAMPLES


@pytest.fixture(params=["torch", "FusedLinearCrossEntropy"])
def chunked_by(request, monkeypatch):
    """Each test runs with torch's linear_cross_entropy (where torch has it) and with the fallback."""
    if request.param == "torch" and fused_loss.TORCH_CHUNKS is None:
        pytest.skip("this torch has no torch.nn.functional.linear_cross_entropy")
    if request.param != "torch":
        monkeypatch.setattr(fused_loss, "TORCH_CHUNKS", None)
    monkeypatch.setattr(fused_loss, "CHUNK_ELEMENTS", 3 * 17)  # 3 rows per chunk of a 17-word head: 10 rows make 4
    monkeypatch.setattr(fused_loss, "TORCH_CHUNK_ELEMENTS", 3 * 17)
    return request.param


def test_the_summed_loss_and_its_gradients_equal_whole_logits_cross_entropy(chunked_by):
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(17, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 17, (2, 5))
    targets[0, :2] = targets[1, 4] = -100
    logits = (hidden @ weight.t()).flatten(0, 1)
    expected = F.cross_entropy(logits, targets.flatten(), ignore_index=-100, reduction="sum")
    want_hidden, want_weight = torch.autograd.grad(2.5 * expected, (hidden, weight))

    total = summed_token_loss(hidden, weight, targets)
    got_hidden, got_weight = torch.autograd.grad(2.5 * total, (hidden, weight))
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(got_hidden, want_hidden, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_weight, want_weight, rtol=1e-10, atol=1e-12)
    assert got_hidden[0, :2].abs().max() == 0 and got_hidden[1, 4].abs().max() == 0


def test_sequence_loss_sums_equal_those_from_whole_logits(chunked_by):
    model = tiny_causal_lm("llama", vocab_size=17)
    ids = torch.randint(0, 17, (3, 7), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :4] = labels[2, 5:] = -100  # a masked prompt, a padded tail
    with torch.no_grad():
        expected = token_loss_sums(model(input_ids=ids).logits, labels)
    got = sequence_loss_sums(model, model.lm_head, {"input_ids": ids, "labels": labels})
    assert got[:, 1].tolist() == [3, 6, 4]  # targets counted: labels[1:] that are not -100
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def tiny_causal_lm(model_type: str, vocab_size: int = 64, **overrides):
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                  **overrides)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def test_a_head_the_fused_loss_reproduces_is_used_and_any_other_is_left_to_the_model(caplog):
    llama = tiny_causal_lm("llama")
    before = {name: value.clone() for name, value in llama.state_dict().items()}
    assert fusable_head(llama) is llama.lm_head
    assert all(torch.equal(before[name], value) for name, value in llama.state_dict().items())  # check left no trace
    assert fusable_head(tiny_causal_lm("gemma2", final_logit_softcapping=None)) is not None
    # Gemma 2 soft-caps its logits at 30 by default: the tiny-batch check notices, whatever the family is called
    assert fusable_head(tiny_causal_lm("gemma2")) is None
    biased = tiny_causal_lm("llama")
    biased.lm_head = torch.nn.Linear(16, 64, bias=True)
    with caplog.at_level(logging.INFO, logger="hf_recipes.fused_loss"):
        assert fusable_head(biased) is None
    assert "The output head has a bias, which the fused loss does not add" in caplog.text


def lyrics_run(tiny_model_args, fused: bool, **extra):
    return lyrics.build_trainer(**{
        **tiny_model_args, "train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 32,
        "max_steps": 20, "logging_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
        "learning_rate": 3e-3, "fused_lm_loss": fused, "output_dir": tiny_model_args["output_dir"] + str(fused),
        **extra})


@pytest.mark.slow
def test_twenty_lyrics_steps_log_the_same_losses_with_and_without_the_fused_loss(tiny_model_args):
    # Dropout on: both ways draw the same dropout masks, so the losses agree step for step.
    losses = {}
    for fused in (True, False):
        trainer, _ = lyrics_run(tiny_model_args, fused)
        assert (trainer.fused_head is not None) == fused
        trainer.train()
        losses[fused] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses[True]) == 20
    assert losses[True][-1] < losses[True][0] - 0.5  # it learned
    assert max(abs(a - b) for a, b in zip(losses[True], losses[False])) < 1e-3


def test_the_fused_loss_steps_aside_under_autocast(tiny_model_args):
    trainer, _ = lyrics_run(tiny_model_args, True, mixed_precision="bf16")
    assert trainer.fused_head is None


EVALUATED = {
    "lyrics": (lyrics, {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 32}),
    "instruct padding-free": (instruct, {"train_file": str(SAMPLES / "instructions" / "instructions.json"),
                                         "max_train_samples": 40, "padding_free": True}),
}


@pytest.mark.parametrize("case", EVALUATED)
def test_evaluation_sums_the_same_sequence_losses_without_whole_logits(case, tiny_model_args):
    recipe, data = EVALUATED[case]
    results, positions = {}, []
    for fused in (True, False):
        trainer, prepared = recipe.build_trainer(**{**tiny_model_args, **data, "max_steps": 1, "fused_lm_loss": fused,
                                                    "per_device_eval_batch_size": 3})
        head = prepared.model.get_output_embeddings()
        hook = head.register_forward_hook(lambda module, args, output: positions.append((fused, output.shape[-2])))
        results[fused] = trainer.evaluate()
        hook.remove()
    assert results[True]["eval_loss"] == pytest.approx(results[False]["eval_loss"], rel=1e-6)
    assert {n for fused, n in positions if fused} == {1}  # the head never made a whole sequence's logits
    assert max(n for fused, n in positions if not fused) > 1
