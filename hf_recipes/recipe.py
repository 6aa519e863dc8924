"""What every recipe shares: parse arguments, load and screen the data, prepare, build the Trainer, train,
evaluate, test, check, save, report.

A recipe subclasses :class:`Recipe` and writes only ``load_data`` (raw splits) and ``prepare`` (tokenized data,
model, collator, metrics) and, if it has something task-specific to show, the ``before_training`` /
``after_training`` report hooks. The checks (leakage, over/underfitting, label balance and baselines for
classifiers, forgetting) are shared and run for every recipe.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import transformers
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import PredictionOutput

from hf_recipes import baselines, forgetting, outputs, upstream
from hf_recipes.checks import (
    Baseline, FitVerdict, Leakage, find_leakage, fit_verdict, label_balance_table, leakage_section, train_rows_to_keep,
)
from hf_recipes.config import RecipeArgs, RunArguments, parse_recipe_args
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments
from hf_recipes.metrics import add_perplexity, check_metrics, load_metrics, mean_token_loss, token_loss_sums
from hf_recipes.model import clean_tokenizer_state, is_local
from hf_recipes.model_card import training_settings, write_model_card
from hf_recipes.predict import RECIPE_FILE, load_recipe_file  # noqa: F401 - load_recipe_file re-exported
from hf_recipes.report import Report, format_change, markdown_table, metrics_table, plot_loss_curve
from hf_recipes.trainer import RecipeTrainer, last_complete_checkpoint, make_trainer, resolve_precision

logger = logging.getLogger("hf_recipes")

# recipe.json: which recipe made a run and its task settings (read by `hf-recipes generate`). Written last, so it
# also marks a finished run: a run killed while writing its results is resumed, not mistaken for a finished one.
MAJORITY = "majority class (from train)"  # the baselines table's row of the majority-class baseline
CHECKS_FILE = "checks.json"  # what the checks found, for scripts (the report shows the same)


@dataclass
class Prepared:
    """A recipe's task-specific parts, ready for the shared Trainer factory."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    raw: DatasetDict  # untokenized splits, for reports and generation
    datasets: DatasetDict  # tokenized splits the Trainer consumes
    data_collator: Callable
    eval_data_collator: Callable | None = None  # when evaluation batches differ from training ones
    compute_metrics: Callable | None = None  # causal LMs default to the exact mean token loss
    preprocess_logits_for_metrics: Callable | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # data facts for the report (rows dropped, ...)
    before: dict[str, Any] = field(default_factory=dict)  # what before_training measured, for after_training
    label_names: list[str] | None = None  # classification: label names in id order
    leakage: Leakage | None = None
    forgetting_text: str | None = None  # forgetting_eval_file, read (and checked) before anything is trained
    resume_from: str | None = None  # the checkpoint training resumes from (checked against the model)


def setup_logging(training_args) -> None:
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    upstream.log_to_current_stderr()  # a later run in the same process logs to the stderr of its own time
    logger.setLevel(logging.INFO if level <= logging.INFO or training_args.should_log else level)
    transformers.utils.logging.set_verbosity(level)


