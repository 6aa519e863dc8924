"""``hf-recipes train RECIPE --help``: the recipe's own flags, each once, grouped, with the defaults a run actually
gets (the YAML file over the dataclass defaults), and the most used TrainingArguments; ``--help-all`` adds every
TrainingArguments flag and the full help texts. Rendered from the flag index without any deep-learning import.
"""

from __future__ import annotations

import enum
import json
import re
import textwrap
from typing import Any

from hf_recipes.aliases import resolve
from hf_recipes.config_file import SECRET_KEYS
from hf_recipes.errors import RecipeError

# The TrainingArguments shown by --help, in this order (and any other the YAML file sets).
COMMON_TRAINING = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "optim",
    "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit", "load_best_model_at_end",
    "metric_for_best_model", "logging_steps", "seed", "bf16", "fp16", "activation_checkpointing", "use_cpu",
    "report_to", "push_to_hub", "resume_from_checkpoint",
)
WIDTH = 100
HEAD = 38  # the column where the one-line help starts


def shown(value: Any, name: str = "") -> str:
    """A setting as it would be typed after its flag: true/false, 5e-05, a list space-separated, unset for None;
    a secret only as (set)."""
    if value is None or value == "":
        return "unset"
    if name in SECRET_KEYS:
        return "(set)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return shown(value.value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return " ".join(shown(item) for item in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value)
    text = str(value)
    return json.dumps(text)[1:-1] if any(c in text for c in "\n\t\r") else text


def summary(text: str) -> str:
    """The first sentence of a help text."""
    text = " ".join(text.split())
    found = re.search(r"(?<!e\.g)(?<!i\.e)\. ", text)
    return text[: found.start() + 1] if found else text


def in_effect(fields: list[dict], config_values: dict[str, Any]) -> dict[str, str]:
    """Each flag's value a run without flags gets: the YAML file's (other tools' names read as ours), else the
    dataclass default (also for a null in the YAML file where the setting cannot be None)."""
    names = {f["name"] for f in fields}
    try:
        values, _, _ = resolve(config_values, (), names, {})
    except RecipeError:  # e.g. a TRL name beside ours: the run's error to report; help shows the defaults
        values = {}
    return {f["name"]: shown(values[f["name"]], f["name"])
            if f["name"] in values and (values[f["name"]] is not None or f["nullable"]) else f["default"]
            for f in fields}


def render(fields: list[dict], config_values: dict[str, Any], full: bool = False) -> str:
    """The grouped flags with the values in effect; one line each, or (``full``) every flag with its whole help."""
    values = in_effect(fields, config_values)
    lines: list[str] = []
    for group in dict.fromkeys(f["group"] for f in fields):
        members = [f for f in fields if f["group"] == group]
        if not full and members[0]["training"]:
            order = {name: i for i, name in enumerate(COMMON_TRAINING)}
            members = sorted((f for f in members if f["name"] in order or f["name"] in config_values),
                             key=lambda f: order.get(f["name"], len(order)))
        lines.append(f"{group}:")
        for f in members:
            head = f"  --{f['name']} {values[f['name']]}"
            if full:
                lines.append(head)
                lines += textwrap.wrap(f["help"], WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
                continue
            line = f"{head:<{HEAD}}  {summary(f['help'])}"
            lines.append(line if len(line) <= WIDTH else
                         line[: WIDTH - 3] + "..." if len(head) + 2 < WIDTH - 12 else head)
        lines.append("")
    return "\n".join(lines)
