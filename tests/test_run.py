"""Crash and resume, non-finite losses, and run-to-run determinism, for every recipe."""

import dataclasses
import json
import math
import os
import random
import signal
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from hf_recipes import recipes
from hf_recipes import cli
from transformers import TrainerState, set_seed

from hf_recipes.run_folder import last_complete_checkpoint
from hf_recipes.trainer import RecipeTrainer
from hf_recipes.run import train_loss_of_resumed_run
from tests.conftest import cli_args, final_metrics, TASK_DATA

RECIPES = list(TASK_DATA)


def settings(tiny_model_args, name, output_dir):
    return {**tiny_model_args, **TASK_DATA[name], "output_dir": str(output_dir), "max_steps": 6,
            "save_strategy": "steps", "save_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
            "logging_steps": 1}




def crash_at(monkeypatch, step, error=RuntimeError("simulated crash")):
    """Make training die while it runs optimizer step ``step`` (steps before it, and their checkpoints, done)."""
    original = RecipeTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step - 1:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecipeTrainer, "training_step", training_step)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at(patch, moment):
    """Patch the training machinery so this process dies by SIGKILL at ``moment``:
    ("step", s) while computing optimizer step s; ("weights", c) with checkpoint-c's weights and optimizer written
    but not its RNG or trainer state; ("state", c) halfway through writing checkpoint-c's trainer_state.json;
    ("results",) after training, while the run's metrics files are written."""
    kind, at = moment[0], moment[-1]
    if kind == "step":
        original_step = RecipeTrainer.training_step

        def training_step(self, *args, **kwargs):
            if self.state.global_step == at - 1:
                kill_self()
            return original_step(self, *args, **kwargs)

        patch.setattr(RecipeTrainer, "training_step", training_step)
    elif kind == "weights":
        original_rng = RecipeTrainer._save_rng_state

        def save_rng_state(self, output_dir):
            if output_dir.endswith(f"checkpoint-{at}"):
                kill_self()
            return original_rng(self, output_dir)

        patch.setattr(RecipeTrainer, "_save_rng_state", save_rng_state)
    elif kind == "state":
        original_json = TrainerState.save_to_json

        def save_to_json(self, json_path):
            if json_path.endswith(f"checkpoint-{at}/trainer_state.json"):
                Path(json_path).write_text(json.dumps(dataclasses.asdict(self))[:100])
                kill_self()
            return original_json(self, json_path)

        patch.setattr(TrainerState, "save_to_json", save_to_json)
    else:
        original_metrics = RecipeTrainer.save_metrics

        def save_metrics(self, split, *args, **kwargs):
            if split == "eval":
                kill_self()
            return original_metrics(self, split, *args, **kwargs)

        patch.setattr(RecipeTrainer, "save_metrics", save_metrics)


def run_killed(train: Callable[[], object], moment, monkeypatch) -> int:
    """Call ``train`` in a forked child that SIGKILLs itself at ``moment``; return the signal that ended it."""
    child = os.fork()
    if child == 0:  # the child never returns into pytest
        try:
            torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork; one thread never touches it
            with monkeypatch.context() as patch:
                kill_at(patch, moment)
                train()
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


# Four kill moments per recipe, drawn with a fixed seed from every step, both halves of every save, and the results.
MOMENTS = [("step", s) for s in range(1, 7)] + [(k, c) for k in ("weights", "state") for c in (2, 4, 6)] + [("results",)]
KILLS = [(name, moment) for name in RECIPES for moment in random.Random(name).sample(MOMENTS, 4)]