class Recipe:
    name: ClassVar[str]
    title: ClassVar[str]
    task_args_class: ClassVar[type]
    default_config: ClassVar[Path]
    reports_perplexity: ClassVar[bool] = False
    compares_start: ClassVar[bool] = False  # evaluate the starting model too; the report shows both losses
    classifies: ClassVar[bool] = False  # a classifier: label balance, baselines and few-shot checks apply
    leakage_unit: ClassVar[str] = "text"  # what one row is, for the leakage check
    metric_inputs: ClassVar[str | None] = None  # what --metric_names metrics score; None: nothing beyond the loss

    @property
    def demo_config(self) -> Path:
        """The offline demo config beside the recipe's own (a tiny model, bundled data)."""
        return self.default_config.parent / "demo" / self.default_config.name

    # ---- task-specific parts -------------------------------------------------------------------------
    def load_data(self, args: RecipeArgs) -> DatasetDict:
        """The raw train/validation(/test) splits, checked; the shared flow screens them for leakage next."""
        raise NotImplementedError

    def prepare(self, args: RecipeArgs, raw: DatasetDict) -> Prepared:
        """Tokenizer, model, tokenized splits, collator and metrics from the raw splits."""
        raise NotImplementedError

    def metric_example(self, prepared: Prepared, args: RecipeArgs) -> tuple[list, list]:
        """Predictions and references shaped as this recipe gives them to --metric_names metrics, to try each
        metric on before training."""
        raise NotImplementedError

    def leakage_texts(self, dataset, args: RecipeArgs) -> list[str]:
        """The text that identifies each row when looking for duplicates across splits."""
        return [text or "" for text in dataset[args.data.text_column]]

    def before_training(self, trainer: RecipeTrainer, prepared: Prepared, args: RecipeArgs, report: Report) -> None:
        """Measure the starting model (e.g. perplexity, generations) for the report."""

    def after_training(
        self,
        trainer: RecipeTrainer,
        prepared: Prepared,
        args: RecipeArgs,
        report: Report,
        test_output: PredictionOutput | None,
    ) -> dict[str, float] | None:
        """Task-specific report sections from the trained model (e.g. confusion matrix, generations).
        ``test_output`` holds the predictions on the test split; a classifier without one gets the validation
        split's (metrics prefixed ``eval_``).

        May return extra ``test_*`` metrics (e.g. scores of generated answers); they join the test metrics files.
        """

    # ---- shared flow ---------------------------------------------------------------------------------
    def parse(
        self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any
    ) -> RecipeArgs:
        return parse_recipe_args(self.task_args_class, config or self.default_config, argv, overrides)

    def build_trainer(
        self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any
    ) -> tuple[RecipeTrainer, Prepared]:
        """Parse the config (YAML, then argv, then keyword overrides) and return a ready Trainer.

        The caller may run ``trainer.train()`` / ``trainer.evaluate()`` itself; ``prepared`` holds the raw and
        tokenized splits, the tokenizer and the collator.
        """
        return self.build_trainer_from_args(self.parse(config, argv, **overrides))

    def build_trainer_from_args(self, args: RecipeArgs) -> tuple[RecipeTrainer, Prepared]:
        setup_logging(args.training)
        if args.training.hub_token:
            # Trainer pickles TrainingArguments, hub_token included, into every training_args.bin; the hub client
            # reads the token from the environment just as well, and no file ever holds it.
            os.environ["HF_TOKEN"] = args.training.hub_token
            args.training.hub_token = None
        outputs.check_output_dir(args.training.output_dir, self.name, args.run.overwrite_output_dir)
        precision = resolve_precision(args.training, args.run.mixed_precision)
        if args.training.device.type == "cpu":
            args.training.dataloader_pin_memory = False  # pinning only helps host-to-GPU copies
        logger.info("Recipe %s: precision %s, device %s", self.name, precision, args.training.device)
        set_seed(args.training.seed)
        forgetting_file = args.checks.forgetting_eval_file
        forgetting_text = forgetting.read_text(forgetting_file) if forgetting_file else None  # fails before training
        if args.checks.few_shot_k is not None and not self.classifies:
            raise RecipeError(f"few_shot_k applies to classification recipes, not {self.name}")
        if args.checks.metric_names and self.metric_inputs is None:
            raise RecipeError(f"metric_names does not apply to {self.name}: it scores nothing beyond its loss")
        extra_metrics = load_metrics(args.checks.metric_names)  # the hub's absence fails before any data is read
        raw = self.load_data(args)
        leakage = self.screen_splits(raw, args)
        prepared = self.prepare(args, raw)
        prepared.leakage, prepared.forgetting_text = leakage, forgetting_text
        self.check_learnable(prepared, args)
        if extra_metrics:
            check_metrics(extra_metrics, *self.metric_example(prepared, args), self.metric_inputs)
        if args.checks.few_shot_k is not None:
            few_shot_label_words(prepared.label_names, args.checks.few_shot_label_words)
        if isinstance(args.task, GenerationArguments):
            # Saved with the model (and every checkpoint), so pipeline("text-generation") and model.generate()
            # decode as `hf-recipes generate` does.
            prepared.model.generation_config.update(**args.task.generation_config(prepared.tokenizer).to_diff_dict())
        prepared.resume_from = self.checkpoint_to_resume(args)
        if prepared.resume_from:
            outputs.check_checkpoint(prepared.resume_from, prepared.model)
        trainer = make_trainer(
            model=prepared.model,
            tokenizer=prepared.tokenizer,
            training_args=args.training,
            train_dataset=prepared.datasets["train"],
            eval_dataset=prepared.datasets["validation"],
            data_collator=prepared.data_collator,
            eval_data_collator=prepared.eval_data_collator,
            compute_metrics=prepared.compute_metrics or (mean_token_loss if self.reports_perplexity else None),
            preprocess_logits_for_metrics=prepared.preprocess_logits_for_metrics
            or (token_loss_sums if self.reports_perplexity else None),
            callbacks=early_stopping(args.run),
        )
        if trainer.is_world_process_zero():
            outputs.mark_output_dir(args.training.output_dir, self.name)
        return trainer, prepared

    def check_learnable(self, prepared: Prepared, args: RecipeArgs) -> None:
        """A split without a single target token would train on nothing (or score NaN): say which setting did it."""
        for split in ("train", "validation"):
            dataset = prepared.datasets[split]
            if len(dataset) == 0:
                raise RecipeError(f"the {split} split is empty after preparation; {self.no_targets_hint(args)}")
            if "labels" not in dataset.column_names or not isinstance(dataset[0]["labels"], list):
                continue  # one label per row (classification): every row is a target
            if not any(label != -100 for labels in dataset["labels"] for label in labels[1:]):
                raise RecipeError(f"the {split} split has no token to predict, so nothing can be learned or "
                                  f"scored; {self.no_targets_hint(args)}")

    def no_targets_hint(self, args: RecipeArgs) -> str:
        """What setting to change when a split has no target, for :meth:`check_learnable`'s error."""
        return "check the data and max_seq_length"

    def screen_splits(self, raw: DatasetDict, args: RecipeArgs) -> Leakage | None:
        """Count rows shared between train and validation/test; with --dedupe_splits, drop them from train."""
        if not (args.checks.check_leakage or args.checks.dedupe_splits):
            return None
        texts = {split: self.leakage_texts(dataset, args) for split, dataset in raw.items()}
        leakage = find_leakage(texts, self.leakage_unit)
        if args.checks.dedupe_splits:
            keep = train_rows_to_keep(texts)
            if not keep:
                raise RecipeError("--dedupe_splits removed every train row: all of them occur in validation or test")
            leakage.removed_from_train = len(raw["train"]) - len(keep)
            raw["train"] = raw["train"].select(keep)
            logger.info("Removed %d train rows that occur in validation or test", leakage.removed_from_train)
        elif leakage.leaked:
            logger.warning("%d validation/test rows also occur in train, compared by %s (see report.md; "
                           "--dedupe_splits removes them)", leakage.leaked, self.leakage_unit)
        return leakage

    def run(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any) -> dict:
        """Train, evaluate, test, save and report; return all metrics (train_*, eval_*, test_*)."""
        return self.run_from_args(self.parse(config, argv, **overrides))

    def run_from_args(self, args: RecipeArgs) -> dict:
        with outputs.removed_on_failure(args.training.output_dir, args.training.process_index == 0):
            return self.train_and_report(args)

    def train_and_report(self, args: RecipeArgs) -> dict:
        trainer, prepared = self.build_trainer_from_args(args)
        report, checks = Report(self.title), Report("checks")
        start_metrics = trainer.evaluate(metric_key_prefix="start") if self.compares_start else None
        self.before_training(trainer, prepared, args, report)
        forgetting_before = (self.forgetting_perplexity(trainer, prepared, args, fine_tuned=False)
                             if prepared.forgetting_text is not None else None)

        # Generating text before training draws from the random generators; reseed so the run trains exactly as
        # build_trainer() + train() (and each sweep trial) with the same seed does.
        set_seed(args.training.seed)
        train_result = trainer.train(resume_from_checkpoint=prepared.resume_from)
        training_log = list(trainer.state.log_history)  # the curves as trained, before any final evaluation
        train_metrics = dict(train_result.metrics)
        train_metrics["train_samples"] = len(prepared.datasets["train"])
        share = trainer.real_token_share()
        if share is not None:
            train_metrics["train_real_token_share"] = share
        clean_tokenizer_state(prepared.tokenizer)
        trainer.save_model()
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()

        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(prepared.datasets["validation"])
        if self.reports_perplexity:
            add_perplexity(eval_metrics, "eval")
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        if start_metrics:
            report.add("Validation loss before and after fine-tuning", self.start_and_end_table(
                start_metrics["start_loss"], eval_metrics["eval_loss"]))

        metrics_by_split = {"train": train_metrics, "eval": eval_metrics}
        test_output = None
        if "test" in prepared.datasets:
            test_output = trainer.predict(prepared.datasets["test"], metric_key_prefix="test")
            test_metrics = dict(test_output.metrics)
            test_metrics["test_samples"] = len(prepared.datasets["test"])
            if self.reports_perplexity:
                add_perplexity(test_metrics, "test")
            trainer.log_metrics("test", test_metrics)
            trainer.save_metrics("test", test_metrics)
            metrics_by_split["test"] = test_metrics

        scored = test_output
        if self.classifies and scored is None:  # a classifier without a test split is described on validation
            scored = trainer.predict(prepared.datasets["validation"], metric_key_prefix="eval")  # every process

        # The model is saved: from here on a failing step (a check, generations, the report) is recorded in
        # checks.json and report.md, and the run still finishes.
        found: dict[str, Any] = {}  # what the checks found, for checks.json
        failed: list[dict[str, str]] = []
        step = partial(run_step, failed)
        if prepared.forgetting_text is not None:
            forgetting_after = step("forgetting check", self.forgetting_perplexity, trainer, prepared, args, True)
            if forgetting_after is not None and forgetting_before is not None:
                checks.add("Forgetting", self.forgetting_section(args, forgetting_before, forgetting_after, found))
        if self.classifies and args.checks.classification_baselines and trainer.is_world_process_zero():
            step("classification baselines", self.add_classification_checks, trainer, prepared, args, checks, scored,
                 found)

        extra = step("task report", self.after_training, trainer, prepared, args, report, scored)
        if extra and "test" in metrics_by_split:  # e.g. scores of generated answers
            metrics_by_split["test"].update(extra)
            trainer.log_metrics("test", extra)
            trainer.save_metrics("test", metrics_by_split["test"])
        if trainer.is_world_process_zero():
            verdict = step("fit check", self.fit_check, training_log, args, found.get("baselines"))
            if verdict:
                found["fitting"] = {"verdict": verdict.kind, "lowest_eval_loss_step": verdict.best_step}
            if prepared.leakage:
                found["leakage"] = dataclasses.asdict(prepared.leakage)
                checks.sections.insert(0, (f"Data leakage (unit: {self.leakage_unit})",
                                           leakage_section(prepared.leakage)))
            output_dir = Path(args.training.output_dir)
            if args.run.report:
                step("report", self.write_outputs, trainer, prepared, args, report, metrics_by_split, checks,
                     training_log, verdict, failed)
            step("model card", write_model_card, output_dir, self, args, metrics_by_split,
                 verdict.message if verdict else None)
            if failed:
                found["failed_steps"] = failed
            (output_dir / CHECKS_FILE).write_text(json.dumps(found, indent=1, default=str) + "\n")
            task = dataclasses.asdict(args.task) if dataclasses.is_dataclass(args.task) else {}
            finished = {"recipe": self.name, "task": task, "settings": training_settings(args)}
            if isinstance(args.task, GenerationArguments):  # the settings the report's generations were made with
                finished["decoding"] = args.task.decoding_settings()
            (output_dir / RECIPE_FILE).write_text(json.dumps(finished, indent=1) + "\n")
        return {k: v for metrics in metrics_by_split.values() for k, v in metrics.items()}

    def write_outputs(self, trainer, prepared: Prepared, args: RecipeArgs, report: Report, metrics_by_split,
                      checks: Report, training_log: list[dict], verdict: FitVerdict | None,
                      failed: list[dict[str, str]]) -> None:
        output_dir = Path(args.training.output_dir)
        front = [("Metrics", metrics_table(metrics_by_split))]
        best_step = verdict.best_step if verdict and verdict.kind == "overfitting" else None
        # With load_best_model_at_end the final evaluation scores the best model again, at the last step; leave it
        # out so the curve shows the run as it went.
        curve = training_log if args.training.load_best_model_at_end else trainer.state.log_history
        if plot_loss_curve(curve, output_dir / "loss_curve.png", best_step):
            image = "![train and eval loss against step](loss_curve.png)"
            front.append(("Loss curve", image + (f"\n\n{verdict.message}" if verdict else "")))
        elif verdict:
            front.append(("Over- and underfitting", verdict.message))
        report.sections[:0] = front + checks.sections
        report.add("Run", self.run_summary(prepared, args, metrics_by_split["train"]))
        if failed:
            report.sections.insert(0, ("Steps that failed", "The model was trained and saved; these parts of the "
                                       "report are missing:\n\n" + markdown_table(failed)))
        path = report.write(output_dir)
        logger.info("Report written to %s", path)

    # ---- checks --------------------------------------------------------------------------------------
    @staticmethod
    def fit_check(training_log: list[dict], args: RecipeArgs, baselines_found: dict | None = None
                  ) -> FitVerdict | None:
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

    def starting_language_model(self, prepared: Prepared, args: RecipeArgs):
        """A classifier's starting model with its LM head (loaded once), or None and why there is none."""
        if "start_lm" not in prepared.before:
            prepared.before["start_lm"] = forgetting.starting_language_model(args.model)
        return prepared.before["start_lm"]

    def forgetting_perplexity(self, trainer, prepared: Prepared, args: RecipeArgs,
                              fine_tuned: bool) -> forgetting.Perplexity | str:
        """Perplexity of the starting or the fine-tuned model on forgetting_eval_file, or why it does not apply."""
        text, limit = prepared.forgetting_text, args.checks.forgetting_max_tokens
        if not self.classifies:
            return forgetting.text_perplexity(trainer.model, prepared.tokenizer, text, limit)
        start_lm, reason = self.starting_language_model(prepared, args)
        if start_lm is None:
            return reason
        if not fine_tuned:
            lm = start_lm.to(trainer.args.device)
            try:
                return forgetting.text_perplexity(lm, prepared.tokenizer, text, limit)
            finally:
                start_lm.to("cpu")
        lm = forgetting.backbone_with_head(trainer.model, start_lm)
        return forgetting.text_perplexity(lm, prepared.tokenizer, text, limit)

    def forgetting_section(self, args: RecipeArgs, before, after, found: dict) -> str:
        file = args.checks.forgetting_eval_file
        if isinstance(before, str) or isinstance(after, str):
            found["forgetting"] = {"applies": False, "reason": before if isinstance(before, str) else after}
            return f"Does not apply to this run: {found['forgetting']['reason']}."
        found["forgetting"] = {"applies": True, "tokens": before.tokens, "loss_before": before.loss,
                               "loss_after": after.loss, "perplexity_before": before.perplexity,
                               "perplexity_after": after.perplexity}
        how = ("the fine-tuned backbone read through the starting model's LM head" if self.classifies
               else "the fine-tuned model")
        rows = [{"model": "starting model", "loss": before.loss, "perplexity": before.perplexity},
                {"model": how, "loss": after.loss, "perplexity": after.perplexity}]
        scored = f"the first {before.tokens:,} tokens" if before.truncated else f"all {before.tokens:,} tokens"
        change = format_change(before.perplexity, after.perplexity)
        return (f"Perplexity on `{file}` ({scored}, blocks of the model context):\n\n{markdown_table(rows)}\n\n"
                f"Change: {change}. A large rise means fine-tuning overwrote what the model knew about such text.")

    def add_classification_checks(self, trainer, prepared: Prepared, args: RecipeArgs, checks: Report,
                                  scored: PredictionOutput, found: dict) -> None:
        """Label balance per split, and the fine-tuned accuracy against the majority class, TF-IDF + logistic
        regression and (when asked) few-shot prompting, all on the test split (validation without one)."""
        names, text = prepared.label_names, args.data.text_column
        labels = {split: list(prepared.datasets[split]["labels"]) for split in prepared.datasets}
        checks.add("Label balance", label_balance_table(labels, names))

        split = "test" if "test" in prepared.datasets else "validation"
        texts, y_true = list(prepared.raw[split][text]), np.asarray(labels[split])
        train_texts, train_labels = list(prepared.raw["train"][text]), labels["train"]
        y_fine_tuned = np.asarray(scored.predictions[0] if isinstance(scored.predictions, tuple)
                                  else scored.predictions).argmax(-1)
        seed = args.training.seed
        rows = [
            baselines.score_row(MAJORITY, y_true,
                                baselines.majority_class_predictions(train_labels, len(y_true)), len(names)),
            baselines.score_row("TF-IDF + logistic regression", y_true, baselines.tfidf_logistic_regression_predictions(
                train_texts, train_labels, texts, seed), len(names)),
        ]
        notes = []
        if args.checks.few_shot_k is not None:
            few_rows, note = self.few_shot_rows(trainer, prepared, args, texts, y_true, y_fine_tuned)
            rows += few_rows
            notes.append(note)
        rows.append(baselines.score_row("fine-tuned", y_true, y_fine_tuned, len(names)))
        found["baselines"] = {"split": split, "rows": rows}
        checks.add(f"Baselines on the {split} split", "\n\n".join([markdown_table(rows), *notes]))

    def few_shot_rows(self, trainer, prepared: Prepared, args: RecipeArgs, texts, y_true, y_fine_tuned):
        start_lm, reason = self.starting_language_model(prepared, args)
        if start_lm is None:
            return [], f"Few-shot baseline: does not apply ({reason})."
        options, names = args.checks, prepared.label_names
        words = few_shot_label_words(names, options.few_shot_label_words)
        rows_scored = min(len(texts), options.few_shot_max_samples or len(texts))
        texts, y_true = texts[:rows_scored], y_true[:rows_scored]
        train = prepared.raw["train"]
        train_labels = list(prepared.datasets["train"]["labels"])
        lm = start_lm.to(trainer.args.device)
        rows = []
        try:
            for k in options.few_shot_k:
                picked = baselines.pick_demonstrations(train_labels, k, args.training.seed)
                shots = [(train[i][args.data.text_column], words[train_labels[i]]) for i in picked]
                predicted = baselines.few_shot_predictions(lm, prepared.tokenizer, texts, words, shots,
                                                           options.few_shot_template,
                                                           batch_size=args.training.per_device_eval_batch_size)
                rows.append(baselines.score_row(f"starting LM, {k}-shot prompt", y_true, predicted, len(names)))
        finally:
            start_lm.to("cpu")
        if rows_scored < len(y_fine_tuned):
            rows.append(baselines.score_row(f"fine-tuned (same first {rows_scored} rows)", y_true,
                                            y_fine_tuned[:rows_scored], len(names)))
        note = (f"Few-shot: `{args.model.model_name_or_path}` as a plain language model; each label is scored by "
                f"the log-likelihood of its word ({', '.join(repr(w) for w in words)}) after the prompt; "
                f"k examples from train, classes in turn, seed {args.training.seed}.")
        return rows, note

    model_card_task: ClassVar[str | None] = None

    def row_unit(self, args: RecipeArgs) -> str:
        """What one row of the tokenized splits is, for the report."""
        return "rows"

    @staticmethod
    def checkpoint_to_resume(args: RecipeArgs) -> str | None:
        """--resume_from_checkpoint PATH, else the newest complete checkpoint of an interrupted run in output_dir
        (re-running the same command resumes), unless --overwrite_output_dir asks for a fresh start."""
        if args.training.resume_from_checkpoint:
            return str(Path(args.training.resume_from_checkpoint))
        if args.run.overwrite_output_dir:
            return None
        found = last_complete_checkpoint(args.training.output_dir)
        if found:
            logger.info("Resuming the interrupted run from %s", found)
        return found

    def start_and_end_table(self, start_loss: float, end_loss: float) -> str:
        rows = [{"model": "starting model", "loss": start_loss}, {"model": "fine-tuned", "loss": end_loss}]
        if self.reports_perplexity:
            for row in rows:
                row["perplexity"] = add_perplexity({"eval_loss": row["loss"]}, "eval")["eval_perplexity"]
        return markdown_table(rows)

    def cli_prompts(self, opts, task: dict) -> list[str]:
        """The prompts `hf-recipes generate` sends to a model this recipe trained (default: --prompt values)."""
        raise RecipeError(f"`hf-recipes generate` does not apply to {self.name} models")

    def run_summary(self, prepared: Prepared, args: RecipeArgs, train_metrics: dict) -> str:
        model = args.model.model_name_or_path or f"{args.model.model_type} from scratch ({args.model.config_overrides})"
        data = args.data.train_file or args.data.dataset_name
        lines = [
            f"- model: `{model}` ({prepared.model.num_parameters() / 1e6:.1f}M parameters)",
            f"- data: `{data}`; {self.row_unit(args)} train/validation/test: "
            + " / ".join(str(len(prepared.datasets[s])) if s in prepared.datasets else "-" for s in ("train", "validation", "test")),
            f"- precision: {'bf16' if args.training.bf16 else 'fp16' if args.training.fp16 else 'fp32'}; "
            f"batch {args.training.per_device_train_batch_size} x accumulation {args.training.gradient_accumulation_steps}"
            f" x {args.training.world_size} process(es); lr {args.training.learning_rate}; "
            f"schedule {getattr(args.training.lr_scheduler_type, 'value', args.training.lr_scheduler_type)}",
            f"- real (non-padding) share of computed training tokens: {format_share(train_metrics.get('train_real_token_share'))}",
        ]
        lines += [f"- {key}: {value}" for key, value in prepared.facts.items()]
        return "\n".join(lines)


