"""The recipes: one module per task, each with its YAML config(s) beside it."""

import importlib
from pathlib import Path

from hf_recipes.errors import RecipeError

RECIPE_MODULES = {"sentiment": "recipes.sentiment", "lyrics": "recipes.lyrics", "instruct": "recipes.instruct"}
CONFIG_DIR = Path(__file__).parent


def available() -> list[str]:
    return [name for name in RECIPE_MODULES if (CONFIG_DIR / f"{name}.yaml").exists()]


def get(name: str):
    """The Recipe object of ``name``."""
    if name not in available():
        raise RecipeError(f"unknown recipe '{name}' (available: {', '.join(available())})")
    return importlib.import_module(RECIPE_MODULES[name]).RECIPE


def demo_config(name: str) -> Path:
    return CONFIG_DIR / "demo" / f"{name}.yaml"
