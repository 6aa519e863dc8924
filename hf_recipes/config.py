"""Typed arguments for every recipe, read from a YAML file with command-line flags on top.

The dataclasses use the argument names of the official transformers examples (``run_clm.py``,
``run_glue.py``) so a user can move between those scripts and these recipes without relearning anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import string
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool

from hf_recipes import aliases
from hf_recipes.config_file import PATH_KEYS, SECRET_KEYS, load_yaml  # noqa: F401 - re-exported
from hf_recipes.errors import RecipeError, did_you_mean, one_line


def empty_means_unset(arguments) -> None:
    """``--model_name_or_path ""`` on the command line unsets a value the YAML file set."""
    for f in dataclasses.fields(arguments):
        if getattr(arguments, f.name) == "" and f.default is None:
            setattr(arguments, f.name, None)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of a pretrained model. Leave unset to train from scratch with model_type."},
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Architecture to build from scratch when model_name_or_path is unset (e.g. gpt2)."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Overrides for a from-scratch config, e.g. 'n_layer=2,n_embd=128,n_head=2'."},
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data are cached."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model on the hub."})
    token: str | None = field(
        default=None, metadata={"help": "Hugging Face token for private models (never written to any output)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from the hub. Off by default."})
    attn_implementation: str | None = field(
        default="sdpa", metadata={"help": "Attention kernel: sdpa (default), eager, flash_attention_2."}
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of the weights during training. float32 (default): fp32 master weights and optimizer "
            "state whatever the checkpoint's dtype, with bf16/fp16 compute from mixed_precision. bfloat16, float16 "
            "or auto (the checkpoint's dtype): pure low-precision training, weights and optimizer state included.",
            "choices": ["float32", "bfloat16", "float16", "auto"],
        },
    )
    # Not a flag: how from_pretrained quantizes the base, set from PeftArguments.load_in_4bit (QLoRA).
    quantization_config: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        empty_means_unset(self)
        if self.config_overrides and self.model_name_or_path:
            raise RecipeError("config_overrides only applies to a model built from scratch: unset model_name_or_path")


@dataclass
class PeftArguments:
    """LoRA / QLoRA fine-tuning with PEFT (the names of TRL's ModelConfig)."""

    use_peft: bool = field(
        default=False, metadata={"help": "Train a LoRA adapter instead of every weight (the base stays frozen)."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling: the update is scaled by lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path, in [0, 1)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names that get LoRA (e.g. c_attn c_proj). Default: every linear layer of the model "
                          "except its output head (PEFT's all-linear)."},
    )
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Modules trained in full and saved with the adapter (a classifier's head always is)."},
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Also write output_dir/merged/: the base model with the adapter merged in, a plain "
                          "transformers model."},
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the frozen base in 4 bits (bitsandbytes; needs a CUDA GPU)."}
    )
    bnb_4bit_quant_type: str = field(
        default="nf4", metadata={"help": "4-bit quantization type.", "choices": ["nf4", "fp4"]}
    )

    def __post_init__(self):
        empty_means_unset(self)
        if self.lora_r < 1:
            raise RecipeError(f"lora_r must be 1 or more, got {self.lora_r}")
        if not self.lora_alpha > 0:
            raise RecipeError(f"lora_alpha must be positive (the update is scaled by lora_alpha / lora_r), got "
                              f"{self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:  # also catches NaN
            raise RecipeError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.load_in_4bit and not self.use_peft:
            raise RecipeError("load_in_4bit (QLoRA) trains a LoRA adapter on the quantized base: add --use_peft true")
        if not self.use_peft:
            changed = [f.name for f in dataclasses.fields(self)
                       if f.name != "use_peft" and getattr(self, f.name) != f.default]
            if changed:
                verb = "apply" if len(changed) > 1 else "applies"
                raise RecipeError(f"{', '.join(changed)} only {verb} with --use_peft true (LoRA): add it, or leave "
                                  f"{'them' if len(changed) > 1 else 'it'} out")


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the hub dataset."})
    train_file: str | None = field(default=None, metadata={"help": "csv / json / jsonl / parquet / txt file or URL."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation file; carved from train if unset."})
    test_file: str | None = field(default=None, metadata={"help": "Test file, used only for the final report."})
    text_column: str = field(default="text", metadata={"help": "Column holding the input text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label (classification)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test rows."})
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Truncate inputs to this many tokens (default: the model's context)."}
    )
    validation_split_percentage: float = field(
        default=5, metadata={"help": "Percent of train carved out as validation when there is no validation split."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of reusing the cache."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Lyrics and instruct: read train as a stream, tokenized (lyrics: packed) as training goes "
                          "(for corpora too large to prepare whole; needs max_steps). Validation and test are their "
                          "first max_eval_samples / max_test_samples rows (1,000 by default), taken from the head of train "
                          "when not given; leakage is screened on the first 10,000 train rows."},
    )

    def __post_init__(self):
        empty_means_unset(self)
        if not 0 < self.validation_split_percentage < 100:
            raise RecipeError(
                f"validation_split_percentage must be between 0 and 100, got {self.validation_split_percentage}"
            )
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples", "max_seq_length"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise RecipeError(f"{name} must be a positive number, got {value}")
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 0:
            raise RecipeError(f"preprocessing_num_workers must be 0 or more (0 or unset: tokenize in this process), "
                              f"got {self.preprocessing_num_workers}")


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into an output_dir that already holds a finished run."}
    )
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto: bf16 on GPUs that have it (fp16 on older ones), bf16 on CPUs with AMX, "
            "fp32 otherwise. measure: as auto, but a CPU times a matmul in fp32 and bf16 once (about a second) "
            "and takes bf16 only when it is 1.2x faster. Explicit --bf16/--fp16 always win.",
            "choices": ["auto", "measure", "no", "bf16", "fp16"],
        },
    )
    report: bool = field(default=True, metadata={"help": "Write report.md with plots at the end of a run."})
    fused_lm_loss: bool = field(
        default=True,
        metadata={
            "help": "Causal LMs trained in fp32: compute the output head's cross-entropy chunk by chunk with its "
            "gradients, never holding the whole [tokens x vocab] logits (faster, far less memory). Used where it "
            "reproduces the model's own loss on a tiny batch at the start, for training and evaluation; bf16/fp16, "
            "FSDP, DeepSpeed and torch_compile keep the model's own loss."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop training after this many evaluations without improvement of metric_for_best_model "
                          "(needs load_best_model_at_end and an eval_strategy). Off when unset."},
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={"help": "How much metric_for_best_model must improve to count as an improvement (early stopping)."},
    )
    license: str | None = field(
        default=None,
        metadata={"help": "The model card's license, a hub license id (e.g. apache-2.0, mit, other). Default: the "
                          "license in the base model's card when it names one."},
    )
    language: list[str] = field(
        default_factory=lambda: ["en"],
        metadata={"help": "The model card's language(s) of the text, ISO 639-1 codes."},
    )

    def __post_init__(self):
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise RecipeError(f"early_stopping_patience must be 1 or more, got {self.early_stopping_patience}")
        if not self.early_stopping_threshold >= 0:  # also catches NaN
            raise RecipeError(f"early_stopping_threshold must be 0 or more, got {self.early_stopping_threshold}")
        # The hub reads these from the model card's metadata: a typo would be kept there, unnoticed
        if self.license is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", self.license):
            raise RecipeError(f"license must be a hub license id (e.g. apache-2.0, mit, cc-by-4.0, other), got "
                              f"'{self.license}'")
        for code in self.language:
            if not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]+)*", code):
                raise RecipeError(f"language must be ISO 639 codes (e.g. en, fr, zh), got '{code}'")


