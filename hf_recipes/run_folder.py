"""Inference from a saved run: classification now, generation for the causal-LM recipes.

Every verb that reads a saved model goes through :func:`open_model_dir`, which checks the folder before anything
is loaded: safetensors weights, readable config and recipe.json, the kind of model the verb needs, and no custom
code unless ``trust_remote_code`` is given (transformers would otherwise ask on the terminal, and run it on "y").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hf_recipes.errors import RecipeError, one_line

RECIPE_FILE = "recipe.json"  # which recipe made a run; written last, so it also marks a finished run
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA run's output_dir holds its adapter (see adapters.py)
ADAPTER_MODEL_CONFIG = "model_config.json"  # and, not as config.json, the config of the model it fine-tuned
CLASSIFIER, CAUSAL_LM = "classifier", "causal LM"
# Files transformers (or load_saved_adapter) reads an ``auto_map`` (custom code) from.
CODE_MAPS = ("config.json", ADAPTER_MODEL_CONFIG, "tokenizer_config.json", "processor_config.json",
             "preprocessor_config.json")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or one error line naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RecipeError(f"cannot read {what} {path}: {one_line(err)}"
                          ) from None
    if not isinstance(data, dict):
        raise RecipeError(f"cannot read {what} {path}: it holds {type(data).__name__}, not a JSON object")
    return data


def load_recipe_file(model_dir: str | Path) -> dict:
    """``{"recipe": name, "task": {...}}`` of a finished run; ``{"recipe": None, "task": {}}`` for other folders."""
    path = Path(model_dir) / RECIPE_FILE
    if not path.is_file():
        return {"recipe": None, "task": {}}
    saved = read_json(path, "run file")
    if not isinstance(saved.get("task", {}), dict):
        raise RecipeError(f"cannot read run file {path}: 'task' is not a JSON object")
    return {"recipe": saved.get("recipe"), "task": saved.get("task") or {}}


def refuse_custom_code(folder: Path, trust_remote_code: bool) -> None:
    """A folder whose configs map to its own Python code (``auto_map``) is refused unless trust_remote_code."""
    if trust_remote_code:
        return
    for name in CODE_MAPS:
        path = folder / name
        if path.is_file() and "auto_map" in read_json(path, "model file"):
            raise RecipeError(
                f"{folder} ships its own Python code ({name} has auto_map), which is never run unless you pass "
                "--trust_remote_code true (read the code first)"
            )


def model_kind(config: dict) -> str | None:
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return CLASSIFIER
    if any(a in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for a in architectures):
        return CAUSAL_LM
    return None


def model_config_file(folder: Path) -> Path:
    """The config of the model a folder holds: a LoRA run's ``model_config.json``, else ``config.json`` (a full
    model, or an adapter folder that keeps its model's config there)."""
    adapter_model = folder / ADAPTER_MODEL_CONFIG
    return adapter_model if adapter_model.is_file() and (folder / ADAPTER_CONFIG).is_file() else folder / "config.json"


def open_model_dir(model_dir: str | Path, kind: str, trust_remote_code: bool = False) -> Path:
    """Check a saved model folder for a verb that needs a model of ``kind``; return its path."""
    path = Path(model_dir)
    if not str(model_dir).strip() or not path.is_dir():
        raise RecipeError(f"model_dir not found: {path}")
    config = model_config_file(path)
    if not config.is_file():
        raise RecipeError(f"model_dir {path} has no config.json (is it a finished run's output_dir?)")
    refuse_custom_code(path, trust_remote_code)
    if not any(path.glob("*.safetensors")):
        raise RecipeError(f"model_dir {path} holds no safetensors weights (is it a finished run's output_dir?)")
    recipe = load_recipe_file(path)["recipe"]
    found = model_kind(read_json(config, "model config"))
    if found is not None and found != kind:
        made_by = f"a {recipe} run" if recipe else f"a {found}"
        verb = "hf-recipes generate" if found == CAUSAL_LM else "hf-recipes predict"
        raise RecipeError(f"model_dir {path} holds {made_by} ({found}), not a {kind}: use `{verb}` with it")
    return path


def device() -> int | str:
    return 0 if torch.cuda.is_available() else "cpu"


def classify(model_dir: str | Path, texts: Sequence[str], batch_size: int = 32,
             trust_remote_code: bool = False) -> list[dict]:
    """``[{"text", "label", "score"}]`` for each text, the score being the predicted label's probability."""
    if batch_size is None or batch_size < 1:
        raise RecipeError(f"batch_size must be a positive number, got {batch_size}")
    path = open_model_dir(model_dir, CLASSIFIER, trust_remote_code)
    texts = list(texts)
    if not texts:
        raise RecipeError("no texts to classify")
    from hf_recipes.adapters import load_trained

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = load_trained(path, AutoModelForSequenceClassification, trust_remote_code)
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device())
    results = classifier(texts, batch_size=batch_size, truncation=True)
    return [{"text": t, "label": r["label"], "score": float(r["score"])} for t, r in zip(texts, results)]
