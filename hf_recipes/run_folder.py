"""The run folder (output_dir) and what it holds: the run marker (written first), checkpoints, the adapter files of a
LoRA run, checks.json and recipe.json (written last, so it marks a finished run).

A run writes only into a folder that is new, empty, or its own, and a run that fails before it has saved anything
leaves no folder behind. A folder holding :data:`RUN_MARKER`, a finished run's ``recipe.json`` or only
``checkpoint-N`` folders is ours; anything else belongs to the user and is never written over unless
``--overwrite_output_dir true`` says so.

Every verb that reads a saved model goes through :func:`open_model_dir`, which checks the folder before anything
is loaded: safetensors weights, readable config and recipe.json, the kind of model the verb needs, and no custom
code unless ``trust_remote_code`` is given (transformers would otherwise ask on the terminal, and run it on "y").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path


from hf_recipes.errors import RecipeError, one_line

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"  # which recipe made a run; written last, so it also marks a finished run
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA run's output_dir holds its adapter (see adapters.py)
ADAPTER_MODEL_CONFIG = "model_config.json"  # and, not as config.json, the config of the model it fine-tuned
MERGED_DIR = "merged"  # output_dir/merged: the base with the adapter merged in (merge_adapter)
CHECKS_FILE = "checks.json"  # what the checks found, for scripts (the report shows the same)
RUN_MARKER = "hf_recipes_run.json"  # written first: this folder is an hf-recipes run (maybe unfinished)
CHECKPOINT = re.compile(r"checkpoint-\d+")
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
    return {**saved, "recipe": saved.get("recipe"), "task": saved.get("task") or {}}


def write_recipe_file(folder: Path, finished: dict) -> None:
    """recipe.json: the recipe, its model kind, task settings and prompt format; it marks the run finished."""
    (Path(folder) / RECIPE_FILE).write_text(json.dumps(finished, indent=1) + "\n")


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
    """The kind of model a config's architectures name, for a folder whose recipe.json does not say."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # slow to import

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
    saved = load_recipe_file(path)
    recipe = saved["recipe"]
    found = saved.get("model_kind") or model_kind(read_json(config, "model config"))
    if found is not None and found != kind:
        made_by = f"a {recipe} run" if recipe else f"a {found}"
        verb = "hf-recipes generate" if found == CAUSAL_LM else "hf-recipes predict"
        raise RecipeError(f"model_dir {path} holds {made_by} ({found}), not a {kind}: use `{verb}` with it")
    return path


def recipe_of(folder: Path) -> str | None:
    """The recipe that wrote ``folder`` (finished or not), or None when no run of ours did."""
    for name in (RECIPE_FILE, RUN_MARKER):
        if (folder / name).is_file():
            return read_json(folder / name, "run file").get("recipe")
    return None


def check_output_dir(output_dir: str | os.PathLike, recipe: str, overwrite: bool) -> None:
    """Refuse, in one line, an output_dir this run must not or cannot write to. Writes nothing."""
    folder = Path(output_dir)
    check_creatable(folder)
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"output_dir {folder} cannot be written: permission denied on {existing}")
    if not folder.is_dir():
        return
    owner = recipe_of(folder)
    if owner is not None:
        if owner != recipe and not overwrite:
            raise RecipeError(f"output_dir {folder} holds a {owner} run, not a {recipe} one; choose another "
                              "--output_dir (or pass --overwrite_output_dir true to start afresh there)")
        if (folder / RECIPE_FILE).is_file() and not overwrite:
            raise RecipeError(f"output_dir {folder} already holds a finished run; pass --overwrite_output_dir true "
                              "or choose another --output_dir")
        return
    foreign = sorted(p.name for p in folder.iterdir() if not (p.is_dir() and CHECKPOINT.fullmatch(p.name)))
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RecipeError(f"output_dir {folder} holds files no hf-recipes run wrote ({shown}); choose a new or empty "
                          "--output_dir, or pass --overwrite_output_dir true to write over them")


def check_creatable(folder: Path) -> None:
    """output_dir (or a folder above it) is no file and no broken symbolic link, which mkdir would fail on."""
    for path in [folder, *folder.parents]:
        if path.is_symlink() and not path.exists():
            raise RecipeError(f"output_dir {folder} cannot be created: {path} is a broken symbolic link (to "
                              f"{os.readlink(path)}); remove it or choose another --output_dir")
        if path.exists() and not path.is_dir():
            raise RecipeError(f"output_dir {folder} cannot be created: {path} is a file; choose another --output_dir")


def mark_output_dir(output_dir: str | os.PathLike, recipe: str) -> None:
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / RUN_MARKER).exists():
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        (folder / RUN_MARKER).write_text(json.dumps({"recipe": recipe, "started": started}) + "\n")


@contextlib.contextmanager
def removed_on_failure(output_dir: str | os.PathLike, is_main_process: bool = True):
    """On any failure or interruption, remove the folders this run created if nothing worth keeping (a saved
    model or a complete checkpoint to resume from) is in them; an existing folder is never removed."""
    folder = Path(output_dir).absolute()
    created = next((p for p in [*reversed(folder.parents), folder] if not p.exists()), None)
    try:
        yield
    except BaseException:
        if created is not None and is_main_process and folder.is_dir() and not worth_keeping(folder):
            shutil.rmtree(created, ignore_errors=True)
        raise


def worth_keeping(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or last_complete_checkpoint(folder) is not None


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a checkpoint was saved at (its trainer_state.json, which check_checkpoint requires)."""
    return int(read_json(Path(checkpoint) / "trainer_state.json", "checkpoint state")["global_step"])


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that was written to the end, or None.

    Trainer writes a checkpoint's ``trainer_state.json`` last, after weights, optimizer and RNG states, so a
    checkpoint whose state file is missing, truncated or names another step was interrupted and is skipped.
    """
    folder = Path(output_dir)
    steps = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit()) if folder.is_dir() else []
    for step, path in reversed(steps):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("global_step") == step and any(path.glob("*.safetensors")):
            return str(path)
        logger.warning("Skipping incomplete checkpoint %s", path)
    return None


def saved_adapter(model_dir: Path) -> dict | None:
    """``adapter_config.json`` of a saved run, or None when the folder holds a full model."""
    path = Path(model_dir) / ADAPTER_CONFIG
    return read_json(path, "adapter config") if path.is_file() else None
