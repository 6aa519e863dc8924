"""What a kind of model adds to the shared run flow: a causal LM is scored by its exact mean token loss and
perplexity and compared with the starting model; a classifier gets label balance, baselines and few-shot checks."""

from __future__ import annotations

from hf_recipes.baselines import ClassificationBaselines, few_shot_label_words
from hf_recipes.checks import FitCheck
from hf_recipes.metrics import add_perplexity, mean_token_loss, token_loss_sums
from hf_recipes.recipe import Recipe
from hf_recipes.report import markdown_table


CLASSIFICATION_ONLY = ("label_column", "classification_baselines", "few_shot_k", "few_shot_label_words",
                       "few_shot_template", "few_shot_max_samples")


class CausalLMRecipe(Recipe):
    unused_flags = CLASSIFICATION_ONLY

    def metric_functions(self, prepared):
        return (prepared.compute_metrics or mean_token_loss,
                prepared.preprocess_logits_for_metrics or token_loss_sums)

    def add_split_metrics(self, metrics: dict[str, float], prefix: str) -> None:
        add_perplexity(metrics, prefix)

    def evaluate_start(self, trainer) -> dict[str, float]:
        return trainer.evaluate(metric_key_prefix="start")

    def compare_start(self, report, start_metrics: dict[str, float], eval_metrics: dict[str, float]) -> None:
        rows = [{"model": "starting model", "loss": start_metrics["start_loss"]},
                {"model": "fine-tuned", "loss": eval_metrics["eval_loss"]}]
        for row in rows:
            row["perplexity"] = add_perplexity({"eval_loss": row["loss"]}, "eval")["eval_perplexity"]
        report.add("Validation loss before and after fine-tuning", markdown_table(rows))


class ClassifierRecipe(Recipe):
    checks = (*Recipe.checks[:-1], ClassificationBaselines(), FitCheck())  # the fit check reads the baselines
    unused_flags = ("fused_lm_loss",)  # a causal LM's output head

    def check_settings(self, args) -> None:
        """Few-shot prompting applies to classifiers."""

    def check_prepared(self, prepared, args) -> None:
        super().check_prepared(prepared, args)
        if args.checks.few_shot_k is not None:
            few_shot_label_words(prepared.label_names, args.checks.few_shot_label_words)

    def scored_output(self, trainer, prepared, test_output):
        """Without a test split, a classifier is described on validation."""
        if test_output is not None:
            return test_output
        return trainer.predict(prepared.datasets["validation"], metric_key_prefix="eval")  # every process
