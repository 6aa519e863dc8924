"""hf-recipes: Hugging Face Trainer recipes for fine-tuning GPT-2-class models."""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

from hf_recipes.errors import RecipeError  # noqa: E402

__all__ = ["RecipeError", "__version__"]


class _SourceTreeRecipes(importlib.abc.MetaPathFinder):
    """In a source checkout the recipes live in the top-level ``recipes/`` folder; installed (pyproject's
    package-dir), that folder is ``hf_recipes/recipes``. This finds ``hf_recipes.recipes`` in the checkout."""

    folder = Path(__file__).resolve().parent.parent / "recipes"

    def find_spec(self, name, path=None, target=None):
        if name != f"{__name__}.recipes":
            return None
        return importlib.util.spec_from_file_location(name, self.folder / "__init__.py",
                                                      submodule_search_locations=[str(self.folder)])


if not (Path(__file__).parent / "recipes").is_dir() and (_SourceTreeRecipes.folder / "__init__.py").is_file():
    sys.meta_path.insert(0, _SourceTreeRecipes())  # ahead of an editable install of another checkout
