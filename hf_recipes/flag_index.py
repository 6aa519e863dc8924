"""Each built-in recipe's flags and ``--help`` text, written ahead of time, so ``hf-recipes train RECIPE --help`` and
a misspelled flag answer without importing torch and transformers (which takes most of a minute on a small CPU).

The index is used only when it was written with the installed transformers (whose TrainingArguments make most of
the flags); ``tests/test_cli.py`` checks it against the code. After changing an argument, write it again:

    python -m hf_recipes.flag_index
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files

from hf_recipes.aliases import ALIASES, suggest
from hf_recipes.errors import RecipeError

INDEX = files("hf_recipes") / "flag_index.json"


def build() -> dict:
    """The index, from the code (imports every built-in recipe, so transformers too)."""
    import transformers

    from hf_recipes import recipes

    return {"transformers": transformers.__version__,
            "recipes": {name: entry(recipes.get(name)) for name in recipes.BUILT_IN}}


def entry(recipe) -> dict:
    """What the index holds for a recipe: every flag it takes, and the ones its help shows (:func:`recipe_fields`)."""
    from hf_recipes.config import recipe_fields, recipe_flags

    return {"flags": recipe_flags(recipe.task_args_class),
            "fields": recipe_fields(recipe.task_args_class, recipe.unused_flags)}


def lookup(recipe: str) -> dict | None:
    """``{"flags": [...], "fields": [...]}`` of a built-in recipe, or None when the index does not apply."""
    from hf_recipes import recipes

    if recipes.registered().get(recipe) != recipes.BUILT_IN.get(recipe) or not INDEX.is_file():
        return None
    index = json.loads(INDEX.read_text(encoding="utf-8"))
    try:
        written_for = version("transformers") == index["transformers"]
    except PackageNotFoundError:
        written_for = False
    return index["recipes"].get(recipe) if written_for else None


def check_flags(argv: list[str], flags: list[str]) -> None:
    """The error the full parser would give for the first unknown ``--flag`` of ``argv``, without the parser."""
    names = set(flags) | {f"--{alias}" for alias in ALIASES}  # whether an alias applies, the full parser says
    for token in argv:
        flag = token.split("=", 1)[0]
        if token.startswith("--") and flag not in names:
            raise RecipeError(f"unknown argument '{flag}'{suggest(flag, flags)}")


if __name__ == "__main__":
    INDEX.write_text(json.dumps(build(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {INDEX}")
