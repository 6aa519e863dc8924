"""The output folder of a run: a run writes only into a folder that is new, empty, or its own, and a run that
fails before it has saved anything leaves no folder behind.

A run marks its folder with :data:`RUN_MARKER` as soon as the folder exists. A folder holding that marker, a
finished run's ``recipe.json`` or only ``checkpoint-N`` folders is ours; anything else belongs to the user and is
never written over unless ``--overwrite_output_dir true`` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from hf_recipes.errors import RecipeError
from hf_recipes.predict import ADAPTER_CONFIG, RECIPE_FILE, read_json
from hf_recipes.trainer import last_complete_checkpoint

RUN_MARKER = "hf_recipes_run.json"  # written first: this folder is an hf-recipes run (maybe unfinished)
CHECKPOINT = re.compile(r"checkpoint-\d+")


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


def check_checkpoint(checkpoint: str | os.PathLike, model) -> None:
    """A checkpoint to resume from must be a complete one of the same architecture and size as ``model``."""
    path = Path(checkpoint)
    if not (path / "trainer_state.json").is_file():
        raise RecipeError(f"resume_from_checkpoint {path} is not a complete checkpoint folder")
    if check_adapter_checkpoint(path, model):
        return
    if not (path / "config.json").is_file():
        raise RecipeError(f"resume_from_checkpoint {path} holds neither a model (config.json) nor an adapter "
                          f"({ADAPTER_CONFIG})")
    saved = read_json(path / "config.json", "checkpoint config")
    expected = model.config.to_dict()
    architecture = type(model).__name__
    if architecture not in (saved.get("architectures") or [architecture]):
        raise RecipeError(f"checkpoint {path} is of a {', '.join(saved['architectures'])}, but this run trains a "
                          f"{architecture}: resume from a checkpoint of the same recipe and model")
    if "id2label" in saved and "id2label" in expected:
        saved["num_labels"], expected["num_labels"] = len(saved["id2label"]), len(expected["id2label"])
    for key in ("model_type", "vocab_size", "num_labels", "n_embd", "hidden_size", "n_layer", "num_hidden_layers"):
        if key in saved and key in expected and saved[key] != expected[key]:
            raise RecipeError(f"checkpoint {path} has {key} {saved[key]}, but this run's model has {expected[key]}: "
                              "resume from a checkpoint of the same recipe and model")


def check_adapter_checkpoint(path: Path, model) -> bool:
    """A LoRA run resumes from a LoRA checkpoint of the same task, rank and targets, and a full fine-tuning run from a
    full-model one. True when both are adapters (and match)."""
    from hf_recipes.adapters import adapted_module_names, is_adapter, saved_adapter

    saved = saved_adapter(path)
    if saved is None and not is_adapter(model):
        return False
    if saved is None:
        raise RecipeError(f"checkpoint {path} holds a full model, but this run trains a LoRA adapter (use_peft): "
                          "resume it without --use_peft, or resume from a checkpoint of a LoRA run")
    if not is_adapter(model):
        raise RecipeError(f"checkpoint {path} holds a LoRA adapter, but this run trains the full model: resume it "
                          "with --use_peft true and the same LoRA settings, or from a full-model checkpoint")
    config = model.peft_config[model.active_adapter]
    expected = {"task_type": getattr(config.task_type, "value", config.task_type), "r": config.r,
                "target_modules": sorted(adapted_module_names(model))}
    found = {**saved, "target_modules": sorted({name.rsplit(".", 1)[-1] for name in saved.get("target_modules") or []})}
    for key, value in expected.items():
        if key in found and found[key] != value:
            raise RecipeError(f"checkpoint {path} has an adapter with {key} {found[key]}, but this run's adapter has "
                              f"{value}: resume with the same recipe and LoRA settings")
    return True
