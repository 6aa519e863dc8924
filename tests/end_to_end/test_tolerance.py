"""Input that a run should get through: a few bad records are dropped and counted, labels without train rows are
warned about, and a step that fails after training is recorded without losing the trained model."""

import json
from pathlib import Path

import numpy as np
import pytest

from hf_recipes import recipes
from hf_recipes import baselines, cli
from tests.conftest import (cli_args, instruction_records, needs_shared, SAMPLE_DATA, SHARED_DATA,
                           write_file)


def finished(output_dir) -> tuple[dict, str]:
    folder = Path(output_dir)
    assert json.loads((folder / "recipe.json").read_text())["recipe"]  # the run is marked finished
    return json.loads((folder / "checks.json").read_text()), (folder / "report.md").read_text()


def test_texts_without_words_still_get_a_tfidf_baseline():
    texts = ["😀😀", "😡", "😀 🎉", "😡😡 💢", "🎉", "💢 😡"]
    labels = [1, 0, 1, 0, 1, 0]
    predicted = baselines.tfidf_logistic_regression_predictions(texts, labels, ["😀", "💢"], seed=0)
    assert list(predicted) == [1, 0]


@pytest.mark.slow
@pytest.mark.parametrize(("step", "target"), [
    ("classification baselines", "hf_recipes.baselines.tfidf_logistic_regression_predictions"),
    ("task report", "hf_recipes.recipes.sentiment.plot_confusion_matrix"),
    ("report", "hf_recipes.report.plot_loss_curve"),
])
def test_a_step_failing_after_training_is_recorded_and_the_run_finishes(step, target, tiny_model_args, monkeypatch,
                                                                         caplog):
    def broken(*args, **kwargs):
        raise ValueError("empty vocabulary;\nperhaps the documents only contain stop words")

    monkeypatch.setattr(target, broken)
    run = {**tiny_model_args, **SAMPLE_DATA["sentiment"], "max_steps": 2}
    assert cli.main(["train", "sentiment", *cli_args(run)]) == 0
    out = Path(run["output_dir"])
    assert (out / "model.safetensors").is_file()
    checks = json.loads((out / "checks.json").read_text())
    error = "ValueError: empty vocabulary; perhaps the documents only contain stop words"
    assert checks["failed_steps"] == [{"step": step, "error": error}]
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "sentiment"
    assert f"The {step} failed after training (ValueError" in caplog.text
    if step != "report":
        report = (out / "report.md").read_text()
        assert "## Steps that failed" in report and error in report


@pytest.mark.slow
def test_a_label_listed_without_train_rows_is_warned_about(tiny_model_args, caplog):
    run = {**tiny_model_args, **SAMPLE_DATA["sentiment"], "max_steps": 1, "labels": ["negative", "neutral", "positive",
                                                                               "sarcastic"]}
    assert cli.main(["train", "sentiment", *cli_args(run)]) == 0
    assert "No train row has the label(s) sarcastic" in caplog.text
    _, report = finished(run["output_dir"])
    assert "labels without train rows (cannot be learned): sarcastic" in report


def test_instruction_records_without_an_output_are_dropped_and_counted(tiny_model_args, tmp_path, caplog):
    rows = instruction_records(n=40)
    for i in (3, 17, 29):
        rows[i]["output"] = "" if i != 17 else None
    rows[5]["instruction"] = "  "
    run = {**tiny_model_args, "train_file": write_file(tmp_path, "alpaca.json", rows), "max_steps": 1,
           "max_new_tokens": 2, "test_split_percentage": 10, "validation_split_percentage": 10}
    recipe = recipes.get("instruct")
    trainer, prepared = recipe.build_trainer(**run)
    kept = sum(len(prepared.raw[s]) for s in prepared.raw)
    assert kept == 36
    dropped = prepared.facts["records dropped (no instruction or no output)"]
    assert sum(int(part.split()[1]) for part in dropped.split(", ")) == 4
    assert "rows with empty 'output'" in caplog.text
    assert all(r["output"] and r["instruction"].strip() for s in prepared.raw for r in prepared.raw[s])


def test_a_record_whose_prompt_fills_the_length_is_dropped_not_a_nan(tiny_model_args, tmp_path):
    rows = instruction_records(n=30)
    rows[4]["input"] = "word " * 200  # its prompt alone is longer than max_seq_length
    run = {**tiny_model_args, "train_file": write_file(tmp_path, "long.json", rows), "max_steps": 1, "max_new_tokens": 2,
           "max_seq_length": 96}
    trainer, prepared = recipes.get("instruct").build_trainer(**run)
    counts = prepared.facts["records dropped (prompt fills max length)"]
    assert sum(int(part.split()[1]) for part in counts.split(", ")) == 1
    for split in prepared.datasets:
        for labels in prepared.datasets[split]["labels"]:
            assert np.any(np.asarray(labels[1:]) != -100)


@needs_shared
def test_the_real_instruction_file_with_a_blank_output_trains(tiny_model_args, tmp_path):
    records_ = json.loads((SHARED_DATA / "instructions" / "instruction-data.json").read_text())
    records_[10]["output"] = ""  # as real Alpaca data has
    path = write_file(tmp_path, "instructions.json", records_)
    trainer, prepared = recipes.get("instruct").build_trainer(
        **{**tiny_model_args, "train_file": path, "max_steps": 1, "max_new_tokens": 2, "max_seq_length": 128})
    assert sum(len(prepared.raw[s]) for s in prepared.raw) == len(records_) - 1
