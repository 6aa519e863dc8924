"""What every recipe shares: parse arguments, prepare, build the Trainer, train, evaluate, test, save, report.

A recipe subclasses :class:`Recipe` and writes only ``prepare`` (data, model, collator, metrics) and, if it
has something task-specific to show, the ``before_training`` / ``after_training`` report hooks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import transformers
from datasets import DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import PredictionOutput

from hf_recipes.config import RecipeArgs, parse_recipe_args
from hf_recipes.errors import RecipeError
from hf_recipes.metrics import add_perplexity, mean_token_loss, token_loss_sums
from hf_recipes.model import is_local
from hf_recipes.report import Report, markdown_table, metrics_table, plot_loss_curve
from hf_recipes.trainer import RecipeTrainer, last_complete_checkpoint, make_trainer, resolve_precision

logger = logging.getLogger("hf_recipes")

# Which recipe made a run and its task settings (read by `hf-recipes generate`). Written last, so it also marks a
# finished run: a run killed while writing its results is resumed, not mistaken for a finished one.
RECIPE_FILE = "recipe.json"


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


def setup_logging(training_args) -> None:
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO if level <= logging.INFO or training_args.should_log else level)
    transformers.utils.logging.set_verbosity(level)


def check_output_dir(args: RecipeArgs) -> None:
    output_dir = Path(args.training.output_dir)
    if output_dir.is_file():
        raise RecipeError(f"output_dir is a file: {output_dir}")
    if (output_dir / RECIPE_FILE).exists() and not args.run.overwrite_output_dir:
        raise RecipeError(
            f"output_dir {output_dir} already holds a finished run; pass --overwrite_output_dir true "
            "or choose another --output_dir"
        )


class Recipe:
    name: ClassVar[str]
    title: ClassVar[str]
    task_args_class: ClassVar[type]
    default_config: ClassVar[Path]
    reports_perplexity: ClassVar[bool] = False
    compares_start: ClassVar[bool] = False  # evaluate the starting model too; the report shows both losses

    # ---- task-specific parts -------------------------------------------------------------------------
    def prepare(self, args: RecipeArgs) -> Prepared:
        raise NotImplementedError

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
        check_output_dir(args)
        precision = resolve_precision(args.training, args.run.mixed_precision)
        if args.training.device.type == "cpu":
            args.training.dataloader_pin_memory = False  # pinning only helps host-to-GPU copies
        logger.info("Recipe %s: precision %s, device %s", self.name, precision, args.training.device)
        set_seed(args.training.seed)
        prepared = self.prepare(args)
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
        )
        return trainer, prepared

    def run(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any) -> dict:
        """Train, evaluate, test, save and report; return all metrics (train_*, eval_*, test_*)."""
        return self.run_from_args(self.parse(config, argv, **overrides))

    def run_from_args(self, args: RecipeArgs) -> dict:
        trainer, prepared = self.build_trainer_from_args(args)
        report = Report(self.title)
        start_metrics = trainer.evaluate(metric_key_prefix="start") if self.compares_start else None
        self.before_training(trainer, prepared, args, report)

        train_result = trainer.train(resume_from_checkpoint=self.checkpoint_to_resume(args))
        train_metrics = dict(train_result.metrics)
        train_metrics["train_samples"] = len(prepared.datasets["train"])
        share = trainer.real_token_share()
        if share is not None:
            train_metrics["train_real_token_share"] = share
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

        extra = self.after_training(trainer, prepared, args, report, test_output)
        if extra and "test" in metrics_by_split:  # e.g. scores of generated answers
            metrics_by_split["test"].update(extra)
            trainer.log_metrics("test", extra)
            trainer.save_metrics("test", metrics_by_split["test"])
        if trainer.is_world_process_zero():
            if args.run.report:
                self.write_outputs(trainer, prepared, args, report, metrics_by_split)
            task = dataclasses.asdict(args.task) if dataclasses.is_dataclass(args.task) else {}
            recipe_file = Path(args.training.output_dir) / RECIPE_FILE
            recipe_file.write_text(json.dumps({"recipe": self.name, "task": task}, indent=1) + "\n")
        return {k: v for metrics in metrics_by_split.values() for k, v in metrics.items()}

    def write_outputs(self, trainer, prepared: Prepared, args: RecipeArgs, report: Report, metrics_by_split) -> None:
        output_dir = Path(args.training.output_dir)
        name = args.model.model_name_or_path
        trainer.create_model_card(
            model_name=output_dir.name,
            finetuned_from=name if name and not is_local(name) else None,
            tasks=self.model_card_task,
            dataset=args.data.dataset_name,
        )
        report.sections.insert(0, ("Metrics", metrics_table(metrics_by_split)))
        if plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png"):
            report.sections.insert(1, ("Loss curve", "![train and eval loss against step](loss_curve.png)"))
        report.add("Run", self.run_summary(prepared, args, metrics_by_split["train"]))
        path = report.write(output_dir)
        logger.info("Report written to %s", path)

    model_card_task: ClassVar[str | None] = None

    @staticmethod
    def checkpoint_to_resume(args: RecipeArgs) -> str | None:
        """--resume_from_checkpoint PATH, else the newest complete checkpoint of an interrupted run in output_dir
        (re-running the same command resumes), unless --overwrite_output_dir asks for a fresh start."""
        if args.training.resume_from_checkpoint:
            path = Path(args.training.resume_from_checkpoint)
            if not (path / "trainer_state.json").is_file():
                raise RecipeError(f"resume_from_checkpoint {path} is not a complete checkpoint folder")
            return str(path)
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
            f"- data: `{data}`; rows train/validation/test: "
            + " / ".join(str(len(prepared.datasets[s])) if s in prepared.datasets else "-" for s in ("train", "validation", "test")),
            f"- precision: {'bf16' if args.training.bf16 else 'fp16' if args.training.fp16 else 'fp32'}; "
            f"batch {args.training.per_device_train_batch_size} x accumulation {args.training.gradient_accumulation_steps}"
            f" x {args.training.world_size} process(es); lr {args.training.learning_rate}; "
            f"schedule {getattr(args.training.lr_scheduler_type, 'value', args.training.lr_scheduler_type)}",
            f"- real (non-padding) share of computed training tokens: {format_share(train_metrics.get('train_real_token_share'))}",
        ]
        lines += [f"- {key}: {value}" for key, value in prepared.facts.items()]
        return "\n".join(lines)


def load_recipe_file(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / RECIPE_FILE
    if not path.is_file():
        return {"recipe": None, "task": {}}
    return json.loads(path.read_text())


def format_share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"
