"""Checks a run makes for the user, each a :class:`Check` a recipe lists: data leakage between splits, and over- or
underfitting read off the logged loss curves (here), forgetting (forgetting.py) and classification baselines
(baselines.py). Each adds a section to ``report.md`` and an entry to ``checks.json``."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from hf_recipes.data import CHECK_BATCH_ROWS, flattened, head, rows_of
from hf_recipes.errors import RecipeError
from hf_recipes.report import Report, markdown_table

EVALUATION_SPLITS = ("validation", "test")
MAJORITY = "majority class (from train)"  # the baselines table's row of the majority-class baseline
logger = logging.getLogger("hf_recipes")


@dataclass
class RunState:
    """What the checks of one run see and write: the trained model, its data and predictions, and their findings."""

    recipe: Any
    args: Any
    trainer: Any
    prepared: Any
    checks: Report = field(default_factory=lambda: Report("checks"))  # sections, placed first in report.md
    found: dict[str, Any] = field(default_factory=dict)  # what the checks found, for checks.json
    failed: list[dict[str, str]] = field(default_factory=list)  # steps that failed after training
    training_log: list[dict] = field(default_factory=list)  # the curves as trained, before any final evaluation
    scored: Any = None  # predictions on the test split (a classifier without one: on validation)
    verdict: FitVerdict | None = None


class Check:
    """One check a recipe lists in ``checks``. ``after_training`` adds a section to ``run.checks`` and an entry to
    ``run.found``; a failure there is recorded as the failed step ``name`` and the run goes on."""

    name: ClassVar[str]
    every_process: ClassVar[bool] = False  # it runs the model, which every process of a distributed run must do

    def applies(self, run: RunState) -> bool:
        return True

    def before_training(self, run: RunState) -> None:
        """Measure the starting model, when the check compares it with the trained one."""

    def after_training(self, run: RunState) -> None:
        raise NotImplementedError


class LeakageCheck(Check):
    name = "leakage check"

    def applies(self, run: RunState) -> bool:
        return run.prepared.leakage is not None

    def after_training(self, run: RunState) -> None:
        leakage = run.prepared.leakage
        run.found["leakage"] = dataclasses.asdict(leakage)
        run.checks.add(f"Data leakage (unit: {leakage.unit})", leakage_section(leakage))


class FitCheck(Check):
    name = "fit check"

    def applies(self, run: RunState) -> bool:
        return run.args.checks.check_fitting

    def after_training(self, run: RunState) -> None:
        run.verdict = fit_check(run.training_log, run.args, run.found.get("baselines"))
        run.found["fitting"] = {"verdict": run.verdict.kind, "lowest_eval_loss_step": run.verdict.best_step}


def normalize_text(text: str) -> str:
    """Case, Unicode compatibility forms and whitespace runs ignored: "Hello  World" and "hello world" are one text."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass
class SplitOverlap:
    """Rows of one evaluation split that also occur in train."""

    rows: int
    exact: int  # rows whose text occurs in train character for character
    normalized: int  # rows matching a train row after normalize_text (exact ones included)
    train_rows: int  # train rows matching any row of this split after normalize_text (what dedupe removes)
    examples: list[str] = field(default_factory=list)


@dataclass
class Leakage:
    unit: str  # what one row is: a text, a song, an instruction with its input
    train_rows: int
    train_exact_repeats: int  # train rows that repeat an earlier train row exactly
    train_normalized_repeats: int  # ... after normalize_text (exact repeats included)
    overlaps: dict[str, SplitOverlap]
    removed_from_train: int | None = None  # set when --dedupe_splits removed the leaked rows
    streamed_train_sample: int | None = None  # streamed train: the screen read its first this many rows

    @property
    def leaked(self) -> int:
        return sum(o.normalized for o in self.overlaps.values())


BLANK = -1  # CPython's hash() never returns -1: the mark of a blank text, which matches nothing


