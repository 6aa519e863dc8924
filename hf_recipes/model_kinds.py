"""What a kind of model changes in a run, chosen by a recipe's ``kind``: a causal LM is scored by its exact mean
token loss and perplexity and compared with the starting model; a classifier is described on validation when there
is no test split and may be compared with few-shot prompting of its starting LM."""

from __future__ import annotations

from typing import Callable, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from hf_recipes.baselines import few_shot_label_words
from hf_recipes.errors import RecipeError
from hf_recipes.metrics import add_perplexity, mean_token_loss, token_loss_sums
from hf_recipes.report import markdown_table
from hf_recipes.run_folder import CAUSAL_LM, CLASSIFIER

CLASSIFICATION_ONLY = ("label_column", "classification_baselines", "few_shot_k", "few_shot_label_words",
                       "few_shot_template", "few_shot_max_samples")


class CausalLM:
    name: ClassVar[str] = CAUSAL_LM  # recipe.json's model_kind: `hf-recipes generate` takes these models
    lora_task_type: ClassVar[str] = "CAUSAL_LM"  # PEFT's TaskType
    unused_flags: ClassVar[tuple[str, ...]] = CLASSIFICATION_ONLY

    @staticmethod
    def has_target(labels: list[int]) -> bool:
        """A row teaches something: a label after the first (the model shifts them by one) is not -100."""
        after_first = labels[1:]
        return after_first.count(-100) < len(after_first)  # counted in C: a Python loop per record showed at 1M

    @staticmethod
    def holds_target(labels: pa.Array | pa.ChunkedArray) -> bool:
        """:meth:`has_target` of any row of an Arrow ``labels`` list column."""
        targets = pc.list_flatten(pc.list_slice(labels, 1))
        return len(targets) > 0 and bool(pc.any(pc.not_equal(targets, -100)).as_py())

    def check_settings(self, args, recipe_name: str) -> None:
        if args.checks.few_shot_k is not None:
            raise RecipeError(f"few_shot_k applies to classification recipes, not {recipe_name}")

    def check_prepared(self, prepared, args) -> None:
        """Nothing beyond the targets every kind checks."""

    def metric_functions(self, prepared) -> tuple[Callable, Callable]:
        return (prepared.compute_metrics or mean_token_loss,
                prepared.preprocess_logits_for_metrics or token_loss_sums)

    def add_split_metrics(self, metrics: dict[str, float], prefix: str) -> None:
        add_perplexity(metrics, prefix)

    def evaluate_start(self, trainer) -> dict[str, float]:
        """The starting model's validation metrics (prefix ``start_``), for :meth:`compare_start`."""
        return trainer.evaluate(metric_key_prefix="start")

    def compare_start(self, report, start_metrics: dict[str, float], eval_metrics: dict[str, float]) -> None:
        rows = [{"model": "starting model", "loss": start_metrics["start_loss"]},
                {"model": "fine-tuned", "loss": eval_metrics["eval_loss"]}]
        for row in rows:
            row["perplexity"] = add_perplexity({"eval_loss": row["loss"]}, "eval")["eval_perplexity"]
        report.add("Validation loss before and after fine-tuning", markdown_table(rows))

    def scored_output(self, trainer, prepared, test_output):
        """The predictions the checks and the recipe's report describe."""
        return test_output


class Classifier:
    name: ClassVar[str] = CLASSIFIER  # recipe.json's model_kind: `hf-recipes predict` takes these models
    lora_task_type: ClassVar[str] = "SEQ_CLS"  # PEFT trains the head in full as a module to save
    unused_flags: ClassVar[tuple[str, ...]] = ("fused_lm_loss",)  # a causal LM's output head

    @staticmethod
    def holds_target(labels) -> bool:
        return True  # one label per row: every row is a target

    def check_settings(self, args, recipe_name: str) -> None:
        """Few-shot prompting applies to classifiers."""

    def check_prepared(self, prepared, args) -> None:
        if args.checks.few_shot_k is not None:
            few_shot_label_words(prepared.label_names, args.checks.few_shot_label_words)

    def metric_functions(self, prepared) -> tuple[Callable | None, Callable | None]:
        return prepared.compute_metrics, prepared.preprocess_logits_for_metrics

    def add_split_metrics(self, metrics: dict[str, float], prefix: str) -> None:
        """The metrics are the recipe's own."""

    def evaluate_start(self, trainer) -> None:
        return None

    def compare_start(self, report, start_metrics, eval_metrics) -> None:
        """Not compared: a classifier's head starts untrained."""

    def scored_output(self, trainer, prepared, test_output):
        """Without a test split, a classifier is described on validation."""
        if test_output is not None:
            return test_output
        return trainer.predict(prepared.datasets["validation"], metric_key_prefix="eval")  # every process


CAUSAL_LM_KIND, CLASSIFIER_KIND = CausalLM(), Classifier()
