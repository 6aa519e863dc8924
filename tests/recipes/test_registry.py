"""Recipes are found through the ``hf_recipes.recipes`` entry-point group and live under the package's own name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_recipes import cli, recipes
from tests.conftest import cli_args, REPO, SAMPLES

ECHO_RECIPE = '''
from pathlib import Path

from hf_recipes.recipes.sentiment import SentimentRecipe


class EchoRecipe(SentimentRecipe):
    """A fourth recipe, defined outside hf-recipes: sentiment under another name."""

    name = "echo"
    title = "Echo classification"
    default_config = Path(__file__).parent / "echo.yaml"


RECIPE = EchoRecipe()
'''


def install_echo_package(folder: Path) -> None:
    """A package on sys.path with its own metadata, as pip would leave it, registering the recipe 'echo'."""
    package = folder / "echo_recipes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "echo.py").write_text(ECHO_RECIPE)
    (package / "echo.yaml").write_text(f"train_file: {SAMPLES / 'sentiment' / 'train.csv'}\nlabel_column: sentiment\n")
    metadata = folder / "echo_recipes-0.1.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-recipes\nVersion: 0.1\n")
    (metadata / "entry_points.txt").write_text("[hf_recipes.recipes]\necho = echo_recipes.echo:RECIPE\n")


@pytest.mark.slow
def test_a_recipe_from_another_package_is_listed_and_trains(tmp_path, monkeypatch, capsys, tiny_model_args):
    install_echo_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert recipes.available() == ["sentiment", "lyrics", "instruct", "echo"]
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-1] == f"echo\t{tmp_path / 'echo_recipes' / 'echo.yaml'}"
    run = {**tiny_model_args, "max_steps": 1}
    assert cli.main(["train", "echo", *cli_args(run)]) == 0
    assert '"recipe": "echo"' in (Path(run["output_dir"]) / "recipe.json").read_text()


def test_a_project_with_its_own_recipes_package_does_not_shadow_ours(tmp_path):
    """A user's project (the working directory) with a `recipes` package of its own."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "__init__.py").write_text("CAKES = ['lemon']\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    listed = subprocess.run([sys.executable, "-m", "hf_recipes", "list"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["sentiment", "lyrics", "instruct"]
    both = subprocess.run([sys.executable, "-c", "import recipes; from hf_recipes.recipes import BUILT_IN; "
                           "print(recipes.CAKES, sorted(BUILT_IN))"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert both.stdout.strip() == "['lemon'] ['instruct', 'lyrics', 'sentiment']", both.stderr


def test_an_unknown_recipe_gets_a_suggestion(capsys):
    assert cli.main(["train", "lyric"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown recipe 'lyric' (did you mean 'lyrics'?) (available: sentiment, lyrics, instruct)")


@pytest.mark.slow
def test_the_readme_python_example_finds_its_config_from_any_directory(tmp_path):
    code = ("from hf_recipes.recipes import sentiment\n"
            f"trainer, prepared = sentiment.build_trainer(sentiment.demo_config, output_dir={str(tmp_path / 'run')!r})\n"
            "print(len(prepared.datasets['train']) > 0)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