def hashed_batches(texts: Iterable[str], rows: int = CHECK_BATCH_ROWS
                   ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """Batches of texts with, per text, its hash and the hash of its normalize_text (BLANK for a blank text).

    Comparing 64-bit hashes instead of the texts keeps a split's screen to 16 bytes a row; two different texts share
    a hash with odds of about n**2 / 2**65 (3e-8 at a million rows)."""
    texts = iter(texts)
    while batch := list(itertools.islice(texts, rows)):
        exact = np.fromiter((hash(t) if t.strip() else BLANK for t in batch), np.int64, len(batch))
        normal = np.fromiter((hash(normalize_text(t)) if t.strip() else BLANK for t in batch), np.int64, len(batch))
        yield batch, exact, normal


def find_leakage(texts_by_split: dict[str, Iterable[str]], unit: str, examples: int = 3,
                 batch_rows: int = CHECK_BATCH_ROWS) -> tuple[Leakage, np.ndarray]:
    """Count train rows repeated inside train, and validation/test rows that also occur in train; with them, the
    indices of the train rows that occur in no validation or test split, normalised (what ``--dedupe_splits``
    keeps). Each split's texts are read once, a batch at a time.

    Blank texts are never counted as duplicates of each other.
    """
    hashes = [(exact, normal) for _, exact, normal in hashed_batches(texts_by_split["train"], batch_rows)]
    train_exact, train_normal = joined([exact for exact, _ in hashes]), joined([normal for _, normal in hashes])
    exact_seen, normal_seen = distinct(train_exact[train_exact != BLANK]), distinct(train_normal[train_normal != BLANK])
    overlaps, held_out = {}, []
    for split in EVALUATION_SPLITS:
        if split not in texts_by_split:
            continue
        rows = exact_copies = normalized = 0
        matched, split_normal = {}, []
        for batch, exact, normal in hashed_batches(texts_by_split[split], batch_rows):
            in_train = occurs_in(normal, normal_seen)
            rows, exact_copies = rows + len(batch), exact_copies + int(occurs_in(exact, exact_seen).sum())
            normalized += int(in_train.sum())
            for i in np.flatnonzero(in_train)[:examples]:  # the first distinct matched texts, in row order
                if len(matched) < examples:
                    matched.setdefault(batch[i])
            split_normal.append(normal[normal != BLANK])
        split_normal = distinct(joined(split_normal))
        held_out.append(split_normal)
        overlaps[split] = SplitOverlap(rows=rows, exact=exact_copies, normalized=normalized,
                                       train_rows=int(occurs_in(train_normal, split_normal).sum()),
                                       examples=list(matched))
    leakage = Leakage(
        unit=unit,
        train_rows=len(train_exact),
        train_exact_repeats=int((train_exact != BLANK).sum()) - len(exact_seen),
        train_normalized_repeats=int((train_normal != BLANK).sum()) - len(normal_seen),
        overlaps=overlaps,
    )
    return leakage, np.flatnonzero(~occurs_in(train_normal, distinct(joined(held_out))))


def joined(hashes: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(hashes) if hashes else np.empty(0, np.int64)


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (by sorting: numpy 2.4's np.unique hashes them, 40x slower on 64-bit hashes)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def occurs_in(values: np.ndarray, sorted_distinct: np.ndarray) -> np.ndarray:
    """Per value: whether ``sorted_distinct`` (from :func:`distinct`) holds it; a binary search each."""
    if not len(sorted_distinct):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_distinct, values), len(sorted_distinct) - 1)
    return sorted_distinct[at] == values


LEAKAGE_STREAM_ROWS = 10_000  # rows of a streamed train split the leakage screen reads (from its head)


def leakage_sample(raw) -> dict:
    """The splits as the leakage screen reads them: a streamed train split's first ``LEAKAGE_STREAM_ROWS`` rows."""
    if rows_of(raw["train"]) is None:
        return {**raw, "train": head(raw["train"], LEAKAGE_STREAM_ROWS)}
    return raw


def screen_splits(raw, texts: dict[str, Iterable[str]], unit: str, dedupe: bool) -> Leakage:
    """Count rows shared between train and validation/test; with ``dedupe``, drop them from ``raw["train"]``."""
    leakage, keep = find_leakage(texts, unit)
    if rows_of(raw["train"]) is None:  # streamed: texts hold the head of train (leakage_sample)
        leakage.streamed_train_sample = leakage.train_rows
    if dedupe:
        if not len(keep):
            raise RecipeError("--dedupe_splits removed every train row: all of them occur in validation or test")
        leakage.removed_from_train = len(raw["train"]) - len(keep)
        raw["train"] = flattened(raw["train"].select(keep))
        logger.info("Removed %d train rows that occur in validation or test", leakage.removed_from_train)
    elif leakage.leaked:
        logger.warning("%d validation/test rows also occur in train, compared by %s (see report.md; "
                       "--dedupe_splits removes them)", leakage.leaked, unit)
    return leakage


def leakage_section(leakage: Leakage) -> str:
    unit = leakage.unit
    rows = [
        {
            "split": split,
            "rows": o.rows,
            "exact copies in train": o.exact,
            "copies after normalising case/whitespace": o.normalized,
            "share": o.normalized / o.rows if o.rows else 0.0,
            "train rows involved": o.train_rows,
        }
        for split, o in leakage.overlaps.items()
    ]
    lines = [markdown_table(rows), ""]
    if leakage.leaked:
        if leakage.removed_from_train is not None:
            lines.append(f"**Removed {leakage.removed_from_train} train rows** that repeat a validation or test "
                         f"row (`--dedupe_splits`); the model never trained on them.")
        else:
            lines.append("**Leakage**: scores on these splits partly measure memorisation. "
                         "`--dedupe_splits true` removes the repeated rows from train.")
        examples = [e for o in leakage.overlaps.values() for e in o.examples][:5]
        lines += ["", "Examples:", ""] + [f"- `{shorten(e)}`" for e in examples]
    else:
        lines.append(f"No validation or test row occurs in train (compared by {unit}), even ignoring case and "
                     "whitespace.")
    lines += ["", f"Inside train ({leakage.train_rows} rows): {leakage.train_exact_repeats} exact repeats, "
                  f"{leakage.train_normalized_repeats} after normalising case/whitespace."]
    if leakage.streamed_train_sample is not None:
        lines += ["", f"Train is streamed: the screen read its first {leakage.streamed_train_sample:,} rows only "
                      "(a sample; later rows are not compared)."]
    return "\n".join(lines)


def shorten(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---- over- and underfitting -------------------------------------------------------------------------------
@dataclass
class FitVerdict:
    kind: str  # overfitting, underfitting, healthy or unknown
    message: str
    best_step: int | None = None  # step of the lowest validation loss


@dataclass
class Baseline:
    """A classifier's fine-tuned score against the majority-class baseline's, on the same split."""

    metric: str
    fine_tuned: float
    majority: float


def loss_points(log_history: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) of ``key`` in Trainer's log history; one point per step (the last one logged)."""
    points = {entry["step"]: float(entry[key]) for entry in log_history if key in entry and "step" in entry}
    return sorted(points.items())


def fit_check(training_log: list[dict], args, baselines_found: dict | None = None) -> FitVerdict | None:
    """The verdict on a run's curves under its training settings (a classifier's also against its baselines)."""
    if not args.checks.check_fitting:
        return None
    training = args.training
    rows = {row["model"]: row for row in (baselines_found or {}).get("rows", [])}
    baseline = (Baseline("accuracy", rows["fine-tuned"]["accuracy"], rows[MAJORITY]["accuracy"])
                if "fine-tuned" in rows and MAJORITY in rows else None)
    verdict = fit_verdict(
        training_log,
        learning_rate=training.learning_rate,
        num_train_epochs=training.num_train_epochs if training.max_steps <= 0 else None,
        load_best_model_at_end=training.load_best_model_at_end,
        metric_for_best_model=training.metric_for_best_model,
        baseline=baseline,
    )
    logger.info("Fit check: %s", verdict.message.replace("**", ""))
    return verdict


def moved(drop: float) -> str:
    """How a training loss that fell by the share ``drop`` (negative: it rose) moved, for the underfitting verdict."""
    return "barely moved" if drop >= 0 else "rose instead of falling"


def fit_verdict(
    log_history: Sequence[dict[str, Any]],
    *,
    rising_evaluations: int = 2,
    min_rise: float = 0.01,
    flat_drop: float = 0.05,
    learning_rate: float | None = None,
    num_train_epochs: float | None = None,
    load_best_model_at_end: bool = False,
    metric_for_best_model: str | None = None,
    max_gap: float = 0.5,
    baseline: Baseline | None = None,
) -> FitVerdict:
    """A plain-language verdict on the training run from its logged losses (taken before any final evaluation).

    In this order:
    Not learning (underfitting): a classifier no better than always predicting the majority class (``baseline``),
    whatever its losses did.
    Overfitting: the validation loss stayed above its minimum for the last ``rising_evaluations`` or more
    evaluations, ending at least ``min_rise`` (relative) above it, while the training loss fell; or, without such
    a rise, the last validation loss is more than ``max_gap`` (relative) above the training loss of the run's last
    fifth (the model fits its training data far better than unseen data).
    Underfitting: the training loss fell by less than ``flat_drop`` (relative) from the first logged fifth of the
    run to the last.
    """
    train = loss_points(log_history, "loss")
    evals = loss_points(log_history, "eval_loss")
    if baseline is not None and baseline.fine_tuned <= baseline.majority:
        return FitVerdict(
            "underfitting",
            f"**Not learning.** The fine-tuned {baseline.metric} ({baseline.fine_tuned:.4f}) is no better than always "
            f"predicting the majority class ({baseline.majority:.4f}), so the losses below describe a model that has "
            "not learned the task: check the labels, then try a higher `learning_rate` or more epochs.",
        )
    if len(train) < 2:
        return FitVerdict("unknown", f"Not enough logged training losses to judge ({len(train)}); lower "
                                     "`logging_steps` so the run logs the loss several times.")
    window = max(1, len(train) // 5)
    head = sum(loss for _, loss in train[:window]) / window
    tail = sum(loss for _, loss in train[-window:]) / window
    drop = (head - tail) / head if head else 0.0

    best_step = None
    if evals:
        best = min(range(len(evals)), key=lambda i: evals[i][1])
        best_step, best_loss = evals[best]
        after = evals[best + 1:]
        train_at_best = [loss for step, loss in train if step <= best_step] or [train[0][1]]
        train_later = [loss for step, loss in train if step > best_step]
        if (len(after) >= rising_evaluations and after[-1][1] >= best_loss * (1 + min_rise)
                and train_later and train_later[-1] < train_at_best[-1]):
            if load_best_model_at_end and metric_for_best_model in (None, "loss", "eval_loss"):
                keep = f"`load_best_model_at_end` kept the step-{best_step} model as the final one."
            elif load_best_model_at_end:
                keep = (f"`load_best_model_at_end` kept the model best by {metric_for_best_model}; set "
                        f"`metric_for_best_model eval_loss` to keep the step-{best_step} one.")
            else:
                keep = (f"`--load_best_model_at_end true` (with `save_strategy` equal to `eval_strategy`) would keep "
                        f"the step-{best_step} model; fewer epochs or more weight decay also help.")
            return FitVerdict(
                "overfitting",
                f"**Overfitting.** Validation loss was lowest at step {best_step} ({best_loss:.4f}), stayed above "
                f"it for the {len(after)} evaluations since and ended at {after[-1][1]:.4f}, while training loss "
                f"fell from {train_at_best[-1]:.4f} to {train_later[-1]:.4f}. {keep}",
                best_step,
            )
    if evals and tail > 0 and evals[-1][1] > tail * (1 + max_gap):
        return FitVerdict(
            "overfitting",
            f"**Overfitting (train/validation gap).** The last validation loss ({evals[-1][1]:.4f}, step "
            f"{evals[-1][0]}) is {evals[-1][1] / tail:.2f}x the training loss of the run's last fifth ({tail:.4f}): "
            "the model fits its training data far better than unseen data. More data, fewer epochs, more weight "
            "decay or dropout narrow the gap.",
            best_step,
        )
    if drop < flat_drop:
        now_lr = f" (now {learning_rate:g})" if learning_rate else ""
        now_epochs = f" (now {num_train_epochs:g})" if num_train_epochs else ""
        return FitVerdict(
            "underfitting",
            f"**Underfitting.** Training loss {moved(drop)}: from {head:.4f} to {tail:.4f} "
            f"({abs(drop):.1%} {'lower' if drop >= 0 else 'higher'}). "
            f"Try a higher `learning_rate`{now_lr} or more epochs{now_epochs}.",
            best_step,
        )
    message = f"**No sign of over- or underfitting.** Training loss fell {drop:.0%} (from {head:.4f} to {tail:.4f})"
    if not evals:
        message += "; there were no evaluations during training to check the validation loss (set `eval_strategy`)."
    elif best_step == evals[-1][0]:
        message += f"; validation loss was lowest at the last evaluation (step {best_step})"
        if len(evals) >= 2 and evals[-1][1] < evals[-2][1] * (1 - min_rise):
            message += " and still falling: more epochs may help"
        message += "."
    else:
        later = sum(step > best_step for step, _ in evals)
        message += (f"; validation loss was lowest at step {best_step}, {later} evaluation(s) before the end, "
                    "and has not clearly risen since.")
    return FitVerdict("healthy", message, best_step)


# ---- classification data -----------------------------------------------------------------------------------
def label_balance_table(labels_by_split: dict[str, Sequence[int]], label_names: Sequence[str]) -> str:
    """Rows per class per split, with each class's share of its split."""
    # One O(n) pass per split in numpy (no Python object per row): a label id's count is its bincount entry.
    counts = {split: np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(label_names))
              for split, labels in labels_by_split.items()}
    rows = []
    for i, name in enumerate(label_names):
        row: dict[str, Any] = {"label": name}
        for split, counter in counts.items():
            total = int(counter.sum())
            row[split] = f"{counter[i]} ({counter[i] / total:.1%})" if total else "0"
        rows.append(row)
    return markdown_table(rows)
