"""Summarisation: a causal LM learns to continue ``document + "\\nTL;DR: "`` with the summary; loss on the summary
only. It uses hf-recipes through its public parts only: the Recipe contract, a model kind, shared data, model and
generation helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict
from transformers import AutoModelForCausalLM

from hf_recipes.checks import FitCheck, LeakageCheck
from hf_recipes.collators import LabelPaddingCollator
from hf_recipes.data import load_splits, map_splits
from hf_recipes.generation import GenerationArguments, generate
from hf_recipes.metrics import rouge_l
from hf_recipes.model import encode, load_model, load_tokenizer, max_length
from hf_recipes.model_kinds import CAUSAL_LM_KIND
from hf_recipes.prompts import PromptFormat
from hf_recipes.recipe import Prepared, Recipe
from hf_recipes.report import markdown_table

SUMMARY_CUE = "\nTL;DR: "


@dataclass
class SummariseArguments(GenerationArguments):
    document_column: str = field(default="document", metadata={"help": "Column of the text to summarise."})
    summary_column: str = field(default="summary", metadata={"help": "Column of its summary."})
    report_examples: int = field(default=2, metadata={"help": "Test documents summarised in the report."})


def prompt(document: str) -> str:
    return document + SUMMARY_CUE


class SummariseRecipe(Recipe):
    name = "summarise"
    title = "Summarisation"
    task_args_class = SummariseArguments
    default_config = Path(__file__).parent / "summarise.yaml"
    model_card_task = "text-generation"
    leakage_unit = "document"
    metric_inputs = "generated and reference summaries"
    kind = CAUSAL_LM_KIND
    unused_flags = (*CAUSAL_LM_KIND.unused_flags, "text_column")
    checks = (LeakageCheck(), FitCheck())

    def load_data(self, args) -> DatasetDict:
        columns = (args.task.document_column, args.task.summary_column)
        return load_splits(args.data, args.model, args.training.seed, required_columns=columns,
                           text_columns=columns)

    def leakage_texts(self, dataset, args) -> list[str]:
        return list(dataset[args.task.document_column])

    def prepare(self, args, raw: DatasetDict) -> Prepared:
        task = args.task
        tokenizer = load_tokenizer(args.model)
        model = load_model(args.model, AutoModelForCausalLM, tokenizer)
        limit = max_length(tokenizer, model, args.data.max_seq_length)

        def tokenize(batch):
            prompts = encode(tokenizer, [prompt(d) for d in batch[task.document_column]])
            summaries = tokenizer(batch[task.summary_column], add_special_tokens=False)["input_ids"]
            ids = [(p + s + [tokenizer.eos_token_id])[:limit] for p, s in zip(prompts, summaries)]
            labels = [([-100] * len(p) + s + [tokenizer.eos_token_id])[:limit] for p, s in zip(prompts, summaries)]
            return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids], "labels": labels}

        datasets = map_splits(raw, tokenize, args.data, args.training, "Tokenizing")
        return Prepared(model=model, tokenizer=tokenizer, raw=raw, datasets=datasets,
                        data_collator=LabelPaddingCollator(tokenizer))

    def metric_example(self, prepared, args) -> tuple[list, list]:
        references = list(prepared.raw["test"][args.task.summary_column][:2])
        return references, references

    def after_training(self, trainer, prepared, args, report, test_output) -> dict[str, float]:
        task = args.task
        test = prepared.raw["test"].select(range(min(task.report_examples, len(prepared.raw["test"]))))
        generated = [text.strip() for text in generate(
            prepared.model, prepared.tokenizer, [prompt(d) for d in test[task.document_column]], task)]
        references = list(test[task.summary_column])
        rows = [{"document": d, "reference": r, "generated": g}
                for d, r, g in zip(test[task.document_column], references, generated)]
        report.add("Summaries of test documents", markdown_table(rows))
        return {"test_rouge_l": rouge_l(generated, references)}

    def prompt_format(self, task: SummariseArguments) -> PromptFormat:
        return PromptFormat(template="{prompt}" + SUMMARY_CUE, echo=False, missing="give --prompt: the text to summarise")


RECIPE = SummariseRecipe()
