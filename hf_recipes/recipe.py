"""The task contract: what a recipe states about its task. A recipe subclasses :class:`Recipe` and writes
``load_data`` and ``prepare``, its metrics, its own report sections in ``before_training`` / ``after_training``,
the :class:`~hf_recipes.checks.Check` objects its ``checks`` lists and its ``kind`` of model
(hf_recipes.model_kinds). The run itself, the same for every recipe, is hf_recipes.run; ``parse``, ``run`` and
``build_trainer`` hand the recipe to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

from datasets import DatasetDict
from transformers.trainer_utils import PredictionOutput

from hf_recipes import run as run_lifecycle
from hf_recipes.checks import Check
from hf_recipes.config import RecipeArgs, parse_recipe_args
from hf_recipes.data import iter_values
from hf_recipes.model_card import CardExample
from hf_recipes.prompts import PromptFormat
from hf_recipes.report import Report
from hf_recipes.run import Prepared  # noqa: F401 - what prepare() returns, imported from here by recipes
from hf_recipes.trainer import RecipeTrainer


class Recipe:
    name: ClassVar[str]
    title: ClassVar[str]
    task_args_class: ClassVar[type]
    default_config: ClassVar[Path]
    leakage_unit: ClassVar[str] = "text"  # what one row is, for the leakage check
    metric_inputs: ClassVar[str | None] = None  # what --metric_names metrics score; None: nothing beyond the loss
    model_card_task: ClassVar[str | None] = None
    unused_flags: ClassVar[tuple[str, ...]] = ()  # settings the recipe never reads: left out of its --help
    kind: ClassVar[Any]  # what its kind of model changes in a run: model_kinds.CAUSAL_LM_KIND or CLASSIFIER_KIND
    # Run after training in this order, each a failed step of its own when it fails.
    checks: ClassVar[tuple[Check, ...]]

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

    def leakage_texts(self, dataset, args: RecipeArgs) -> Iterable[str]:
        """The text that identifies each row when looking for duplicates across splits, row by row."""
        return (text or "" for text in iter_values(dataset, args.data.text_column))

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
        """What setting to change when a split has no target (the error says it)."""
        return "check the data and max_seq_length"

    def prompt_format(self, task) -> PromptFormat | None:
        """How a model this recipe trained is prompted (saved in recipe.json for `hf-recipes generate`); None: it
        generates nothing."""
        return None

    def model_card_example(self, args: RecipeArgs) -> CardExample:
        """How the model card says to prompt a model this recipe trained (its snippet's ``generator`` or
        ``classifier`` pipeline), and what the model is for."""
        call = ('print(classifier("An example text."))' if self.model_card_task == "text-classification"
                else 'print(generator("An example text.")[0]["generated_text"])')
        return CardExample(prompt_format="Give the model text as it saw in training.", code=call,
                           intended_use=f"{self.title}, as trained by the hf-recipes `{self.name}` recipe.")

    # ---- the run (hf_recipes.run) ----------------------------------------------------------------------
    def parse(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any
              ) -> RecipeArgs:
        return parse_recipe_args(self.task_args_class, config or self.default_config, argv, overrides)

    def build_trainer(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any
                      ) -> tuple[RecipeTrainer, Prepared]:
        """Parse the config (YAML, then argv, then keyword overrides) and return a ready Trainer.

        The caller may run ``trainer.train()`` / ``trainer.evaluate()`` itself; ``prepared`` holds the raw and
        tokenized splits, the tokenizer and the collator.
        """
        return run_lifecycle.build_trainer(self, self.parse(config, argv, **overrides))

    def build_trainer_from_args(self, args: RecipeArgs) -> tuple[RecipeTrainer, Prepared]:
        return run_lifecycle.build_trainer(self, args)

    def run(self, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **overrides: Any) -> dict:
        """Train, evaluate, test, save and report; return all metrics (train_*, eval_*, test_*)."""
        return run_lifecycle.run(self, self.parse(config, argv, **overrides))

    def run_from_args(self, args: RecipeArgs) -> dict:
        return run_lifecycle.run(self, args)

    def screen_splits(self, raw: DatasetDict, args: RecipeArgs):
        return run_lifecycle.screen(self, raw, args)

    @staticmethod
    def checkpoint_to_resume(args: RecipeArgs) -> str | None:
        return run_lifecycle.checkpoint_to_resume(args)
