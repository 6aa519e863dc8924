"""The YAML file of a run's settings, read without any deep-learning import (help and print-config use it too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from hf_recipes.errors import RecipeError, one_line
from hf_recipes.files import check_regular_file

# Keys holding secrets: read from the command line or a config, never written to any file, log or report.
SECRET_KEYS = {"token", "hub_token"}

# Keys holding paths: a relative path in a YAML file is looked up next to the YAML file when it does not exist
# from the current directory, so shipped configs work from any working directory.
PATH_KEYS = {
    "model_name_or_path", "config_name", "tokenizer_name", "train_file", "validation_file", "test_file",
    "forgetting_eval_file",
}


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    check_regular_file(path, "config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RecipeError(f"config file {path} is not valid YAML: {one_line(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"config file {path} must hold a mapping of key: value, not {type(data).__name__}")
    base = path.parent
    for key in PATH_KEYS & data.keys():
        value = data[key]
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            if (base / value).exists():
                data[key] = str((base / value).resolve())
    return data
