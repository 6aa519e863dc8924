"""The recipes: one module per task, its YAML config beside it and a demo config in ``demo/``.

They are the package ``hf_recipes.recipes`` (``from hf_recipes.recipes import sentiment``), so they cannot
collide with another project's ``recipes``. Recipes register in the entry-point group
``hf_recipes.recipes`` (``NAME = "module:RECIPE"``): a recipe in another package shows in ``hf-recipes list`` and
runs with ``hf-recipes train NAME`` with no edit here; its configs sit beside its module (``NAME.yaml``,
``demo/NAME.yaml``). Listing reads no recipe module, so it stays quick.
"""

import importlib
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

from hf_recipes.errors import RecipeError, did_you_mean

ENTRY_POINT_GROUP = "hf_recipes.recipes"
# Registered in pyproject.toml too; listed here so a source tree that was never installed has them.
BUILT_IN = {name: f"{__name__}.{name}:RECIPE" for name in ("sentiment", "lyrics", "instruct")}


def registered() -> dict[str, str]:
    """Recipe name -> "module:attribute", built-in ones first."""
    found = dict(BUILT_IN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def available() -> list[str]:
    return list(registered())


def get(name: str):
    """The Recipe object of ``name``."""
    recipes = registered()
    if name not in recipes:
        raise RecipeError(f"unknown recipe '{name}'{did_you_mean(name, recipes)} (available: {', '.join(recipes)})")
    module, _, attribute = recipes[name].partition(":")
    return getattr(importlib.import_module(module), attribute or "RECIPE")


def config_dir(name: str) -> Path:
    """The folder of the recipe's module, which holds its configs (found without importing the module)."""
    if name not in registered():
        get(name)  # the error naming the recipes there are
    spec = find_spec(registered()[name].partition(":")[0])
    return Path(spec.origin).parent


def default_config(name: str) -> Path:
    return config_dir(name) / f"{name}.yaml"


def demo_config(name: str) -> Path:
    return config_dir(name) / "demo" / f"{name}.yaml"