def check_template(template: str, option: str, fields: set[str]) -> None:
    """A ``str.format`` template must name exactly ``fields``; anything else is a one-line error naming ``option``."""
    try:
        found = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise RecipeError(f"{option} is not a valid template: {err}") from None
    if found != fields:
        raise RecipeError(
            f"{option} must hold exactly {', '.join('{' + f + '}' for f in sorted(fields))}; found "
            f"{', '.join('{' + f + '}' for f in sorted(found)) or 'no fields'}"
        )


DEFAULT_FEW_SHOT_TEMPLATE = "Tweet: {text}\nSentiment:"


@dataclass
class CheckArguments:
    """Checks of the data and of the run, reported in report.md; the cheap ones are on by default."""

    check_leakage: bool = field(
        default=True,
        metadata={"help": "Report validation/test rows that also occur in train (exact and ignoring case and "
                          "whitespace), and repeated rows inside train."},
    )
    dedupe_splits: bool = field(
        default=False, metadata={"help": "Remove from train every row that also occurs in validation or test."}
    )
    check_fitting: bool = field(
        default=True, metadata={"help": "Judge over- and underfitting from the logged losses."}
    )
    classification_baselines: bool = field(
        default=True,
        metadata={"help": "Classification: label balance per split, majority-class and TF-IDF + logistic "
                          "regression baselines on the test split."},
    )
    forgetting_eval_file: str | None = field(
        default=None,
        metadata={"help": "Plain-text file: perplexity of the starting and the fine-tuned model on it "
                          "(catastrophic forgetting)."},
    )
    forgetting_max_tokens: int = field(
        default=20_000, metadata={"help": "Score at most this many tokens of forgetting_eval_file."}
    )
    few_shot_k: list[int] | None = field(
        default=None,
        metadata={"help": "Classification: few-shot baseline of the starting causal LM with these numbers of "
                          "labelled examples in the prompt, e.g. 0 4. Off when unset."},
    )
    few_shot_label_words: list[str] | None = field(
        default=None, metadata={"help": "The word scored for each label, in label order (default: the label names)."}
    )
    few_shot_template: str = field(
        default=DEFAULT_FEW_SHOT_TEMPLATE,
        metadata={"help": "Prompt for one text; its label word follows after a space."},
    )
    few_shot_max_samples: int | None = field(
        default=1_000, metadata={"help": "Score only the first N test rows few-shot (a number of rows at least the "
                                        "test split's scores them all)."}
    )
    metric_names: list[str] | None = field(
        default=None,
        metadata={"help": "More metrics to report, each an evaluate metric: a Hugging Face Hub name (e.g. f1 "
                          "matthews_correlation; needs the hub or evaluate's cache) or a local metric module. "
                          "What they score is the recipe's own: label ids, or generated answers."},
    )

    def __post_init__(self):
        empty_means_unset(self)
        if self.forgetting_max_tokens <= 1:
            raise RecipeError(f"forgetting_max_tokens must be at least 2, got {self.forgetting_max_tokens}")
        if self.few_shot_k is not None and any(k < 0 for k in self.few_shot_k):
            raise RecipeError(f"few_shot_k must hold numbers of examples (0 or more), got {self.few_shot_k}")
        if self.few_shot_max_samples is not None and self.few_shot_max_samples <= 0:
            raise RecipeError(f"few_shot_max_samples must be a positive number, got {self.few_shot_max_samples}")
        check_template(self.few_shot_template, "few_shot_template", {"text"})


