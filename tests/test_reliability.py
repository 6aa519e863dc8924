"""Crash and resume, non-finite losses, and run-to-run determinism, for every recipe."""

import json
from pathlib import Path

import pytest

import recipes
from hf_recipes import cli
from hf_recipes.trainer import RecipeTrainer, last_complete_checkpoint
from tests.conftest import SAMPLES, cli_args

TASK_DATA = {
    "sentiment": {"train_file": str(SAMPLES / "sentiment" / "train.csv"),
                  "test_file": str(SAMPLES / "sentiment" / "test.csv"),
                  "label_column": "sentiment", "max_train_samples": 200, "max_test_samples": 50},
    "lyrics": {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 64, "max_new_tokens": 4,
               "prompts": ["Down by"]},
    "instruct": {"train_file": str(SAMPLES / "instructions" / "instructions.json"), "max_new_tokens": 4,
                 "max_train_samples": 120},
}
RECIPES = list(TASK_DATA)


def settings(tiny_model_args, name, output_dir):
    return {**tiny_model_args, **TASK_DATA[name], "output_dir": str(output_dir), "max_steps": 6,
            "save_strategy": "steps", "save_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
            "logging_steps": 1}


def final_metrics(metrics):
    return {k: v for k, v in metrics.items()
            if k.startswith(("eval_", "test_")) and "runtime" not in k and "per_second" not in k
            and "preparation_time" not in k}


def crash_at(monkeypatch, step, error=RuntimeError("simulated crash")):
    """Make training die while it runs optimizer step ``step`` (steps before it, and their checkpoints, done)."""
    original = RecipeTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step - 1:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecipeTrainer, "training_step", training_step)


@pytest.mark.parametrize("name", RECIPES)
def test_a_crashed_run_resumes_from_its_newest_checkpoint_to_the_same_metrics(name, tiny_model_args, tmp_path,
                                                                              monkeypatch):
    recipe = recipes.get(name)
    reference = final_metrics(recipe.run(**settings(tiny_model_args, name, tmp_path / "reference")))

    crashed = settings(tiny_model_args, name, tmp_path / "crashed")
    with monkeypatch.context() as patch:
        crash_at(patch, 5)
        with pytest.raises(RuntimeError, match="simulated crash"):
            recipe.run(**crashed)
    assert last_complete_checkpoint(crashed["output_dir"]).endswith("checkpoint-4")
    assert not (tmp_path / "crashed" / "all_results.json").exists()

    steps_run = []
    original = RecipeTrainer.training_step

    def counting_step(self, *args, **kwargs):
        steps_run.append(self.state.global_step + 1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecipeTrainer, "training_step", counting_step)
    resumed = final_metrics(recipe.run(**crashed))  # the same call again
    assert sorted(set(steps_run)) == [5, 6]  # steps 1-4 came from checkpoint-4
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == pytest.approx(value, abs=1e-4), key
    state = json.loads((tmp_path / "crashed" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]


def test_an_incomplete_checkpoint_is_never_chosen(tmp_path):
    def checkpoint(step, state):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)

    checkpoint(2, json.dumps({"global_step": 2}))
    checkpoint(10, json.dumps({"global_step": 10}))
    checkpoint(12, '{"global_step": 1')  # cut off while written
    checkpoint(14, None)  # killed before the state file
    (tmp_path / "checkpoint-16").mkdir()  # killed before the weights
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_overwrite_output_dir_starts_afresh_and_an_explicit_checkpoint_wins(tiny_model_args, tmp_path, monkeypatch):
    run = settings(tiny_model_args, "lyrics", tmp_path / "run")
    with monkeypatch.context() as patch:
        crash_at(patch, 5)
        with pytest.raises(RuntimeError):
            recipes.get("lyrics").run(**run)
    args = recipes.get("lyrics").parse(**{**run, "overwrite_output_dir": True})
    assert recipes.get("lyrics").checkpoint_to_resume(args) is None
    args = recipes.get("lyrics").parse(**{**run, "resume_from_checkpoint": str(tmp_path / "run" / "checkpoint-2")})
    assert recipes.get("lyrics").checkpoint_to_resume(args).endswith("checkpoint-2")


def test_a_non_finite_loss_stops_the_run_naming_the_step(tiny_model_args, tmp_path, monkeypatch, capsys):
    original = RecipeTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == 2 else loss

    monkeypatch.setattr(RecipeTrainer, "compute_loss", compute_loss)
    run = settings(tiny_model_args, "sentiment", tmp_path / "run")
    assert cli.main(["train", "sentiment", *cli_args(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training loss became nan at step 3; stopped (last good checkpoint: ")
    assert err.endswith("checkpoint-2); lower learning_rate or check the data")
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]


@pytest.mark.parametrize("name", RECIPES)
def test_same_seed_and_data_give_identical_metrics(name, tiny_model_args, tmp_path):
    recipe = recipes.get(name)
    first = final_metrics(recipe.run(**{**settings(tiny_model_args, name, tmp_path / "a"), "save_strategy": "no"}))
    second = final_metrics(recipe.run(**{**settings(tiny_model_args, name, tmp_path / "b"), "save_strategy": "no"}))
    assert first == second