def once_per_name(compute: Callable):
    """``compute(name, tiny_model_args)`` run once per name, for a module-scoped fixture shared by many tests."""
    cache = {}

    def get(name, tiny_model_args):
        if name not in cache:
            cache[name] = compute(name, tiny_model_args)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Final metrics of one uninterrupted run per recipe (shared by the kill trials)."""
    return once_per_name(lambda name, tiny_model_args: final_metrics(recipes.get(name).run(
        **settings(tiny_model_args, name, tmp_path_factory.mktemp(f"{name}-reference")))))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "moment"), KILLS, ids=[f"{n}-{'-'.join(map(str, m))}" for n, m in KILLS])
def test_a_killed_run_resumes_to_the_uninterrupted_metrics(name, moment, uninterrupted, tiny_model_args, tmp_path,
                                                           monkeypatch):
    recipe = recipes.get(name)
    reference = uninterrupted(name, tiny_model_args)
    run = settings(tiny_model_args, name, tmp_path / "killed")
    assert run_killed(lambda: recipe.run(**run), moment, monkeypatch) == signal.SIGKILL
    assert not (tmp_path / "killed" / "recipe.json").exists()

    resumed = final_metrics(recipe.run(**run))  # the same call again
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        # The killed child ran on one thread (see run_killed), so sums may differ in the last bits; perplexity is
        # exp(loss), so it is compared as a loss.
        scale = math.log if "perplexity" in key else float
        assert scale(resumed[key]) == pytest.approx(scale(value), abs=1e-4), key
    state = json.loads((tmp_path / "killed" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]  # each step logged once


def test_train_loss_of_a_resumed_run_is_the_whole_runs_mean_where_the_log_reaches_the_resume():
    log = [{"loss": 2.0, "step": 2}, {"eval_loss": 9.0, "step": 2}, {"loss": 1.0, "step": 4}, {"loss": 0.7, "step": 5}]
    assert train_loss_of_resumed_run(log, resumed_at=4, global_step=6, loss_since_resume=0.5) == {
        "train_loss": (2.0 * 2 + 1.0 * 2 + 0.5 * 2) / 6, "train_loss_since_resume": 0.5}
    # Logged every 3 steps, resumed at 4: steps 4's loss was never logged, so the figure says what it covers.
    assert train_loss_of_resumed_run([{"loss": 2.0, "step": 3}], resumed_at=4, global_step=6,
                                     loss_since_resume=0.5) == {"train_loss_from_step": 5}


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


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_same_seed_and_data_give_identical_metrics(name, tiny_model_args, tmp_path):
    recipe = recipes.get(name)
    first = final_metrics(recipe.run(**{**settings(tiny_model_args, name, tmp_path / "a"), "save_strategy": "no"}))
    second = final_metrics(recipe.run(**{**settings(tiny_model_args, name, tmp_path / "b"), "save_strategy": "no"}))
    assert first == second


# Exact resume. The sentiment run below has 15 batches an epoch and accumulates 4 of them per optimizer step, so
# each epoch ends in a partial step of 3 batches; 2 epochs of 4 steps, a checkpoint after every step. Resuming from
# checkpoint-k stands for a run killed after checkpoint-k (the checkpoint is final once written): steps 1-3 are
# inside epoch 1, 4 ends it, 5-7 are inside epoch 2.
EXACT_RESUME = {**TASK_DATA["sentiment"], "max_train_samples": 58, "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 4, "num_train_epochs": 2, "save_strategy": "steps", "save_steps": 1,
                "save_total_limit": None, "learning_rate": 1e-3, "logging_steps": 1}
STEPS_PER_EPOCH, ACCUMULATION = 4, EXACT_RESUME["gradient_accumulation_steps"]
RESUMES = [("group_by_length", k) for k in range(1, 2 * STEPS_PER_EPOCH)] + [
    (strategy, k) for strategy in ("random", "sequential") for k in (4, 6)]


def train_sentiment(run: dict, resume_from_checkpoint: str | None = None):
    """Train as `Recipe.run` does; return the final weights and the logged loss of every step trained."""
    trainer, prepared = recipes.get("sentiment").build_trainer(**run)
    batches = math.ceil(len(prepared.datasets["train"]) / run["per_device_train_batch_size"])
    assert batches == 15 and batches % ACCUMULATION != 0  # the layout the positions above describe
    set_seed(run.get("seed", 42))
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, losses


def assert_same_weights(weights: dict, expected: dict) -> None:
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)  # bitwise


@pytest.fixture
def one_thread():
    """Single-threaded torch: every run sums in the same order, so runs compare bitwise (a forked child must run
    on one thread anyway, see run_killed), and tiny models train faster than on threads contending for the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """One uninterrupted run per sampling strategy that keeps every checkpoint: (folder, weights, losses)."""

    def run(strategy, tiny_model_args):
        folder = tmp_path_factory.mktemp(f"exact-{strategy}")
        return folder, *train_sentiment({**tiny_model_args, **EXACT_RESUME, "train_sampling_strategy": strategy,
                                         "output_dir": str(folder)})

    return once_per_name(run)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "checkpoint"), RESUMES, ids=[f"{s}-after-{k}" for s, k in RESUMES])
def test_resuming_after_any_checkpoint_trains_exactly_as_the_uninterrupted_run(strategy, checkpoint, checkpointed,
                                                                                tiny_model_args, tmp_path, one_thread):
    folder, weights, losses = checkpointed(strategy, tiny_model_args)
    assert sorted(losses) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    run = {**tiny_model_args, **EXACT_RESUME, "train_sampling_strategy": strategy, "output_dir": str(tmp_path)}
    resumed_weights, resumed_losses = train_sentiment(run, str(folder / f"checkpoint-{checkpoint}"))
    # Every step after the checkpoint sees the same batches in the same order with the same dropout masks (the
    # resumed log starts with the checkpoint's own history).
    assert resumed_losses == losses
    assert_same_weights(resumed_weights, weights)


@pytest.mark.slow
def test_the_cli_killed_mid_epoch_after_a_partial_accumulation_step_resumes_exactly(tiny_model_args, tmp_path,
                                                                                   monkeypatch, one_thread):
    """The shipped sentiment settings (accumulation, group_by_length): `hf-recipes train` SIGKILLed while computing
    step 7, after checkpoint-6 (two steps into epoch 2), then the same command again."""
    run = {**tiny_model_args, **EXACT_RESUME, "save_steps": 3}
    del run["save_total_limit"]  # the recipe's own limit (2) keeps checkpoint-3 and -6

    def train(output_dir):
        return cli.main(["train", "sentiment", *cli_args({**run, "output_dir": str(output_dir)})])

    def results(output_dir):
        return (final_metrics(json.loads((output_dir / "all_results.json").read_text())),
                load_file(output_dir / "model.safetensors"))

    assert train(tmp_path / "uninterrupted") == 0
    assert run_killed(lambda: train(tmp_path / "killed"), ("step", 7), monkeypatch) == signal.SIGKILL
    assert last_complete_checkpoint(tmp_path / "killed") == str(tmp_path / "killed" / "checkpoint-6")
    assert train(tmp_path / "killed") == 0

    (metrics, weights), (resumed_metrics, resumed_weights) = results(tmp_path / "uninterrupted"), results(
        tmp_path / "killed")
    assert resumed_metrics == metrics and "test_loss" in metrics
    assert_same_weights(resumed_weights, weights)