class _Parser(HfArgumentParser):
    """HfArgumentParser whose errors are RecipeErrors (one line, no usage dump) and whose --help lists each
    dataclass's flags under its own heading (``group_titles``, one per dataclass)."""

    def __init__(self, dataclass_types: Sequence[type], group_titles: Sequence[str] = (), **kwargs):
        self.group_titles = dict(zip(dataclass_types, group_titles))
        super().__init__(dataclass_types, **kwargs)

    def _add_dataclass_arguments(self, dtype):
        if dtype not in self.group_titles:
            return super()._add_dataclass_arguments(dtype)
        group = self.add_argument_group(self.group_titles[dtype])
        # HfArgumentParser adds each field to `parser`; hand it the group instead of the parser itself.
        self._parse_dataclass_field = lambda parser, field: HfArgumentParser._parse_dataclass_field(group, field)
        try:
            super()._add_dataclass_arguments(dtype)
        finally:
            del self._parse_dataclass_field

    def error(self, message):
        raise RecipeError(message)


def field_names(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}


def built_in_aliases(dataclass_types: Sequence[type]) -> dict[str, str]:
    """Other tools' names for what the recipe always does (aliases.resolve), from its task arguments."""
    return {k: v for cls in dataclass_types for k, v in getattr(cls, "built_in_aliases", {}).items()}


