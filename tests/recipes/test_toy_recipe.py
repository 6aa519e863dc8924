"""A recipe from another package (tests/recipes/toy_recipe: summarisation, registered through the entry-point group) trains,
reports, generates and sweeps through the hf-recipes command, with nothing in hf_recipes/ knowing about it."""

import json
from pathlib import Path

import pandas as pd
import pytest

import hf_recipes
from hf_recipes import cli, recipes
from hf_recipes.generation import GenerationArguments, generate, load_causal_lm
from tests.conftest import cli_args

ANIMALS = ["cat", "dog", "fox", "owl", "hen", "cow", "pig", "bee"]
PLACES = ["mat", "barn", "hill", "pond", "road", "tree"]


def write_split(path: Path, rows: list[tuple[str, str]]) -> str:
    pd.DataFrame(rows, columns=["document", "summary"]).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def toy(tmp_path, monkeypatch, tiny_model_args):
    """The toy package registered as pip would leave it (its metadata on sys.path), and flags for a tiny run."""
    metadata = tmp_path / "toy_recipe-0.1.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-recipe\nVersion: 0.1\n")
    (metadata / "entry_points.txt").write_text("[hf_recipes.recipes]\nsummarise = tests.recipes.toy_recipe.summarise:RECIPE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [(f"The {a} walked to the {p} and stayed there until the sun went down.", f"{a} at the {p}")
            for a in ANIMALS for p in PLACES]
    files = {"train_file": write_split(tmp_path / "train.csv", rows[:36]),
             "validation_file": write_split(tmp_path / "validation.csv", rows[36:42]),
             "test_file": write_split(tmp_path / "test.csv", rows[42:])}
    return {**tiny_model_args, **files, "max_steps": 4, "per_device_train_batch_size": 4}


def test_the_toy_recipe_needs_no_word_of_it_in_hf_recipes():
    package = Path(hf_recipes.__file__).parent
    assert [p for p in package.rglob("*.py") if "summari" in p.read_text(encoding="utf-8").lower()] == []


def test_a_recipe_from_another_package_trains_reports_and_generates(toy, capsys):
    assert "summarise" in recipes.available()
    assert cli.main(["train", "summarise", *cli_args(toy)]) == 0
    out = Path(toy["output_dir"])
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["recipe"] == "summarise" and saved["model_kind"] == "causal LM"
    assert saved["prompt_format"]["template"] == "{prompt}\nTL;DR: "
    report = (out / "report.md").read_text()
    assert "Summaries of test documents" in report and "Validation loss before and after fine-tuning" in report
    results = json.loads((out / "all_results.json").read_text())
    assert 0 <= results["test_rouge_l"] <= 1 and "eval_perplexity" in results
    capsys.readouterr()

    # generate prompts the model as recipe.json says, with no code of the recipe: as the recipe's own prompt
    assert cli.main(["generate", "--model_dir", str(out), "--prompt", "The owl flew to the tree.",
                     "--max_new_tokens", "6"]) == 0
    printed = capsys.readouterr().out.strip()
    model, tokenizer = load_causal_lm(out)
    settings = GenerationArguments(do_sample=False, max_new_tokens=6, repetition_penalty=1.1)
    expected = generate(model, tokenizer, ["The owl flew to the tree.\nTL;DR: "], settings)[0].strip()
    assert printed == expected

    assert cli.main(["generate", "--model_dir", str(out)]) == 2
    assert "give --prompt: the text to summarise" in capsys.readouterr().err
    # its model kind, from recipe.json, keeps it away from the classifier verb
    assert cli.main(["predict", "--model_dir", str(out), "some text"]) == 2
    assert "predict is for classification recipes; use `hf-recipes generate` for summarise" in capsys.readouterr().err


@pytest.mark.slow
def test_a_recipe_from_another_package_sweeps(toy, capsys):
    pytest.importorskip("optuna")
    found = {}
    for fused in (True, False):  # each trial's fresh model is trained with the fused loss on its own head
        settings = {**toy, "max_steps": 2, "fused_lm_loss": fused, "output_dir": f"{toy['output_dir']}-{fused}"}
        assert cli.main(["sweep", "summarise", "--n_trials", "2", *cli_args(settings)]) == 0
        trials = pd.read_csv(Path(settings["output_dir"]) / "sweep" / "trials.csv")
        assert list(trials["state"]) == ["complete", "complete"]
        assert trials["objective"].equals(trials["eval_loss"])
        found[fused] = trials["eval_loss"].tolist()
    assert found[True] == pytest.approx(found[False], abs=1e-5)
