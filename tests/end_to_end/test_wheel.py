"""The package as users get it: a wheel built from a clean copy of the tree, installed alone into a fresh venv, runs
every recipe's demo from an empty folder, offline. ``make wheel-check`` runs this file."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from hf_recipes import recipes
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run(command: list, **kwargs) -> str:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def tree_files() -> list[str]:
    """What a clone of this tree holds: the tracked files and the new ones git does not ignore."""
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout")
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    return sorted(name for name in listed.split("\0") if name and (REPO / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built offline from a copy, so the build leaves nothing in the checkout."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in tree_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist,
         source])
    (built,) = dist.glob("hf_recipes-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_every_file_of_the_package_and_nothing_else(wheel):
    """Recipes, their YAMLs and demo YAMLs, the samples and tokenizer, metric modules, flag_index.json."""
    names = zipfile.ZipFile(wheel).namelist()
    metadata = [name for name in names if name.split("/")[0].endswith(".dist-info")]
    assert sorted(set(names) - set(metadata)) == [name for name in tree_files() if name.startswith("hf_recipes/")]
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in metadata if n.endswith("/entry_points.txt"))).decode()
    for name in recipes.BUILT_IN:
        assert f"{name} = hf_recipes.recipes.{name}:RECIPE" in entry_points


@pytest.mark.slow
def test_the_installed_wheel_runs_every_demo_from_an_empty_folder(wheel, tmp_path):
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # The dependencies are this environment's: a path line in a .pth file adds its site-packages but runs none of
    # the .pth files there, so the editable install of the checkout stays out and hf_recipes can come from the wheel
    # only.
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])
    run([python, "-m", "pip", "check"])  # the wheel's requirements are met

    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    imported = run([python, "-c", "import hf_recipes; print(hf_recipes.__file__)"], cwd=empty, env=env)
    assert Path(imported.strip()).is_relative_to(site / "hf_recipes")
    printed = run([venv / "bin" / "hf-recipes", "demo", "--max_steps=2"], cwd=empty, env=env)

    assert os.listdir(empty) == ["runs"]
    for name in recipes.BUILT_IN:
        run_dir = empty / "runs" / "demo" / name
        assert json.loads((run_dir / "recipe.json").read_text())["recipe"] == name
        assert (run_dir / "report.md").is_file()
        assert f"[{name}] report: runs/demo/{name}/report.md" in printed