def check_keys(values: dict[str, Any], dataclass_types: Sequence[type], where: str) -> None:
    """Every key names a field, and a field that takes one value is not given a list or a mapping."""
    # The annotations, not Field.type: HfArgumentParser rewrites Field.type (`list[str] | str | None` to str)
    hints = {name: hint for cls in dataclass_types for name, hint in typing.get_type_hints(cls).items()
             if name in field_names([cls])}
    for key, value in values.items():
        if key not in hints:
            raise RecipeError(f"unknown config key '{key}' in {where}{aliases.suggest(key, list(hints))}")
        takes_many = any(word in str(hints[key]) for word in ("list", "dict", "tuple"))
        if isinstance(value, (list, tuple, dict)) and not takes_many:
            kind = "a mapping" if isinstance(value, dict) else "a list"
            raise RecipeError(f"config key '{key}' in {where} takes one value, got {kind}: {value!r}")


class Settings:
    """The parser of a set of dataclasses, and how a value from YAML or Python becomes the value of a field: what
    the same value typed after its flag parses to, without ever turning it back into text."""

    def __init__(self, dataclass_types: Sequence[type]):
        self.classes = tuple(dataclass_types)
        self.parser = _Parser(self.classes, allow_abbrev=False)
        self.actions = {}
        for action in self.parser._actions:
            self.actions.setdefault(action.dest, action)  # --x before --no_x
        self.hints = {name: hint for cls in self.classes for name, hint in typing.get_type_hints(cls).items()}
        self.defaults = {name: self.actions[name].default for name in field_names(self.classes)}
        # Ours only: TrainingArguments reads an unset output_dir as "trainer_output"; an empty one is an error
        self.emptiable = [name for cls in self.classes if not issubclass(cls, TrainingArguments)
                          for name in field_names([cls]) if type(None) in typing.get_args(self.hints[name])]

    def typed(self, values: dict[str, Any], where: str) -> dict[str, Any]:
        return {key: self.value(key, value, where) for key, value in values.items()}

    def value(self, key: str, value: Any, where: str) -> Any:
        """None unsets: a setting that may be None becomes None, one that may not gets its built-in default."""
        hint, action = self.hints[key], self.actions[key]
        accepted = typing.get_args(hint) or (hint,)
        if value is None:
            return None if type(None) in accepted else self.defaults[key]
        takes_list = action.nargs in ("+", "*") or any(typing.get_origin(t) is list for t in accepted)
        if isinstance(value, (list, tuple)) and takes_list:
            return [self.scalar(key, item, where) for item in value]
        if isinstance(value, dict) and any(t is dict or typing.get_origin(t) is dict for t in accepted):
            return value
        typed = self.scalar(key, value, where)
        return [typed] if action.nargs in ("+", "*") else typed

    def scalar(self, key: str, value: Any, where: str) -> Any:
        action = self.actions[key]
        convert = action.type or str
        problem = f"config key '{key}' in {where}"
        if isinstance(value, str):
            try:
                value = convert(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                name = getattr(convert, "__name__", repr(convert))
                raise RecipeError(f"{problem}: invalid {name} value: '{value}'") from None
        elif isinstance(value, bool) and convert is not string_to_bool:
            raise RecipeError(f"{problem} takes {self.kind(action)}, got {str(value).lower()} (YAML reads an "
                              "unquoted yes/no/on/off as true/false: quote it)")
        elif convert is float and isinstance(value, (int, float)):
            value = float(value)
        elif convert is str and isinstance(value, (int, float)):
            value = str(value)  # a name or revision written as a number
        elif not (convert is int and isinstance(value, int) or convert is string_to_bool and isinstance(value, bool)
                  or action.choices and value in action.choices):
            raise RecipeError(f"{problem} takes {self.kind(action)}, got {value!r}")
        if action.choices and value not in action.choices:
            choices = ", ".join(str(getattr(c, "value", c)) for c in action.choices)
            raise RecipeError(f"{problem}: invalid choice: '{value}' (choose from {choices})")
        return value

    @staticmethod
    def kind(action: argparse.Action) -> str:
        if action.choices:
            return "one of " + ", ".join(str(getattr(c, "value", c)) for c in action.choices)
        return {int: "a whole number", float: "a number", string_to_bool: "true or false"}.get(action.type, "text")

    def parse(self, config_values: dict[str, Any], argv: Sequence[str], overrides: dict[str, Any]) -> tuple:
        """``config_values`` become the parser's defaults (TRL's TrlParser.set_defaults_with_config), the flags of
        ``argv`` parse on top and ``overrides`` go on top of those; then each dataclass is built once."""
        for action in self.parser._actions:
            if action.dest in config_values:
                action.default, action.required = config_values[action.dest], False
        namespace, remaining = self.parser.parse_known_args(list(argv))
        if remaining:
            flag = next((t for t in remaining if t.startswith("-")), remaining[0])
            raise RecipeError(f"unknown argument '{flag}'{aliases.suggest(flag, flags_of(self.parser))}")
        given = vars(namespace)
        for key in self.emptiable:  # --key "" on the command line unsets, as null does in YAML
            if given[key] == "":
                given[key] = None
        given.update(overrides)
        try:
            return tuple(cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.init})
                         for cls in self.classes)
        except (ValueError, TypeError) as err:  # raised by a dataclass __post_init__
            raise RecipeError(one_line(err)) from None


