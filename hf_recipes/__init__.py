"""hf-recipes: Hugging Face Trainer recipes for fine-tuning GPT-2-class models."""

__version__ = "0.1.0"

from hf_recipes.errors import RecipeError  # noqa: E402

__all__ = ["RecipeError", "__version__"]
