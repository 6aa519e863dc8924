"""Early stopping, experiment trackers, the model card and `hf-recipes compare`, on tiny sentiment runs."""

import json
import sqlite3
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hf_recipes import cli
from hf_recipes.errors import RecipeError
from hf_recipes.recipes import sentiment
from tests.conftest import card_snippet, cli_args, random_tweets, REPO, run_card_snippet, tiny_overrides

RUN_MEASUREMENTS = ("runtime", "per_second", "preparation_time", "samples", "flos")


def sentiment_run(folder: Path, **settings) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(random_tweets(40)).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(random_tweets(12, seed=1)).to_csv(folder / "test.csv", index=False)
    return {**tiny_overrides(folder / "run"), "train_file": str(folder / "train.csv"),
            "test_file": str(folder / "test.csv"), "label_column": "sentiment", "logging_steps": 1,
            "per_device_train_batch_size": 4, **settings}


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished from-scratch runs on local CSV files that differ in learning rate."""
    runs = []
    for name, learning_rate in [("slow", 1e-4), ("fast", 3e-3)]:
        overrides = sentiment_run(tmp_path_factory.mktemp(name), max_steps=4, eval_strategy="steps", eval_steps=2,
                                  learning_rate=learning_rate, gradient_accumulation_steps=2)
        sentiment.run(**overrides)
        runs.append(overrides)
    return runs


# ---- early stopping -----------------------------------------------------------------------------------


def test_early_stopping_ends_training_after_patience_evaluations_without_improvement(tmp_path):
    patience, threshold = 2, 1e-3
    # A learning rate this small moves the validation loss by far less than the threshold: no evaluation after the
    # first counts as an improvement, so training stops at evaluation 1 + patience, long before max_steps.
    overrides = sentiment_run(tmp_path, max_steps=30, learning_rate=1e-9, eval_strategy="steps", eval_steps=1,
                              save_strategy="steps", save_steps=1, save_total_limit=1, load_best_model_at_end=True,
                              early_stopping_patience=patience, early_stopping_threshold=threshold)
    sentiment.run(**overrides)
    history = json.loads((Path(overrides["output_dir"]) / "trainer_state.json").read_text())["log_history"]
    eval_losses = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    assert [step for step, _ in eval_losses] == list(range(1, patience + 2))
    assert all(abs(loss - eval_losses[0][1]) <= threshold for _, loss in eval_losses)  # the premise held
    assert max(e["step"] for e in history) == patience + 1
    # The model card tells what training did, not only what was set
    best = json.loads((Path(overrides["output_dir"]) / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert (f"| length | {patience + 1} steps of 30: early stopping ended training; the model is the best checkpoint "
            f"({Path(best).name}) (set: 30 steps) |") in (Path(overrides["output_dir"]) / "README.md").read_text()


@pytest.mark.parametrize("settings", [
    {"eval_strategy": "no", "load_best_model_at_end": False},
    {"eval_strategy": "steps", "eval_steps": 1, "load_best_model_at_end": False},
])
def test_early_stopping_without_evaluations_or_best_model_is_one_line(tmp_path, capsys, settings):
    overrides = {**sentiment_run(tmp_path, max_steps=2, early_stopping_patience=1), **settings}
    assert cli.main(["train", "sentiment", *cli_args(overrides)]) == 2
    assert capsys.readouterr().err == (
        "error: early_stopping_patience needs evaluations to compare and the best model kept: set --eval_strategy "
        "steps (or epoch) and --load_best_model_at_end true\n")
    assert not Path(overrides["output_dir"]).exists()


def test_early_stopping_patience_must_be_positive(tmp_path):
    with pytest.raises(RecipeError, match="early_stopping_patience must be 1 or more, got 0"):
        sentiment.RECIPE.parse(**sentiment_run(tmp_path, early_stopping_patience=0))


# ---- experiment trackers ------------------------------------------------------------------------------


def test_tensorboard_writes_the_logged_losses_under_the_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = sentiment_run(tmp_path, max_steps=3, report_to="tensorboard")
    sentiment.run(**overrides)
    output_dir = Path(overrides["output_dir"])
    # One folder for the run; the final evaluation after training opens a second event file there.
    folders = {path.parent for path in output_dir.glob("runs/*/events.out.tfevents.*")}
    assert len(folders) == 1
    accumulator = EventAccumulator(str(folders.pop()))
    accumulator.Reload()
    logged = [(s.step, s.value) for s in accumulator.Scalars("train/loss")]
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    expected = [(e["step"], e["loss"]) for e in history if "loss" in e]
    assert [step for step, _ in logged] == [step for step, _ in expected] == [1, 2, 3]
    assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-6)


@pytest.mark.slow
def test_trackio_logs_to_its_local_database_only(tmp_path, monkeypatch):
    storage = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(storage))
    for module in [m for name, m in list(sys.modules.items()) if name.startswith("trackio")]:
        if hasattr(module, "TRACKIO_DIR"):  # already imported: it read the variable at import time
            monkeypatch.setattr(module, "TRACKIO_DIR", storage)
    overrides = sentiment_run(tmp_path / "data", max_steps=3, report_to="trackio", project="hfr-test",
                              run_name="tiny")
    sentiment.run(**overrides)  # the conftest fixture fails any connection beyond localhost
    databases = list(storage.glob("*.db"))
    assert [db.stem for db in databases] == ["hfr-test"]
    with sqlite3.connect(databases[0]) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "metrics" in tables
        steps = sorted(row[0] for row in db.execute("SELECT step FROM metrics"))
    assert {1, 2, 3} <= set(steps)


@pytest.mark.parametrize("tracker", ["tensorboard", "trackio", "wandb"])
def test_a_missing_tracker_names_the_extra_to_install(tmp_path, capsys, monkeypatch, tracker):
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, f"is_{tracker}_available", lambda: False)
    overrides = sentiment_run(tmp_path, max_steps=2, report_to=tracker)
    assert cli.main(["train", "sentiment", *cli_args(overrides)]) == 2
    assert capsys.readouterr().err == (f"error: --report_to {tracker}: {tracker} is not installed; "
                                       f"pip install 'hf-recipes[{tracker}]'\n")
    assert not Path(overrides["output_dir"]).exists()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [requirement.split(">")[0] for requirement in extras[tracker]] == [tracker]  # the extra named exists


# ---- model card ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_card_of_a_from_scratch_run_on_local_files(finished_runs):
    overrides = finished_runs[0]
    output_dir = Path(overrides["output_dir"])
    text = (output_dir / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "transformers"
    assert {"hf-recipes", "sentiment"} <= set(meta["tags"])
    test_results = json.loads((output_dir / "test_results.json").read_text())
    assert meta["language"] == ["en"] and "license" not in meta  # from scratch: no base whose license to keep
    results = meta["model-index"][0]["results"]
    assert {r["task"]["type"] for r in results} == {"text-classification"}
    assert {r["dataset"]["split"] for r in results} == {"test"}
    assert {r["dataset"]["type"] for r in results} == {"test.csv"}  # the scored file, not a made-up hub type
    scored = {m["type"]: m["value"] for r in results for m in r["metrics"]}
    assert {"accuracy", "loss"} <= scored.keys()
    assert not [name for name in scored if any(word in name for word in RUN_MEASUREMENTS)]
    assert scored == {name: test_results[f"test_{name}"] for name in scored}
    assert sorted(meta["metrics"]) == sorted(scored)

    assert "Trained from scratch (no base model): a new `gpt2` (n_layer=1,n_embd=32,n_head=2,n_positions=128)" in body
    assert "local files (train.csv, test.csv), not a Hub dataset" in body
    assert "| batch | 4 per device x 2 accumulation x 1 process(es) |" in body
    assert "| learning rate | 0.0001 |" in body and "| length | 4 steps |" in body
    assert "| precision | weights float32, compute fp32 |" in body
    for wrong in ("None dataset", "mteb", "runtime", "preparation", "per_second", "local\n"):
        assert wrong not in text
    assert "## Intended use and limitations" in body and "Labelling the sentiment of short texts" in body


def test_the_model_card_snippet_classifies_as_hf_recipes_predict(finished_runs, tmp_path, monkeypatch, capsys):
    output_dir = Path(finished_runs[1]["output_dir"])
    assert f'pipeline("text-classification", model="{output_dir.resolve()}")' in card_snippet(output_dir)
    monkeypatch.chdir(tmp_path)
    namespace = run_card_snippet(output_dir, capsys)
    texts = ["i love this", "i hate at the"]
    expected = sentiment.predict(output_dir, texts)
    found = namespace["classifier"](texts)
    assert [r["label"] for r in found] == [r["label"] for r in expected]
    assert [r["score"] for r in found] == pytest.approx([r["score"] for r in expected], abs=1e-6)


def test_license_and_language_of_the_card_are_settings(tmp_path):
    overrides = sentiment_run(tmp_path, max_steps=1, license="mit", language=["en", "fr"], report=False,
                              classification_baselines=False)
    sentiment.run(**overrides)
    meta = yaml.safe_load((Path(overrides["output_dir"]) / "README.md").read_text().split("---\n", 2)[1])
    assert meta["license"] == "mit" and meta["language"] == ["en", "fr"]


def test_push_to_hub_uploads_the_finished_folder_once_and_writes_no_token(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, RepoUrl

    token, repo = "hf_notARealTokenButSecret123", "someone/tiny-sentiment"
    created, uploads = [], []

    def create_repo(self, repo_id, **kwargs):
        created.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        uploads.append({"repo_id": repo_id, "message": commit_message, "ignore": ignore_patterns,
                        "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
                        "card": (folder / "README.md").read_text() if (folder / "README.md").is_file() else ""})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_TOKEN", raising=False)  # the run puts the token there for the hub client; restored after
    overrides = sentiment_run(tmp_path, max_steps=2, push_to_hub=True, hub_model_id=repo, hub_token=token)
    sentiment.run(**overrides)
    output_dir = Path(overrides["output_dir"])
    assert set(created) == {repo}
    final = uploads[-1]  # without checkpoints, Trainer pushes nothing during training
    assert [(u["repo_id"], u["message"]) for u in uploads] == [
        (repo, "hf-recipes sentiment: finished run (model, card, report, metrics)")]
    written = sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file())
    assert final["files"] == written  # uploaded when everything was written
    for file in ("model.safetensors", "README.md", "report.md", "confusion_matrix.png", "all_results.json",
                 "recipe.json", "checks.json"):
        assert file in final["files"], file
    assert "checkpoint-*" in final["ignore"]
    assert f'model="{repo}"' in final["card"]  # the card's snippet loads the pushed repository
    for path in output_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


# ---- hf-recipes compare -------------------------------------------------------------------------------


def markdown_rows(table: str) -> list[dict[str, str]]:
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    header = [cell.strip() for cell in lines[0]]
    return [dict(zip(header, (cell.strip() for cell in line))) for line in lines[2:]]


def test_compare_prints_settings_and_metrics_and_plots_both_runs(finished_runs, tmp_path, capsys):
    plot = tmp_path / "plots" / "both.png"
    folders = [run["output_dir"] for run in finished_runs]
    assert cli.main(["compare", *folders, "--output", str(plot)]) == 0
    table, _, tail = capsys.readouterr().out.partition("\n\n")
    rows = markdown_rows(table)
    assert [row["run"] for row in rows] == [str(Path(f)) for f in folders]  # both named "run": shown by path
    for row, overrides in zip(rows, finished_runs):
        results = json.loads((Path(overrides["output_dir"]) / "all_results.json").read_text())
        assert row["recipe"] == "sentiment"
        assert float(row["learning_rate"]) == overrides["learning_rate"]
        assert row["per_device_train_batch_size"] == "4" and row["steps"] == "4" and row["max_steps"] == "4"
        assert float(row["test_accuracy"]) == pytest.approx(results["test_accuracy"], rel=1e-3)
        assert float(row["eval_loss"]) == pytest.approx(results["eval_loss"], rel=1e-3)
    assert not [c for c in rows[0] if any(word in c for word in RUN_MEASUREMENTS)]
    assert tail.strip() == f"loss curves: {plot}"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_a_folder_that_is_not_a_finished_run(finished_runs, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "trainer_state.json").write_text("{}")
    plot = tmp_path / "plot.png"
    assert cli.main(["compare", finished_runs[0]["output_dir"], str(unfinished), "--output", str(plot)]) == 2
    assert capsys.readouterr().err == (f"error: {unfinished} is not a finished hf-recipes run (no recipe.json); "
                                       "give the output_dir of a run that completed\n")
    assert not plot.exists()


def test_a_failed_upload_keeps_the_finished_run(tmp_path, monkeypatch, caplog):
    from huggingface_hub import HfApi, RepoUrl

    def upload_folder(self, **kwargs):
        raise OSError("503 Service Unavailable")

    monkeypatch.setattr(HfApi, "create_repo",
                        lambda self, repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    overrides = sentiment_run(tmp_path, max_steps=1, push_to_hub=True, hub_model_id="someone/tiny", hub_token="hf_x",
                              report=False, classification_baselines=False)
    sentiment.run(**overrides)
    output_dir = Path(overrides["output_dir"])
    for file in ("model.safetensors", "README.md", "recipe.json", "all_results.json"):
        assert (output_dir / file).is_file(), file
    assert "The push to hub failed after training (OSError: 503 Service Unavailable)" in caplog.text