def parse_args(
    dataclass_types: Sequence[type],
    config: str | os.PathLike | None = None,
    argv: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> tuple:
    """Parse ``dataclass_types`` from a YAML file, command-line flags on top, then Python keyword overrides.

    Later sources win. None (YAML null, a keyword of None, ``--key ""``) unsets a key: a setting that may be None
    becomes None, one that may not gets its built-in default. Every key must belong to one of the dataclasses; an
    unknown one is an error naming it. Other tools' names (aliases.py) are taken for ours, each with a line appended
    to ``notes``. Each dataclass is built once, so its own checks run once.
    """
    fields = field_names(dataclass_types)
    built_in = built_in_aliases(dataclass_types)
    settings = Settings(dataclass_types)
    renamed: list[str] = []

    def own_names(values: dict[str, Any], where: str) -> dict[str, Any]:
        values, _, said = aliases.resolve(values, (), fields, built_in)
        check_keys(values, dataclass_types, where)
        renamed.extend(said)
        return settings.typed(values, where)

    config_values = own_names(load_yaml(config), str(config)) if config is not None else {}
    _, argv, said = aliases.resolve({}, argv, fields, built_in)
    renamed.extend(said)
    keywords = own_names(overrides, "keyword arguments") if overrides else {}
    if notes is not None:
        notes.extend(dict.fromkeys(renamed))  # each once, in order
    return settings.parse(config_values, argv, keywords)


@dataclass
class RecipeArgs:
    """Everything one run needs, grouped as the dataclasses it came from."""

    model: ModelArguments
    data: DataArguments
    task: Any
    run: RunArguments
    checks: CheckArguments
    training: TrainingArguments
    peft: PeftArguments = field(default_factory=PeftArguments)
    renamed: list[str] = field(default_factory=list)  # other tools' names taken for ours, for the log


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]


def recipe_dataclasses(task_args_class: type) -> tuple[tuple[type, ...], tuple[str, ...]]:
    """The dataclasses of a recipe's arguments, in the order of :class:`RecipeArgs`, and their --help headings."""
    classes = (ModelArguments, PeftArguments, DataArguments, task_args_class, RunArguments, CheckArguments,
               TrainingArguments)
    titles = ("model arguments", "LoRA / QLoRA arguments (PEFT)", "data arguments",
              f"task arguments ({task_args_class.__name__})", "run arguments", "check arguments",
              "training arguments (transformers.TrainingArguments)")
    return classes, titles


