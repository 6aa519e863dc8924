"""The command line itself: help, version, suggestions, and answers that need no deep-learning import."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import hf_recipes
from hf_recipes import cli, flag_index
from hf_recipes.config import recipe_dataclasses
from tests.conftest import REPO

# Runs cli.main in a fresh interpreter and reports which heavy libraries the command imported.
PROBE = """
import sys
from hf_recipes import cli, flag_index
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("torch", "transformers", "datasets", "matplotlib", "sklearn") if m in sys.modules]
print("heavy imports:", ",".join(heavy) or "none")
sys.exit(code)
"""


def run_fresh(*argv: str, probe: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", PROBE, *argv] if probe else [sys.executable, "-m", "hf_recipes", *argv]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_python_m_prints_the_version():
    result = run_fresh("--version", probe=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"hf-recipes {hf_recipes.__version__}\n", "")


@pytest.mark.parametrize("argv, code, shows", [
    (["--version"], 0, f"hf-recipes {hf_recipes.__version__}"),
    (["--help"], 0, "{train,sweep,demo,predict,generate,compare,list}"),
    (["list"], 0, "sentiment\t"),
    (["train", "--help"], 0, "every flag of RECIPE"),
    (["trian", "sentiment"], 2, "error: hf-recipes: argument command: invalid choice: 'trian'"),
    (["list", "--verbose"], 2, "error: unknown argument '--verbose'"),
    (["predict", "sentiment", "--model_dir", "x", "--bach_size", "3"], 2,
     "error: unknown argument '--bach_size' (did you mean '--batch_size'?)"),
])
def test_help_list_version_and_argument_errors_import_no_deep_learning_library(argv, code, shows):
    result = run_fresh(*argv)
    assert result.returncode == code, result.stderr
    assert result.stdout.splitlines()[-1] == "heavy imports: none"
    if code:
        assert result.stderr.startswith(shows) and len(result.stderr.splitlines()) == 1
    else:
        assert shows in result.stdout


def test_train_recipe_help_lists_every_flag_grouped_with_help_and_defaults(capsys):
    from hf_recipes import recipes

    assert cli.main(["train", "sentiment", "--help"]) == 0
    out = capsys.readouterr().out
    classes, titles = recipe_dataclasses(recipes.get("sentiment").task_args_class)
    # Each dataclass under its own heading, in order, and every one of its fields under that heading.
    starts = [out.index(f"\n{title}:\n") for title in titles]
    assert starts == sorted(starts)
    for cls, start, end in zip(classes, starts, [*starts[1:], len(out)]):
        section = out[start:end]
        for f in dataclasses.fields(cls):
            if f.init:
                assert f"--{f.name}" in section, (cls.__name__, f.name)
    learning_rate = " ".join(out.split("--learning_rate", 1)[1].split("\n  --", 1)[0].split())
    assert learning_rate.endswith("The initial learning rate for the optimizer. (default: 5e-05)")
    assert "Keep only the first N training rows" in out  # a help text of our own
    assert "--early_stopping_patience" in out and "--label_column" in out


def test_sweep_recipe_help_lists_its_own_and_the_recipe_flags(capsys):
    assert cli.main(["sweep", "lyrics", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--n_trials" in out and "--learning_rate_range" in out
    assert "task arguments (LyricsArguments)" in out and "--block_size" in out and "--learning_rate " in out


def test_misspelled_recipe_flag_names_the_closest_one(tmp_path, capsys):
    output_dir = tmp_path / "run"
    assert cli.main(["train", "sentiment", "--learning_rat", "1e-4", "--output_dir", str(output_dir)]) == 2
    assert capsys.readouterr().err == ("error: unknown argument '--learning_rat' (did you mean "
                                       "'--learning_rate'?)\n")
    assert not output_dir.exists()


def test_misspelled_flag_without_a_close_one_keeps_the_plain_message(capsys):
    assert cli.main(["train", "sentiment", "--zzzz", "1"]) == 2
    assert capsys.readouterr().err == "error: unknown argument '--zzzz'\n"


def test_train_and_sweep_without_a_recipe_or_trials_are_one_line_errors(capsys):
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err == "error: hf-recipes train: give a recipe (one of sentiment, lyrics, instruct)\n"
    assert cli.main(["sweep", "sentiment"]) == 2
    assert capsys.readouterr().err == "error: hf-recipes sweep: the following arguments are required: --n_trials\n"


@pytest.mark.parametrize("argv", [["train", "sentiment", "--help"], ["sweep", "lyrics", "--help"],
                                  ["train", "instruct", "--learning_rat", "1e-4", "--output_dir", "x"]])
def test_recipe_help_and_flag_errors_come_from_the_index_without_deep_learning_imports(argv, capsys, monkeypatch,
                                                                                       tmp_path):
    fresh = run_fresh(*argv)
    assert fresh.stdout.splitlines()[-1] == "heavy imports: none", fresh.stderr
    # The same command with no index to read: the full parser answers, identically.
    monkeypatch.setattr(flag_index, "INDEX", tmp_path / "flag_index.json")
    slow = cli.main(argv)
    captured = capsys.readouterr()
    assert fresh.returncode == slow
    assert "\n".join(fresh.stdout.splitlines()[:-1]).rstrip("\n") == captured.out.rstrip("\n")
    assert fresh.stderr == captured.err


def test_the_flag_index_matches_the_code():
    """If this fails after an argument changed: python -m hf_recipes.flag_index"""
    assert json.loads(flag_index.INDEX.read_text()) == flag_index.build()
