"""Tweet sentiment: GPT-2 with a classification head (GPT2ForSequenceClassification).

Python API::

    from hf_recipes.recipes import sentiment
    trainer, prepared = sentiment.build_trainer(sentiment.demo_config)   # train/evaluate yourself
    metrics = sentiment.run(sentiment.demo_config, num_train_epochs=1)  # or the whole run
    sentiment.predict("runs/demo/sentiment", ["what a lovely day"])             # [{"label": ..., "score": ...}]
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, DatasetDict, Json
from transformers import AutoModelForSequenceClassification

from hf_recipes.collators import PaddingCollator
from hf_recipes.config import RecipeArgs
from hf_recipes.data import arrow_column, decoded, drop_empty, drop_rows, has_text, load_splits, map_splits
from hf_recipes.errors import RecipeError
from hf_recipes.metrics import classification_metrics, load_metrics
from hf_recipes.model import give_distinct_pad_token, load_model, load_tokenizer, max_length
from hf_recipes.baselines import ClassificationBaselines
from hf_recipes.checks import FitCheck, LeakageCheck
from hf_recipes.forgetting import ForgettingCheck
from hf_recipes.model_card import CardExample
from hf_recipes.model_kinds import CLASSIFIER_KIND
from hf_recipes.predict import classify
from hf_recipes.recipe import Prepared, Recipe
from hf_recipes.report import markdown_table, per_split, plot_confusion_matrix

HERE = files(__package__)
MIN_TEXT_TOKENS = 4  # fewer tokens of a text than this leave next to nothing to classify
logger = logging.getLogger("hf_recipes")


@dataclass
class SentimentArguments:
    labels: list[str] | None = field(
        default=None,
        metadata={"help": "Label names in id order. Default: the sorted distinct labels of the train split."},
    )
    normalize_labels: bool = field(
        default=False,
        metadata={"help": "Merge labels that differ only in case or surrounding spaces ('Positive', 'positive ', "
                          "'POSITIVE') into one, named by its most frequent train spelling. Off: such labels are an "
                          "error naming both spellings."},
    )


def folded(label) -> str:
    """A label as --normalize_labels compares it: without surrounding spaces, case-folded."""
    return str(label).strip().casefold()


def label_names(raw: DatasetDict, column: str, explicit: Sequence[str] | None, normalize: bool = False
                ) -> tuple[list[str], dict]:
    """Label names in id order, and a map from each raw label value to its id.

    Labels may be strings or integers (a ClassLabel column keeps its own names). Every split is checked:
    a missing label or one the model does not know is an error naming the split and the value. With ``normalize``,
    labels that differ only in case or surrounding spaces are one label, named by its most frequent train spelling.
    """
    check_explicit_labels(explicit)
    check_label_values(raw, column)
    key = folded if normalize else str
    feature = raw["train"].features[column]
    if isinstance(feature, ClassLabel) and not explicit:
        names = list(feature.names)
        value_to_id = {i: i for i in range(len(names))}
    else:
        counts = {split: label_counts(dataset, column) for split, dataset in raw.items()}
        train_values = [v for v in counts["train"] if v is not None]
        if explicit:
            names = [str(n) for n in explicit]
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in train_values):
            names = [str(v) for v in sorted(set(train_values))]
        else:
            names = sorted(spelling_names(counts["train"], key))
            numbers = [n for n in names if n.lstrip("-").isdigit()]
            if numbers and len(numbers) < len(names):
                word = next(n for n in names if n not in numbers)
                raise RecipeError(
                    f"train labels mix numbers and names (e.g. '{numbers[0]}' and '{word}'); "
                    "use one kind, or list the names with --labels"
                )
        id_of = {key(name): i for i, name in enumerate(names)}
        values = {v for split_counts in counts.values() for v in split_counts if v is not None}
        value_to_id = {str(v): id_of[key(v)] for v in values if key(v) in id_of}
        value_to_id.update({name: i for i, name in enumerate(names)})
    for split, dataset in raw.items():
        values = label_counts(dataset, column)
        if values.get(None):
            raise RecipeError(f"{values[None]} {split} rows have no '{column}' value")
        unknown = sorted({str(v) for v in values} - {str(k) for k in value_to_id})
        if unknown:
            raise RecipeError(
                f"label '{unknown[0]}' in the {split} split is not a known label ({', '.join(names)})"
            )
    if len(names) < 2:
        raise RecipeError(f"classification needs at least 2 labels, found {names}")
    return names, {str(k): v for k, v in value_to_id.items()}


def check_explicit_labels(explicit: Sequence[str] | None) -> None:
    """--labels names each label once, also ignoring case and surrounding spaces."""
    names = [str(n) for n in explicit or []]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecipeError(f"--labels lists '{repeated[0]}' more than once; each label once, in id order")
    twins = next(([m, n] for i, m in enumerate(names) for n in names[i + 1:] if folded(m) == folded(n)), None)
    if twins:
        raise RecipeError(f"--labels lists '{twins[0]}' and '{twins[1]}', which differ only in case or surrounding "
                          "spaces; list each label once")


def label_counts(dataset, column: str) -> Counter:
    """How many rows hold each label value (None: no label), counted in Arrow."""
    counts = pc.value_counts(arrow_column(dataset, column))
    values = decoded(dataset, column, counts.field("values").to_pylist())  # a JSON file's mixed labels: Json
    return Counter(dict(zip(values, counts.field("counts").to_pylist())))


def spelling_names(value_counts: Counter, key) -> list[str]:
    """One name per label: the most frequent spelling (spaces stripped when ``key`` folds) of the values that ``key``
    makes equal (``value_counts``: rows per value); the first in sorted order breaks a tie."""
    counts: Counter = Counter()
    for value, rows in value_counts.items():
        if value is not None:
            counts[str(value).strip() if key is folded else str(value)] += rows
    best: dict[str, str] = {}
    for spelling in sorted(counts):
        group = key(spelling)
        if group not in best or counts[spelling] > counts[best[group]]:
            best[group] = spelling
    return list(best.values())


def name_or_whole_number(label) -> bool:
    return label is None or isinstance(label, str) or (isinstance(label, int) and not isinstance(label, bool))


def check_label_values(raw: DatasetDict, column: str, sources: dict[str, str] | None = None,
                       text_column: str | None = None) -> None:
    """Labels are names or whole numbers; anything else (a float, a list, a mapping) is named with its row (of
    the file, with ``sources``). With ``text_column``, rows without text are left to be dropped. An Arrow column
    holds one type, so only a column of another type (or of JSON values of mixed types) is read."""
    for split, dataset in raw.items():
        kind, feature = arrow_column(dataset, column).type, dataset.features[column]
        one_kind = (isinstance(feature, ClassLabel) or pa.types.is_null(kind) or pa.types.is_string(kind)
                    or pa.types.is_large_string(kind) or pa.types.is_integer(kind))
        if one_kind and not isinstance(feature, Json):
            continue
        labelled = labelled_rows(dataset, column, text_column)
        values = decoded(dataset, column, labelled["label"].to_pylist())
        wrong = next((i for i, value in enumerate(values) if not name_or_whole_number(value)), None)
        if wrong is not None:
            row, value = labelled["row"][wrong].as_py(), values[wrong]
            where = f" ({sources[split]})" if sources else ""
            raise RecipeError(f"label column '{column}' of the {split} split must hold label names or whole "
                              f"numbers, but row {row} holds {type(value).__name__} {value!r:.40}{where}")


def labelled_rows(dataset, column: str, text_column: str | None = None, with_missing: bool = False) -> pa.Table:
    """The rows (``row``, from 1) and labels (``label``) of the rows that have a label (and, with ``text_column``,
    a text to keep them; with ``with_missing``, rows without a label too), as Arrow."""
    labels = arrow_column(dataset, column)
    keep = has_text(arrow_column(dataset, text_column)) if text_column else pa.array(np.ones(len(dataset), bool))
    if not with_missing:
        keep = pc.and_(keep, pc.is_valid(labels))
    return pa.table({"row": np.arange(1, len(dataset) + 1), "label": labels}).filter(keep)


def check_file_labels(raw: DatasetDict, sources: dict[str, str], column: str, text_column: str,
                      explicit: Sequence[str] | None, normalize: bool) -> None:
    """The labels as the files hold them, before validation is carved from train (which shuffles): errors give the
    row of the file. Label types; spellings that differ only in case or surrounding spaces (unless ``normalize``);
    labels outside --labels, or (validation and test files) outside the train file's labels. Rows without text
    are left out: they are dropped (a split left without rows is the error then)."""
    check_explicit_labels(explicit)
    for split, dataset in raw.items():
        rows = labelled_rows(dataset, column, text_column, with_missing=True)
        missing = rows.filter(pc.is_null(rows["label"]))["row"]
        if len(missing):
            raise RecipeError(f"{len(missing)} {split} rows have no '{column}' value (the first: row "
                              f"{missing[0].as_py()} of {sources[split]}); label them or remove them")
    check_label_values(raw, column, sources, text_column)
    if any(isinstance(dataset.features[column], ClassLabel) for dataset in raw.values()):
        return
    first_row: dict[str, tuple[str, int]] = {}  # each spelling -> the split and row it first occurs in
    for split, dataset in raw.items():
        firsts = labelled_rows(dataset, column, text_column).group_by("label").aggregate([("row", "min")])
        firsts = firsts.sort_by("row_min")
        for value, row in zip(decoded(dataset, column, firsts["label"].to_pylist()), firsts["row_min"].to_pylist()):
            first_row.setdefault(str(value), (split, row))
    if not any(split == "train" for split, _ in first_row.values()):
        return

    def where(spelling: str) -> str:
        split, row = first_row[spelling]
        return f"row {row} of {sources[split]}"

    spellings: dict[str, str] = {}
    for spelling in first_row:
        other = spellings.setdefault(folded(spelling), spelling)
        if other != spelling and not normalize:
            raise RecipeError(f"labels '{other}' ({where(other)}) and '{spelling}' ({where(spelling)}) differ only in "
                              "case or surrounding spaces: pass --normalize_labels true to merge them into one "
                              "label, or make them the same in the data")
    key = folded if normalize else str
    known = [str(n) for n in explicit] if explicit else [s for s in first_row if first_row[s][0] == "train"]
    known_keys = {key(name) for name in known}
    for spelling, (split, _) in first_row.items():
        if key(spelling) not in known_keys and (explicit or split != "train"):
            twin = next((n for n in known if folded(n) == folded(spelling)), None)
            hint = (f"; it differs from '{twin}' only in case or surrounding spaces: pass --normalize_labels true"
                    if twin else "")
            shown = sorted(known_keys) if not explicit else known
            raise RecipeError(f"label '{spelling}' in the {split} split is not a known label ({', '.join(shown)}): "
                              f"{where(spelling)}{hint}")


def labels_without_train_rows(raw: DatasetDict, column: str, names: list[str], value_to_id: dict) -> list[str]:
    present = {value_to_id[str(v)] for v in label_counts(raw["train"], column)}
    return [name for i, name in enumerate(names) if i not in present]


class SentimentRecipe(Recipe):
    name = "sentiment"
    title = "Sentiment classification"
    task_args_class = SentimentArguments
    default_config = HERE / "sentiment.yaml"
    model_card_task = "text-classification"
    metric_inputs = "predicted and true label ids"
    kind = CLASSIFIER_KIND
    unused_flags = CLASSIFIER_KIND.unused_flags
    checks = (LeakageCheck(), ForgettingCheck(), ClassificationBaselines(), FitCheck())  # the fit check reads the baselines

    def model_card_example(self, args: RecipeArgs) -> CardExample:
        return CardExample(
            prompt_format="Give the text alone, one text (or a list of texts) per call: the model returns the most "
                          "likely label and its probability (`top_k=None` returns every label's).",
            code='print(classifier(["what a lovely day", "ugh, mondays are the worst"]))',
            intended_use="Labelling the sentiment of short texts like the training ones (e.g. tweets).",
            limitations="Texts unlike the training ones (longer, another domain or language, sarcasm) get less "
                        "reliable labels.")

    def load_data(self, args: RecipeArgs) -> DatasetDict:
        label, task = args.data.label_column, args.task
        if args.data.streaming:
            raise RecipeError("--streaming applies to the lyrics and instruct recipes: sentiment reads its data whole")
        return load_splits(args.data, args.model, args.training.seed,
                           required_columns=(args.data.text_column, label),
                           text_columns=(args.data.text_column,),
                           check_files=partial(check_file_labels, column=label, text_column=args.data.text_column,
                                               explicit=task.labels, normalize=task.normalize_labels))

    def prepare(self, args: RecipeArgs, raw: DatasetDict) -> Prepared:
        text, label = args.data.text_column, args.data.label_column
        dropped = drop_empty(raw, text)
        names, value_to_id = label_names(raw, label, args.task.labels, args.task.normalize_labels)
        unseen = labels_without_train_rows(raw, label, names, value_to_id)
        if unseen:
            logger.warning("No train row has the label(s) %s: the model cannot learn to predict them",
                           ", ".join(unseen))

        tokenizer = load_tokenizer(args.model)
        pad_text = give_distinct_pad_token(tokenizer)
        holding_pad = drop_rows(raw, text, lambda texts: pc.invert(pc.match_substring(texts, pad_text)),
                                f"whose text holds {pad_text}", whole_column=True)
        model = load_model(
            args.model,
            AutoModelForSequenceClassification,
            tokenizer,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
        limit = max_length(tokenizer, model, args.data.max_seq_length, MIN_TEXT_TOKENS,
                           f"a classifier needs at least {MIN_TEXT_TOKENS} tokens of each text to tell its label")

        def tokenize(batch):
            encoded = tokenizer(batch[text], truncation=True, max_length=limit)
            encoded["labels"] = [value_to_id[str(v)] for v in batch[label]]
            return encoded

        tokenized = map_splits(raw, tokenize, args.data, args.training, "Tokenizing")
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            raw=raw,
            datasets=tokenized,
            data_collator=PaddingCollator(tokenizer),
            compute_metrics=partial(classification_metrics, label_names=names,
                                    extra_metrics=load_metrics(args.checks.metric_names)),
            label_names=names,
            facts={
                "labels": ", ".join(names),
                "rows dropped for empty text": per_split(dropped),
                **({f"rows dropped for holding the pad token {pad_text}": per_split(holding_pad)}
                   if any(holding_pad.values()) else {}),
                "max tokens per text": limit,
                **({"labels without train rows (cannot be learned)": ", ".join(unseen)} if unseen else {}),
            },
        )

    def metric_example(self, prepared: Prepared, args: RecipeArgs) -> tuple[list, list]:
        label_ids = list(range(len(prepared.label_names)))
        return label_ids, label_ids

    def after_training(self, trainer, prepared, args, report, test_output) -> None:
        names = list(prepared.model.config.id2label.values())
        split = "test" if "test" in prepared.datasets else "validation"  # test_output holds that split's
        if not trainer.is_world_process_zero():
            return
        y_true, y_pred = test_output.label_ids, np.asarray(test_output.predictions).argmax(-1)
        prefix = "test" if split == "test" else "eval"
        rows = [
            {
                "label": name,
                f"{split} rows": int(np.sum(y_true == i)),
                "precision": test_output.metrics[f"{prefix}_precision_{name}"],
                "recall": test_output.metrics[f"{prefix}_recall_{name}"],
            }
            for i, name in enumerate(names)
        ]
        report.add("Per class", markdown_table(rows))
        path = Path(args.training.output_dir) / "confusion_matrix.png"
        plot_confusion_matrix(y_true, y_pred, names, path, f"{split} confusion matrix")
        report.add("Confusion matrix", f"![{split} confusion matrix](confusion_matrix.png)")


RECIPE = SentimentRecipe()
build_trainer = RECIPE.build_trainer
demo_config = RECIPE.demo_config  # works from any directory
run = RECIPE.run


def predict(model_dir: str | Path, texts: Sequence[str], batch_size: int = 32) -> list[dict]:
    """Label and probability for each text, from a saved sentiment model."""
    return classify(model_dir, texts, batch_size=batch_size)
