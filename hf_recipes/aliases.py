"""Other tools' names for our settings: TRL's (``max_length``, ``packing``, ``completion_only_loss``...) are taken,
in YAML and on the command line, and said in one log line; LLaMA-Factory's and axolotl's are named in the error of
an unknown flag. No deep-learning import here: flag errors answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from hf_recipes.errors import RecipeError, did_you_mean

TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


@dataclass(frozen=True)
class Alias:
    targets: tuple[str, ...]  # our settings it may stand for: the first one the recipe has
    tool: str = "TRL"
    negated: bool = False  # a boolean meaning the opposite of its target


ALIASES = {
    "max_length": Alias(("block_size", "max_seq_length")),  # lyrics packs songs into blocks of max_length
    "packing": Alias(("padding_free",)),
    "completion_only_loss": Alias(("train_on_inputs",), negated=True),
    "assistant_only_loss": Alias(("train_on_inputs",), negated=True),
    "dataset_text_field": Alias(("text_column",)),
    "dataset_config": Alias(("dataset_config_name",)),
    "dataset_num_proc": Alias(("preprocessing_num_workers",)),
    "lora_rank": Alias(("lora_r",), tool="LLaMA-Factory"),
}

# Names of other trainers that differ in meaning or unit from ours: suggested in errors, never taken silently.
SUGGESTED = {
    "cutoff_len": Alias(("block_size", "max_seq_length"), tool="LLaMA-Factory"),
    "lora_target": Alias(("lora_target_modules",), tool="LLaMA-Factory"),
    "sequence_len": Alias(("block_size", "max_seq_length"), tool="axolotl"),
    "micro_batch_size": Alias(("per_device_train_batch_size",), tool="axolotl"),
    "eval_batch_size": Alias(("per_device_eval_batch_size",), tool="axolotl"),
    "num_epochs": Alias(("num_train_epochs",), tool="axolotl"),
    "val_set_size": Alias(("validation_split_percentage",), tool="axolotl"),
}


def target(alias: Alias, fields: Iterable[str]) -> str | None:
    return next((name for name in alias.targets if name in set(fields)), None)


def suggest(name: str, known: Sequence[str]) -> str:
    """" (...)" for an unknown setting: what another tool's name is called here, else the closest known name
    (ours or an alias). ``name`` and ``known`` both with or both without the leading ``--``."""
    dashes = "--" if name.startswith("--") else ""
    bare = name.removeprefix("--")
    ours = [k.removeprefix("--") for k in known]
    found = SUGGESTED.get(bare)
    if found and target(found, ours):
        return f" ({found.tool}'s {bare} is {dashes}{target(found, ours)} here)"
    return did_you_mean(name, [*known, *(f"{dashes}{a}" for a in ALIASES)])


def boolean_value(alias: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in TRUE | FALSE:
        return str(value).lower() in TRUE
    raise RecipeError(f"{alias} takes true or false, got '{value}'")


def resolve(values: dict[str, Any], argv: Sequence[str], fields: set[str], built_in: dict[str, str]
            ) -> tuple[dict[str, Any], list[str], list[str]]:
    """``values`` (YAML keys) and ``argv`` (flags) with every alias renamed to the recipe's own setting, and one
    note per alias used. ``built_in`` maps an alias to why the recipe always does what it asks (its true needs no
    setting; false is an error). An alias with nothing to map to is an error."""
    notes: list[str] = []

    def rename(alias_name: str, value: Any) -> tuple[str, Any] | None:
        alias = ALIASES[alias_name]
        name = target(alias, fields)
        if name is None and alias_name in built_in:
            if not boolean_value(alias_name, value):
                raise RecipeError(f"{alias_name} false cannot apply: {built_in[alias_name]}")
            notes.append(f"{alias_name}: {built_in[alias_name]}")
            return None
        if name is None:
            raise RecipeError(f"{alias_name} ({alias.tool}'s name for {' / '.join(alias.targets)}) does not apply "
                              "to this recipe")
        notes.append(f"--{alias_name} is {alias.tool}'s name for --{name}"
                     + (" with the opposite value" if alias.negated else ""))
        return name, (not boolean_value(alias_name, value)) if alias.negated else value

    renamed: dict[str, Any] = {}
    for key, value in values.items():
        if key in ALIASES and key not in fields:
            pair = rename(key, value)
            if pair and pair[0] in values:
                raise RecipeError(f"give {key} or {pair[0]}, not both")
            if pair:
                renamed[pair[0]] = pair[1]
        else:
            renamed[key] = value

    tokens: list[str] = []
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        flag, equals, inline = token.partition("=")
        name = flag.removeprefix("--")
        if not token.startswith("--") or name not in ALIASES or name in fields:
            tokens.append(token)
            continue
        value = inline if equals else rest.pop(0) if rest and not rest[0].startswith("--") else None
        if value is None and (ALIASES[name].negated or name in built_in):
            value = "true"  # a boolean flag given alone
        pair = rename(name, value)
        if pair:  # a flag given alone stays alone: a boolean is true, anything else the parser's error
            value = str(pair[1]).lower() if isinstance(pair[1], bool) else pair[1]
            tokens += [f"--{pair[0]}"] + ([] if value is None else [value])
    return renamed, tokens, notes