def early_stopping(run: RunArguments) -> list[EarlyStoppingCallback]:
    if run.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(run.early_stopping_patience, run.early_stopping_threshold)]


def few_shot_label_words(label_names: list[str] | None, words: list[str] | None) -> list[str]:
    """The word each label is scored by: --few_shot_label_words, else the label names when they are words."""
    if words:
        if len(words) != len(label_names):
            raise RecipeError(f"few_shot_label_words has {len(words)} words for {len(label_names)} labels "
                              f"({', '.join(label_names)})")
        return list(words)
    if any(not name.strip() or name.strip().lstrip("-").isdigit() for name in label_names):
        raise RecipeError(f"labels {', '.join(label_names)} are not words a language model can be asked for; "
                          "give one word per label with --few_shot_label_words")
    return [name.strip() for name in label_names]


def run_step(failed: list[dict[str, str]], name: str, function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``; a failure is logged and appended to ``failed`` instead of ending the run."""
    try:
        return function(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure after training must not lose the trained model
        message = " ".join(str(err).split()) or type(err).__name__
        logger.warning("The %s failed after training (%s: %s); the run goes on without it", name,
                       type(err).__name__, message)
        failed.append({"step": name, "error": f"{type(err).__name__}: {message}"})
        return None


def format_share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"