def recipe_fields(task_args_class: type, unused: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Each flag of a recipe once (less ``unused``, the ones it ignores): its name, --help heading, help text,
    the value a run given no YAML file and no flags gets (after every dataclass's own __post_init__), and whether
    null (None) is a value of it (else null means that default)."""
    from hf_recipes.help import shown

    classes, titles = recipe_dataclasses(task_args_class)
    defaults = parse_args(classes)
    nullable = {name for cls in classes for name, hint in typing.get_type_hints(cls).items()
                if type(None) in typing.get_args(hint)}
    return [{"name": f.name, "group": title, "help": f.metadata.get("help", ""),
             "default": shown(getattr(instance, f.name), f.name), "training": cls is TrainingArguments,
             "nullable": f.name in nullable}
            for cls, title, instance in zip(classes, titles, defaults)
            for f in dataclasses.fields(cls) if f.init and f.name not in unused]


def resolved_values(args: RecipeArgs, unused: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The settings of a parsed run as plain values that ``--config`` takes again, grouped under the ``--help``
    headings: every flag of the recipe (less ``unused``), and the TrainingArguments that differ from transformers'
    defaults or are among the most used. Secrets are left out."""
    import enum

    from hf_recipes.help import COMMON_TRAINING

    def plain(value):
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value if value is None or isinstance(value, (str, int, float, bool, dict)) else str(value)

    classes, titles = recipe_dataclasses(type(args.task))
    groups = (args.model, args.peft, args.data, args.task, args.run, args.checks, args.training)
    library = TrainingArguments(output_dir=args.training.output_dir)
    return {title: {f.name: plain(getattr(group, f.name)) for f in dataclasses.fields(cls)
                    if f.init and f.name not in unused and f.name not in SECRET_KEYS
                    and (cls is not TrainingArguments or f.name in COMMON_TRAINING
                         or getattr(group, f.name) != getattr(library, f.name))}
            for cls, title, group in zip(classes, titles, groups)}


def settings_yaml(groups: dict[str, dict[str, Any]]) -> str:
    """:func:`resolved_values` as YAML, each group under its heading as a comment."""
    import yaml

    class Dumper(yaml.SafeDumper):  # a template's newlines as \n in double quotes, not folded lines
        pass

    Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style='"' if "\n" in text else None))
    return "\n".join(f"# {title}\n" + yaml.dump(values, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)
                     for title, values in groups.items())


def resolved_yaml(args: RecipeArgs, unused: Sequence[str] = ()) -> str:
    """The settings of a parsed run as YAML that ``--config`` takes again (``hf-recipes print-config``)."""
    return settings_yaml(resolved_values(args, unused))


def recipe_flags(task_args_class: type) -> list[str]:
    """Every ``--flag`` a recipe takes (both spellings of each, and ``--no_x`` of a boolean that defaults to true)."""
    return flags_of(_Parser(recipe_dataclasses(task_args_class)[0]))


def parse_recipe_args(
    task_args_class: type,
    config: str | os.PathLike | None = None,
    argv: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
) -> RecipeArgs:
    classes, _ = recipe_dataclasses(task_args_class)
    if launched_without_accelerator():
        # torchrun / accelerate launch on a machine without GPUs: without this, each process would set up as a
        # single-process run and all of them would train on their own and write the same output_dir.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    renamed: list[str] = []
    model, peft, data, task, run, checks, training = parse_args(classes, config, argv, overrides, renamed)
    if launched_without_accelerator() and training.world_size < 2:
        raise RecipeError(f"launched as {os.environ['WORLD_SIZE']} processes on a machine without GPUs, but the "
                          "processes did not join one run (ACCELERATE_USE_CPU is off?): pass --use_cpu true")
    if training.per_device_train_batch_size <= 0 or training.per_device_eval_batch_size <= 0:
        raise RecipeError("per_device_train_batch_size and per_device_eval_batch_size must be positive")
    if training.gradient_accumulation_steps <= 0:
        raise RecipeError("gradient_accumulation_steps must be positive")
    if training.report_to == [None]:  # TrainingArguments' reading of report_to None (YAML null): no tracker
        training.report_to = []
    check_training(training)
    check_trackers(training)
    check_early_stopping(run, training)
    check_peft(peft, model, training)
    return RecipeArgs(model=model, data=data, task=task, run=run, checks=checks, training=training, peft=peft,
                      renamed=renamed)


def check_training(training: TrainingArguments) -> None:
    """Settings under which a run could not learn anything, or could not write its results, are errors."""
    if not str(training.output_dir or "").strip():
        raise RecipeError("output_dir is empty: give the folder the run writes to, e.g. --output_dir runs/mine")
    if not training.learning_rate > 0:  # also catches NaN
        raise RecipeError(f"learning_rate must be a positive number, got {training.learning_rate}")
    if training.max_steps <= 0 and not training.num_train_epochs > 0:
        raise RecipeError(
            f"num_train_epochs is {training.num_train_epochs}: the run would train nothing; give a positive "
            "num_train_epochs (e.g. 1) or max_steps"
        )
    if training.weight_decay < 0:
        raise RecipeError(f"weight_decay must be 0 or more, got {training.weight_decay}")
    for name, allowed, requirement in TRAINING_NUMBERS:
        value = getattr(training, name)
        if value is not None and not allowed(value):
            raise RecipeError(f"--{name} must be {requirement}, got {value}")


