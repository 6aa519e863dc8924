"""What every recipe shares: parse arguments, load and screen the data, prepare, build the Trainer, train,
evaluate, test, check, save, report. A recipe subclasses :class:`Recipe` (or a kind of it in kinds.py: a causal LM,
a classifier) and writes only ``load_data`` and ``prepare``, and its own report sections in ``before_training`` /
``after_training``; the checks it runs are the :class:`~hf_recipes.checks.Check` objects its ``checks`` lists.
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

import transformers
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import PredictionOutput

from hf_recipes import adapters, forgetting, outputs, upstream
from hf_recipes.checks import Check, FitCheck, Leakage, LeakageCheck, RunState, leakage_sample, screen_splits
from hf_recipes.config import RecipeArgs, parse_recipe_args
from hf_recipes.data import check_targets, column_values, rows_of
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments
from hf_recipes.metrics import check_metrics, load_metrics
from hf_recipes.model import clean_tokenizer_state
from hf_recipes.model_card import (CardExample, TrainingProgress, push_finished_run, training_settings,
                                  write_model_card)
from hf_recipes.predict import RECIPE_FILE, load_recipe_file  # noqa: F401 - load_recipe_file re-exported
from hf_recipes.report import Report, write_report
from hf_recipes.trainer import RecipeTrainer, last_complete_checkpoint, make_trainer, resolve_precision

logger = logging.getLogger("hf_recipes")

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
    leakage_unit: ClassVar[str] = "text"  # what one row is, for the leakage check
    metric_inputs: ClassVar[str | None] = None  # what --metric_names metrics score; None: nothing beyond the loss
    model_card_task: ClassVar[str | None] = None
    unused_flags: ClassVar[tuple[str, ...]] = ()  # settings the recipe never reads: left out of its --help
    # Run after training in this order, each a failed step of its own when it fails.
    checks: ClassVar[tuple[Check, ...]] = (LeakageCheck(), forgetting.ForgettingCheck(), FitCheck())

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
        return [text or "" for text in column_values(dataset, args.data.text_column)]

    def before_training(self, trainer: RecipeTrainer, prepared: Prepared, args: RecipeArgs, report: Report) -> None:
        """Measure the starting model (e.g. perplexity, generations) for the report."""

    def after_training(self, trainer: RecipeTrainer, prepared: Prepared, args: RecipeArgs, report: Report,
                       test_output: PredictionOutput | None) -> dict[str, float] | None:
        """Task-specific report sections from the trained model (e.g. confusion matrix, generations).
        ``test_output`` holds the predictions on the test split; a classifier without one gets the validation
        split's (metrics prefixed ``eval_``).

        May return extra ``test_*`` metrics (e.g. scores of generated answers); they join the test metrics files.
        """

    def row_unit(self, args: RecipeArgs) -> str:
        """What one row of the tokenized splits is, for the report."""
        return "rows"

    def no_targets_hint(self, args: RecipeArgs) -> str:
        """What setting to change when a split has no target, for :meth:`check_prepared`'s error."""
        return "check the data and max_seq_length"

    def cli_prompts(self, opts, task: dict) -> list[str]:
        """The prompts `hf-recipes generate` sends to a model this recipe trained (default: --prompt values)."""
        raise RecipeError(f"`hf-recipes generate` does not apply to {self.name} models")

    def model_card_example(self, args: RecipeArgs) -> CardExample:
        """How the model card says to prompt a model this recipe trained (its snippet's ``generator`` or
        ``classifier`` pipeline), and what the model is for."""
        call = ('print(classifier("An example text."))' if self.model_card_task == "text-classification"
                else 'print(generator("An example text.")[0]["generated_text"])')
        return CardExample(prompt_format="Give the model text as it saw in training.", code=call,
                           intended_use=f"{self.title}, as trained by the hf-recipes `{self.name}` recipe.")

    def cli_add_bos(self, task: dict) -> bool:
        """Whether `hf-recipes generate` starts the prompts with the tokenizer's BOS (not when they hold their own)."""
        return True

    # ---- what a kind of model changes (kinds.py) -----------------------------------------------------
    def check_settings(self, args: RecipeArgs) -> None:
        if args.checks.few_shot_k is not None:
            raise RecipeError(f"few_shot_k applies to classification recipes, not {self.name}")

    def metric_functions(self, prepared: Prepared) -> tuple[Callable | None, Callable | None]:
        return prepared.compute_metrics, prepared.preprocess_logits_for_metrics

    def add_split_metrics(self, metrics: dict[str, float], prefix: str) -> None:
        """Metrics derived from a split's evaluation (e.g. perplexity)."""

    def evaluate_start(self, trainer: RecipeTrainer) -> dict[str, float] | None:
        """The starting model's validation metrics, when the report compares them (prefix ``start_``)."""

    def compare_start(self, report: Report, start_metrics: dict, eval_metrics: dict) -> None:
        """The report section comparing the starting and the fine-tuned model's evaluation."""

    def scored_output(self, trainer: RecipeTrainer, prepared: Prepared, test_output):
        """The predictions the checks and ``after_training`` describe."""
        return test_output

    def check_prepared(self, prepared: Prepared, args: RecipeArgs) -> None:
        check_targets(prepared.datasets, self.no_targets_hint(args))

    # ---- shared flow ---------------------------------------------------------------------------------
    def parse(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any
              ) -> RecipeArgs:
        return parse_recipe_args(self.task_args_class, config or self.default_config, argv, overrides)

    def build_trainer(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any
                      ) -> tuple[RecipeTrainer, Prepared]:
        """Parse the config (YAML, then argv, then keyword overrides) and return a ready Trainer.

        The caller may run ``trainer.train()`` / ``trainer.evaluate()`` itself; ``prepared`` holds the raw and
        tokenized splits, the tokenizer and the collator.
        """
        return self.build_trainer_from_args(self.parse(config, argv, **overrides))

    def build_trainer_from_args(self, args: RecipeArgs) -> tuple[RecipeTrainer, Prepared]:
        setup_logging(args.training)
        for note in args.renamed:
            logger.info(note)
        if args.training.hub_token:
            # Trainer pickles TrainingArguments into every training_args.bin; the hub client reads HF_TOKEN as well.
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
        self.check_settings(args)
        if args.checks.metric_names and self.metric_inputs is None:
            raise RecipeError(f"metric_names does not apply to {self.name}: it scores nothing beyond its loss")
        extra_metrics = load_metrics(args.checks.metric_names)  # the hub's absence fails before any data is read
        raw = self.load_data(args)
        leakage = self.screen_splits(raw, args)
        args.model.quantization_config = adapters.quantization_config(args.peft)
        prepared = self.prepare(args, raw)
        if isinstance(args.task, GenerationArguments):
            # The run's decoding replaces the base's whole generation config (sampling defaults, n-gram blocking,
            # penalties would otherwise fill every field the run leaves unset); it is saved with the model and
            # checkpoints, so pipeline("text-generation") decodes as `hf-recipes generate` and the report say.
            prepared.model.generation_config = args.task.generation_config(prepared.tokenizer)
            prepared.model.generation_config.validate(strict=True)  # as saving will, but before training
        if args.peft.use_peft:
            prepared.model = adapters.add_adapter(prepared.model, args)
            prepared.facts.update(adapters.facts(prepared.model, args.peft))
        prepared.leakage, prepared.forgetting_text = leakage, forgetting_text
        self.check_prepared(prepared, args)
        if extra_metrics:
            check_metrics(extra_metrics, *self.metric_example(prepared, args), self.metric_inputs)
        prepared.resume_from = self.checkpoint_to_resume(args)
        if prepared.resume_from:
            outputs.check_checkpoint(prepared.resume_from, prepared.model)
        compute_metrics, preprocess_logits = self.metric_functions(prepared)
        trainer = make_trainer(
            model=prepared.model, tokenizer=prepared.tokenizer, training_args=args.training,
            train_dataset=prepared.datasets["train"], eval_dataset=prepared.datasets["validation"],
            data_collator=prepared.data_collator, eval_data_collator=prepared.eval_data_collator,
            fused_lm_loss=args.run.fused_lm_loss,
            compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits,
            callbacks=[EarlyStoppingCallback(args.run.early_stopping_patience, args.run.early_stopping_threshold)]
            if args.run.early_stopping_patience is not None else [],
        )
        if trainer.is_world_process_zero():
            outputs.mark_output_dir(args.training.output_dir, self.name)
        return trainer, prepared

    def screen_splits(self, raw: DatasetDict, args: RecipeArgs) -> Leakage | None:
        """Count rows shared between train and validation/test; with --dedupe_splits, drop them from train."""
        if not (args.checks.check_leakage or args.checks.dedupe_splits):
            return None
        texts = {split: self.leakage_texts(dataset, args) for split, dataset in leakage_sample(raw).items()}
        return screen_splits(raw, texts, self.leakage_unit, args.checks.dedupe_splits)

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

    def run(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any) -> dict:
        """Train, evaluate, test, save and report; return all metrics (train_*, eval_*, test_*)."""
        return self.run_from_args(self.parse(config, argv, **overrides))

    def run_from_args(self, args: RecipeArgs) -> dict:
        with outputs.removed_on_failure(args.training.output_dir, args.training.process_index == 0):
            return self.train_and_report(args)

    def train_and_report(self, args: RecipeArgs) -> dict:
        trainer, prepared = self.build_trainer_from_args(args)
        report, run = Report(self.title), RunState(self, args, trainer, prepared)
        checks = [check for check in self.checks if check.applies(run)]
        start_metrics = self.evaluate_start(trainer)
        self.before_training(trainer, prepared, args, report)
        for check in checks:
            check.before_training(run)
        # Generating text before training draws from the random generators; reseed so the run trains exactly as
        # build_trainer() + train() (and each sweep trial) with the same seed does.
        set_seed(args.training.seed)
        metrics = {"train": self.train(trainer, prepared, run)}
        metrics["eval"] = self.save_split_metrics(trainer, "eval", trainer.evaluate(), prepared.datasets["validation"])
        if start_metrics:
            self.compare_start(report, start_metrics, metrics["eval"])
        test_output = None
        if "test" in prepared.datasets:
            test_output = trainer.predict(prepared.datasets["test"], metric_key_prefix="test")
            metrics["test"] = self.save_split_metrics(trainer, "test", test_output.metrics, prepared.datasets["test"])
        run.scored = self.scored_output(trainer, prepared, test_output)

        # The model is saved: from here on a failing step (a check, generations, the report) is recorded in
        # checks.json and report.md, and the run still finishes.
        step = partial(run_step, run.failed)
        for check in checks:
            if check.every_process or trainer.is_world_process_zero():
                step(check.name, check.after_training, run)
        extra = step("task report", self.after_training, trainer, prepared, args, report, run.scored)
        if extra and "test" in metrics:  # e.g. scores of generated answers
            metrics["test"].update(extra)
            trainer.log_metrics("test", extra)
            trainer.save_metrics("test", metrics["test"])
        if trainer.is_world_process_zero():
            self.write_results(run, report, metrics)
        return {k: v for split_metrics in metrics.values() for k, v in split_metrics.items()}

    def train(self, trainer: RecipeTrainer, prepared: Prepared, run: RunState) -> dict[str, float]:
        """Train (resuming when there is a checkpoint) and save the model, its state and train metrics."""
        # Read before training: by its end, save_total_limit may have removed the checkpoint
        resumed_at = outputs.checkpoint_step(prepared.resume_from) if prepared.resume_from else None
        train_result = trainer.train(resume_from_checkpoint=prepared.resume_from)
        run.training_log = list(trainer.state.log_history)  # the curves as trained, before any final evaluation
        metrics = {**train_result.metrics, "train_samples": rows_of(prepared.datasets["train"])}
        metrics = {key: value for key, value in metrics.items() if value is not None}  # streamed: rows unknown
        if resumed_at is not None:
            metrics.update(train_loss_of_resumed_run(trainer.state.log_history, resumed_at, trainer.state.global_step,
                                                     metrics["train_loss"]))
        share = trainer.real_token_share()
        if share is not None:
            metrics["train_real_token_share"] = share
        clean_tokenizer_state(prepared.tokenizer)
        # Not Trainer's push of a half-written folder with its own card (and a failed upload would end the run): the
        # finished folder is uploaded once, after everything is written (write_results).
        trainer.save_model(_internal_call=True)
        if adapters.is_adapter(prepared.model) and trainer.is_world_process_zero():
            # The adapter is saved: a failure here is recorded, and the run still ends with its metrics and recipe.json
            run_step(run.failed, "model files beside the adapter", adapters.save_model_files, prepared.model,
                     trainer.args.output_dir)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        return metrics

    def save_split_metrics(self, trainer: RecipeTrainer, prefix: str, metrics: dict, dataset) -> dict[str, float]:
        metrics = {**metrics, f"{prefix}_samples": len(dataset)}
        self.add_split_metrics(metrics, prefix)
        trainer.log_metrics(prefix, metrics)
        trainer.save_metrics(prefix, metrics)
        return metrics

    def write_results(self, run: RunState, report: Report, metrics: dict[str, dict[str, float]]) -> None:
        """report.md, the model card, checks.json and, last, recipe.json (which marks the run finished)."""
        args, step = run.args, partial(run_step, run.failed)
        output_dir = Path(args.training.output_dir)
        if args.run.report:
            step("report", write_report, run, report, metrics)
        trainer = run.trainer
        step("model card", write_model_card, output_dir, self, args, metrics,
             run.verdict.message if run.verdict else None,
             TrainingProgress.of(trainer, args.run.early_stopping_patience is not None),
             trainer.hub_model_id if args.training.push_to_hub else None)
        if run.failed:
            run.found["failed_steps"] = run.failed
        if args.peft.merge_adapter:
            step("merged model", adapters.save_merged, output_dir, type(run.prepared.model.get_base_model()),
                 run.prepared.tokenizer)
        (output_dir / CHECKS_FILE).write_text(json.dumps(run.found, indent=1, default=str) + "\n")
        task = dataclasses.asdict(args.task) if dataclasses.is_dataclass(args.task) else {}
        finished = {"recipe": self.name, "task": task, "settings": training_settings(args)}
        if isinstance(args.task, GenerationArguments):  # the settings the report's generations were made with
            finished["decoding"] = args.task.decoding_settings()
        for folder in (output_dir / adapters.MERGED_DIR, output_dir):  # merged/ is prompted as the run was trained
            if folder.is_dir():
                (folder / RECIPE_FILE).write_text(json.dumps(finished, indent=1) + "\n")
        if args.training.push_to_hub:  # the finished folder, once; a failed upload leaves the run finished here
            step("push to hub", push_finished_run, output_dir, trainer, self.name)


def train_loss_of_resumed_run(log_history: list[dict], resumed_at: int, global_step: int,
                              loss_since_resume: float) -> dict[str, float]:
    """After a resume, Trainer's ``train_loss`` is the mean over the steps since the resume only. The steps before
    are in the log: each logged loss is the mean over the steps since the log before it. Where those logs reach the
    resume step, ``train_loss`` becomes the whole run's mean and the figure since the resume is kept beside it;
    otherwise ``train_loss_from_step`` says which steps it covers."""
    total, logged_to = 0.0, 0
    for entry in log_history:
        if "loss" in entry and logged_to < entry["step"] <= resumed_at:
            total, logged_to = total + entry["loss"] * (entry["step"] - logged_to), entry["step"]
    if logged_to != resumed_at:
        return {"train_loss_from_step": resumed_at + 1}
    whole = (total + loss_since_resume * (global_step - resumed_at)) / global_step
    return {"train_loss": whole, "train_loss_since_resume": loss_since_resume}


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