def steps_setting(value) -> bool:
    """logging/eval/save steps: a positive count, or a share (0, 1) of the total steps."""
    return value > 0 and math.isfinite(value)


# TrainingArguments that transformers, torch or numpy accept at parse time and reject (or silently misread) only
# once training starts: (name, allowed, what it must be). None means unset and is always allowed.
TRAINING_NUMBERS = (
    ("dataloader_num_workers", lambda v: v >= 0, "0 or more (0: load batches in the main process)"),
    ("dataloader_prefetch_factor", lambda v: v >= 1, "1 or more"),
    ("save_total_limit", lambda v: v >= 1, "1 or more (leave it unset to keep every checkpoint)"),
    ("logging_steps", steps_setting, "a positive number of steps (or a share of the run below 1)"),
    ("eval_steps", steps_setting, "a positive number of steps (or a share of the run below 1)"),
    ("save_steps", steps_setting, "a positive number of steps (or a share of the run below 1)"),
    ("eval_accumulation_steps", lambda v: v >= 1, "1 or more"),
    ("max_grad_norm", lambda v: v >= 0, "0 or more (0: no clipping)"),
    ("adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("adam_epsilon", lambda v: v >= 0, "0 or more"),
    ("label_smoothing_factor", lambda v: 0 <= v < 1, "in [0, 1) (1 would make every target uniform)"),
    ("eval_delay", lambda v: v >= 0, "0 or more"),
    ("warmup_steps", lambda v: v >= 0, "0 or more"),
    ("num_train_epochs", math.isfinite, "a finite number"),
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("data_seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
)


def check_peft(peft: PeftArguments, model: ModelArguments, training: TrainingArguments) -> None:
    """LoRA needs a pretrained base to be reloaded from, and QLoRA a CUDA GPU with bitsandbytes."""
    if peft.use_peft and not model.model_name_or_path:
        raise RecipeError("use_peft trains an adapter for a pretrained base, but this model is built from scratch "
                          "(model_type) and its random weights are saved nowhere, so the adapter could never be "
                          "loaded again: save the base model first and pass it as model_name_or_path")
    if peft.load_in_4bit:
        import importlib.util

        import torch

        reasons = []
        if not torch.cuda.is_available() or training.use_cpu:
            reasons.append("this run has no CUDA GPU" + (" (use_cpu is set)" if torch.cuda.is_available() else ""))
        if importlib.util.find_spec("bitsandbytes") is None:
            reasons.append("bitsandbytes is not installed (pip install bitsandbytes)")
        if reasons:
            raise RecipeError(f"load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; {' and '.join(reasons)}: "
                              "train without load_in_4bit (plain LoRA) here")


def launched_without_accelerator() -> bool:
    """Started by a multi-process launcher (torchrun, accelerate launch) on a machine with no GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    import torch

    xpu = getattr(torch, "xpu", None)
    return not (torch.cuda.is_available() or (xpu is not None and xpu.is_available()))


def check_early_stopping(run: RunArguments, training: TrainingArguments) -> None:
    """Early stopping compares evaluations and keeps the best model, so it needs both."""
    if run.early_stopping_patience is None:
        return
    if training.eval_strategy == "no" or not training.load_best_model_at_end:
        raise RecipeError("early_stopping_patience needs evaluations to compare and the best model kept: set "
                          "--eval_strategy steps (or epoch) and --load_best_model_at_end true")


# Trackers this package offers as extras (`pip install 'hf-recipes[tensorboard]'`); any other is named as a package.
TRACKER_EXTRAS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}


def check_trackers(training: TrainingArguments) -> None:
    """Every --report_to tracker is installed; Trainer would find out only after output_dir is written."""
    from transformers.integrations import integration_utils

    for tracker in training.report_to or []:
        known = list(integration_utils.INTEGRATION_TO_CALLBACK)
        if tracker not in known:
            raise RecipeError(f"--report_to {tracker}: unknown tracker{did_you_mean(tracker, known)}; use none, all or "
                              f"one of {', '.join(known)}")
        available = getattr(integration_utils, f"is_{tracker}_available", None)
        if available is not None and not available():
            install = (f"pip install 'hf-recipes[{TRACKER_EXTRAS[tracker]}]'" if tracker in TRACKER_EXTRAS
                       else f"pip install {tracker}")
            raise RecipeError(f"--report_to {tracker}: {tracker} is not installed; {install}")
