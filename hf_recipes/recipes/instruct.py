"""Instruction tuning: GPT-2 (GPT2LMHeadModel) learns to answer Alpaca-style prompts; loss on responses only.

Python API::

    from hf_recipes.recipes import instruct
    metrics = instruct.run(instruct.demo_config)
    instruct.generate("runs/demo/instruct", "Name a day of the weekend.")
    instruct.generate("runs/demo/instruct", "Rewrite the sentence in passive voice.", input="The cat ate the fish.")
    # a run trained with prompt_format chat also takes a conversation
    instruct.generate("runs/chat", messages=[{"role": "user", "content": "Name a day of the weekend."}])
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Iterable, Sequence

from accelerate.utils import gather_object
from datasets import DatasetDict, IterableDataset, Value
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

from hf_recipes.chat import (answered, chat_examples, from_sharegpt, generation_prompt, is_sharegpt, split_last_answer,
                             transcript, use_chat_template)
from hf_recipes.collators import LabelPaddingCollator
from hf_recipes.config import RecipeArgs, check_template
from hf_recipes.data import (CHECK_BATCH_ROWS, STREAMED_CHECK_ROWS, as_batch, check_columns, count_true, drop_empty,
                             drop_rows, head, iter_values, load_splits, load_streaming, map_splits, message_problem)
from hf_recipes.errors import RecipeError
from hf_recipes.generation import AnswerArguments, generate as generate_text, load_causal_lm, settings_of_run
from hf_recipes.metrics import RUN_KEYS, exact_match, extra_scores, load_metrics, rouge_l
from hf_recipes.model import encode, keep_packed_sequences_apart, load_model, load_tokenizer, max_length
from hf_recipes.run_folder import load_recipe_file
from hf_recipes.checks import FitCheck, LeakageCheck
from hf_recipes.forgetting import ForgettingCheck
from hf_recipes.model_kinds import CAUSAL_LM_KIND
from hf_recipes.judge import judge_scores
from hf_recipes.model_card import CardExample
from hf_recipes.prompts import ALPACA_INPUT, ALPACA_PROMPT, PromptFormat, chat_template, render_prompt, user_message
from hf_recipes.recipe import Prepared, Recipe
from hf_recipes.report import markdown_table, per_split

HERE = files(__package__)
logger = logging.getLogger("hf_recipes")

GENERATIONS_FILE = "test_generations.jsonl"
PROMPT_FORMATS = ("auto", "alpaca", "chat", "plain")
# Record layouts (dataset_format), told apart by their columns: Alpaca's and the ones TRL's SFTTrainer reads.
INSTRUCTION, PROMPT_COMPLETION, CONVERSATIONAL_PC = "instruction", "prompt-completion", "conversational prompt-completion"
MESSAGES, SHAREGPT = "messages", "ShareGPT conversations"
CONVERSATION_COLUMNS = ("messages", "conversations")  # found without messages_column, in this order


@dataclass
class InstructArguments(AnswerArguments):
    prompt_format: str = field(
        default="auto",
        metadata={"help": "auto: from the columns (messages or ShareGPT conversations: chat; prompt/completion: plain, "
                          "or chat when they hold messages; instruction/output: alpaca). alpaca: prompt_template / "
                          "input_template, then the response and EOS. plain: the prompt as given, then the "
                          "completion and EOS. chat: conversations rendered by the tokenizer's chat template, loss on "
                          "the assistant turns; a tokenizer without a template gets ChatML (<|im_start|> and "
                          "<|im_end|> added as special tokens, <|im_end|> as EOS)."},
    )
    messages_column: str | None = field(
        default=None,
        metadata={"help": "The column of conversations: lists of {role, content} messages (roles system / user / "
                          "assistant) or ShareGPT's {from, value} turns (human / gpt / system). Unset: a 'messages' or "
                          "'conversations' column when there is one."},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt (TRL's format)."})
    completion_column: str = field(
        default="completion", metadata={"help": "Column holding the completion, the only target (TRL's format)."}
    )
    prompt_template: str = field(
        default=ALPACA_PROMPT,
        metadata={"help": "Prompt before the response; holds {instruction} and {input_section}."},
    )
    input_template: str = field(
        default=ALPACA_INPUT,
        metadata={"help": "The {input_section} when a record has a non-empty input; holds {input}."},
    )
    instruction_column: str = field(default="instruction", metadata={"help": "Column holding the instruction."})
    input_column: str = field(default="input", metadata={"help": "Column holding the optional input."})
    output_column: str = field(default="output", metadata={"help": "Column holding the reference response."})
    train_on_inputs: bool = field(
        default=False, metadata={"help": "Also train on prompt tokens (default: loss on response tokens only)."}
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Concatenate each batch into one row with restarting position ids (no padding at all) "
                          "instead of padding to the longest example."},
    )
    test_split_percentage: float = field(
        default=10, metadata={"help": "Percent of records carved out as test when there is no test split."}
    )
    report_examples: int = field(
        default=5, metadata={"help": "Test records shown in the report with the starting and fine-tuned answers."}
    )
    judge_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible endpoint for LLM-judge scores, e.g. http://localhost:11434/v1 "
                          "(Ollama). Off when unset."},
    )
    judge_model: str = field(default="llama3", metadata={"help": "Model name the judge endpoint serves."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the judge's API key, if any."}
    )
    # Not a flag: the layout the records were read as (one of the layouts above), set when the data is read.
    dataset_format: str = field(default="", init=False)

    def __post_init__(self):
        super().__post_init__()
        check_template(self.prompt_template, "prompt_template", {"instruction", "input_section"})
        check_template(self.input_template, "input_template", {"input"})
        if self.prompt_format not in PROMPT_FORMATS:
            raise RecipeError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got '{self.prompt_format}'")
        if self.report_examples < 0:
            raise RecipeError(f"report_examples must be 0 or more, got {self.report_examples}")
        if self.messages_column and self.prompt_format not in ("auto", "chat"):
            raise RecipeError("messages_column needs prompt_format chat or auto (the alpaca format has no conversations)")


def role_and_content(messages) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages or []]


def conversations(records, task: InstructArguments) -> list[list[dict[str, str]]]:
    """Each record (a batch or a Dataset) as messages: its ``messages_column`` (role and content of each message
    only), its prompt messages then its completion messages, or a user turn (the prompt, or the instruction and
    input) and an assistant turn (the completion or output)."""
    records = as_batch(records)
    if task.messages_column:
        return [role_and_content(messages) for messages in records[task.messages_column]]
    if task.dataset_format == CONVERSATIONAL_PC:
        return [role_and_content(prompt) + role_and_content(completion)
                for prompt, completion in zip(records[task.prompt_column], records[task.completion_column])]
    if task.dataset_format == PROMPT_COMPLETION:
        users, answers = records[task.prompt_column], records[task.completion_column]
    else:
        users = [user_message(i, x) for i, x in zip(records[task.instruction_column], records[task.input_column])]
        answers = records[task.output_column]
    return [[{"role": "user", "content": u}, {"role": "assistant", "content": a or ""}] for u, a in zip(users, answers)]


def first_targets(records, task: InstructArguments) -> list[int] | None:
    """Conversational prompt-completion: the index of each record's first completion message (the prompt's own
    assistant turns are context, not targets, as in TRL); None: every assistant turn is a target."""
    if task.dataset_format != CONVERSATIONAL_PC:
        return None
    return [len(prompt or []) for prompt in records[task.prompt_column]]


def detect_format(train, task: InstructArguments) -> str:
    """The layout of the records from the train split's columns (see dataset_format); resolves prompt_format auto
    and an unset messages_column to what the layout needs."""
    columns = train.column_names
    conversation = task.messages_column or next((c for c in CONVERSATION_COLUMNS if c in columns), None)
    if conversation and task.prompt_format in ("auto", "chat"):
        task.messages_column, task.prompt_format = conversation, "chat"
        return SHAREGPT if conversation in columns and is_sharegpt(train[:20][conversation]) else MESSAGES
    if {task.prompt_column, task.completion_column} <= set(columns) and task.prompt_format != "alpaca":
        if isinstance(train.features[task.prompt_column], Value):
            task.prompt_format = "plain" if task.prompt_format == "auto" else task.prompt_format
            return PROMPT_COMPLETION
        if task.prompt_format == "plain":
            raise RecipeError(f"prompt_format plain takes text prompts, but '{task.prompt_column}' holds messages "
                              "(conversational prompt-completion): use prompt_format chat or auto")
        task.prompt_format = "chat"
        return CONVERSATIONAL_PC
    if task.prompt_format == "plain":
        raise RecipeError(f"prompt_format plain needs '{task.prompt_column}' and '{task.completion_column}' columns; "
                          f"columns found: {', '.join(columns)}")
    if task.prompt_format == "auto" and not {task.instruction_column, task.output_column} & set(columns):
        halves = [task.prompt_column, task.completion_column]
        if set(halves) & set(columns):  # half of a prompt-completion record
            missing = next(c for c in halves if c not in columns)
            raise RecipeError(f"column '{missing}' not found in the train data; columns found: {', '.join(columns)}")
        if "text" in columns:
            raise RecipeError("these records are plain text (a 'text' column, TRL's language-modelling format): "
                              "train on them with the lyrics recipe (hf-recipes train lyrics --train_file ...)")
        raise RecipeError(f"cannot tell the records' format from their columns ({', '.join(columns)}): instruct reads "
                          "instruction/input/output (Alpaca), prompt/completion (TRL), messages, or ShareGPT "
                          "conversations; name yours with --instruction_column/--output_column, "
                          "--prompt_column/--completion_column or --messages_column")
    task.prompt_format = "alpaca" if task.prompt_format == "auto" else task.prompt_format
    return INSTRUCTION


def build_example(prompt_ids: list[int], response_ids: list[int], eos: int, train_on_inputs: bool):
    """Input ids = prompt + response + EOS. Labels are -100 on the prompt unless ``train_on_inputs``; the response
    and its EOS are always targets."""
    prompt_labels = prompt_ids if train_on_inputs else [-100] * len(prompt_ids)
    return prompt_ids + response_ids + [eos], prompt_labels + response_ids + [eos]


def cut_examples(examples: list[tuple[list[int], list[int]]], limit: int) -> dict[str, list]:
    """The examples cut at ``limit`` tokens, with whether each was cut and still has a target."""
    return {
        "input_ids": [ids[:limit] for ids, _ in examples],
        "labels": [labels[:limit] for _, labels in examples],
        "truncated": [len(ids) > limit for ids, _ in examples],
        "has_target": [CAUSAL_LM_KIND.has_target(labels[:limit]) for _, labels in examples],
    }


def add_missing_inputs(raw, task: InstructArguments) -> DatasetDict:
    """A split without the input column has no inputs."""
    for split in list(raw):
        if task.input_column not in raw[split].column_names:
            raw[split] = raw[split].add_column(task.input_column, [""] * len(raw[split]))
    return raw


def shortest_prompt(tokenizer, task: InstructArguments) -> int:
    """Tokens of the prompt around an empty instruction (chat: an empty user turn and the assistant's opening)."""
    if task.prompt_format == "chat":
        text = generation_prompt(tokenizer, [{"role": "user", "content": ""}])
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return len(encode(tokenizer, [render_prompt("", "", task)])[0])


def drop_incomplete_records(raw, task: InstructArguments) -> dict[str, int]:
    """Records without an instruction or an output (a prompt or a completion; a conversation without an assistant
    answer) teach nothing (real Alpaca data has a few): drop and count them per split."""
    answers = task.messages_column or (task.completion_column if task.dataset_format == CONVERSATIONAL_PC else None)
    if answers:
        return drop_rows(raw, answers, answered, f"without an assistant answer in '{answers}'")
    before = {split: len(dataset) for split, dataset in raw.items()}
    asked, answered_by = ((task.prompt_column, task.completion_column) if task.dataset_format == PROMPT_COMPLETION
                          else (task.instruction_column, task.output_column))
    for column in (asked, answered_by):
        drop_empty(raw, column)
    return {split: before[split] - len(dataset) for split, dataset in raw.items()}


def stream_records(args: RecipeArgs) -> DatasetDict:
    """``--streaming true``: validation and test held (see load_streaming) and read by read_records, with the head of
    the train stream, whose layout decides the stream's; the stream is read the same way as it goes, its records
    without an answer (see drop_incomplete_records) left out."""
    task = args.task
    raw = load_streaming(args.data, args.model, args.training, args.checks.dedupe_splits, with_test=True)
    stream, train_head = raw["train"], head(raw["train"], STREAMED_CHECK_ROWS)
    held = read_records(args, DatasetDict({"train": train_head, "validation": raw["validation"], "test": raw["test"]}))
    if task.dataset_format == SHAREGPT:
        column = task.messages_column
        stream = stream.map(lambda batch: {column: [from_sharegpt(c) for c in batch[column]]}, batched=True)
    answers = task.messages_column or (task.completion_column if task.dataset_format == CONVERSATIONAL_PC else None)
    if answers:
        stream = stream.filter(lambda record: answered(record[answers]))
    else:
        if task.dataset_format != PROMPT_COMPLETION and task.input_column not in train_head.column_names:
            stream = stream.map(lambda record: {task.input_column: ""})
        asked, answered_by = ((task.prompt_column, task.completion_column) if task.dataset_format == PROMPT_COMPLETION
                              else (task.instruction_column, task.output_column))
        stream = stream.filter(lambda record: all(isinstance(record[c], str) and record[c].strip()
                                                  for c in (asked, answered_by)))
    return DatasetDict({"train": stream, "validation": held["validation"], "test": held["test"]})


def read_records(args: RecipeArgs, raw: DatasetDict) -> DatasetDict:
    """The records' layout from their columns (stated in the log), ShareGPT turns read as messages, and the
    columns that layout needs checked."""
    task = args.task
    task.dataset_format = detect_format(raw["train"], task)
    logger.info("Records read as %s, prompt_format %s (set --prompt_format to choose)", task.dataset_format,
                task.prompt_format)
    if task.dataset_format == SHAREGPT:
        column = task.messages_column
        raw = DatasetDict({split: data.map(lambda batch: {column: [from_sharegpt(c) for c in batch[column]]},
                                           batched=True, desc=f"Reading ShareGPT turns as messages ({split})")
                           for split, data in raw.items()})
    if task.messages_column:
        check_columns(raw, args.data, (task.messages_column,), message_columns=(task.messages_column,))
    elif task.dataset_format in (PROMPT_COMPLETION, CONVERSATIONAL_PC):
        columns = (task.prompt_column, task.completion_column)
        check_columns(raw, args.data, columns, **{"text_columns" if task.dataset_format == PROMPT_COMPLETION
                                                  else "message_columns": columns})
    else:
        columns = (task.instruction_column, task.output_column)
        check_columns(raw, args.data, columns, text_columns=(*columns, task.input_column))
        add_missing_inputs(raw, task)
    return raw


class InstructRecipe(Recipe):
    kind = CAUSAL_LM_KIND
    unused_flags = (*CAUSAL_LM_KIND.unused_flags, "text_column")  # records have their own columns
    checks = (LeakageCheck(), ForgettingCheck(), FitCheck())
    name = "instruct"
    title = "Instruction tuning"
    task_args_class = InstructArguments
    default_config = HERE / "instruct.yaml"
    model_card_task = "text-generation"
    leakage_unit = "instruction+input"
    metric_inputs = "generated and reference answers"

    def metric_example(self, prepared: Prepared, args: RecipeArgs) -> tuple[list, list]:
        references = self.references(prepared.raw["test"].select(range(min(2, len(prepared.raw["test"])))), args.task)
        return references, references

    def prompts(self, records, task: InstructArguments, tokenizer=None) -> list[str]:
        """The text each record's answer continues (chat: the conversation before its last answer, rendered by
        ``tokenizer``'s template with the generation prompt)."""
        records = as_batch(records)
        if task.prompt_format == "chat":
            return [generation_prompt(tokenizer, split_last_answer(messages)[0])
                    for messages in conversations(records, task)]
        if task.prompt_format == "plain":  # as given: no template, no separator
            return list(records[task.prompt_column])
        return [render_prompt(i, x, task) for i, x in zip(records[task.instruction_column], records[task.input_column])]

    def references(self, records, task: InstructArguments) -> list[str]:
        records = as_batch(records)
        if task.prompt_format == "chat":
            return [split_last_answer(messages)[1] for messages in conversations(records, task)]
        if task.dataset_format == PROMPT_COMPLETION:
            return list(records[task.completion_column])
        return list(records[task.output_column])

    def load_data(self, args: RecipeArgs) -> DatasetDict:
        if args.data.streaming:
            return stream_records(args)
        return load_splits(args.data, args.model, args.training.seed, read_columns=partial(read_records, args),
                           test_split_percentage=args.task.test_split_percentage)


    def leakage_texts(self, dataset, args: RecipeArgs) -> Iterable[str]:
        task = args.task
        if task.prompt_format == "chat":  # the user turns
            return ("\n\n".join(m["content"] for m in messages if m["role"] == "user").strip()
                    for batch in dataset.iter(batch_size=CHECK_BATCH_ROWS) for messages in conversations(batch, task))
        if task.prompt_format == "plain":
            return (prompt or "" for prompt in iter_values(dataset, task.prompt_column))
        return (f"{instruction}\n\n{input or ''}".strip() for instruction, input in
                zip(iter_values(dataset, task.instruction_column), iter_values(dataset, task.input_column)))

    def prepare(self, args: RecipeArgs, raw: DatasetDict) -> Prepared:
        task = args.task
        chat = task.prompt_format == "chat"
        streamed = raw["train"] if isinstance(raw["train"], IterableDataset) else None
        if streamed is not None:  # its incomplete records are left out as it is read (stream_records)
            raw = DatasetDict({split: data for split, data in raw.items() if split != "train"})
        dropped = drop_incomplete_records(raw, task)
        tokenizer = load_tokenizer(args.model)
        if chat:
            template = "ChatML (added)" if use_chat_template(tokenizer) else "the tokenizer's own"
        elif task.prompt_format == "alpaca":
            tokenizer.chat_template = chat_template(task)
        model = load_model(args.model, AutoModelForCausalLM, tokenizer)
        if chat:  # generation stops at the end of a turn (a pretrained config still names its own EOS)
            model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
        prompt_tokens = shortest_prompt(tokenizer, task)
        limit = max_length(tokenizer, model, args.data.max_seq_length, prompt_tokens + 2,
                           f"the prompt template alone takes {prompt_tokens} tokens, and a record needs at least one more "
                           "for its instruction and one for its response")
        eos = tokenizer.eos_token_id

        def tokenize(batch):
            if chat:
                return cut_examples(chat_examples(tokenizer, conversations(batch, task), task.train_on_inputs,
                                                  first_targets(batch, task)), limit)
            prompts = encode(tokenizer, self.prompts(batch, task))
            responses = tokenizer(self.references(batch, task), add_special_tokens=False)["input_ids"]
            return cut_examples([build_example(p, r, eos, task.train_on_inputs) for p, r in zip(prompts, responses)],
                                limit)

        tokenized = map_splits(raw, tokenize, args.data, args.training, "Tokenizing")
        truncated = {split: count_true(data, "truncated") for split, data in tokenized.items()}
        if truncated.get("train"):
            logger.warning("%d train records are longer than %d tokens and were cut (their end is lost)",
                           truncated["train"], limit)
        # A record cut inside its prompt has no target left; a batch of only such records would have a 0/0 loss.
        without_target = {split: len(data) - count_true(data, "has_target") for split, data in tokenized.items()}
        if any(without_target.values()):
            logger.warning("Dropped records whose prompt fills all %d tokens (no response token left): %s", limit,
                           per_split(without_target))
            tokenized = DatasetDict({split: data.filter(lambda keep: keep, input_columns="has_target")
                                     for split, data in tokenized.items()})
        tokenized = tokenized.remove_columns(["truncated", "has_target"])
        if streamed is not None:  # tokenized as training reads it; rows cut or without a target are not counted
            records = raw["validation"].column_names
            tokenized = DatasetDict({"train": streamed.select_columns(records).map(
                tokenize, batched=True, remove_columns=records).filter(lambda keep: keep, input_columns="has_target")
                .remove_columns(["truncated", "has_target"]), **tokenized})
            raw = DatasetDict({"train": streamed, **raw})
        if task.padding_free:
            keep_packed_sequences_apart(model, args.training, "padding_free", switch_off="padding_free false")
            collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
            batching = "padding-free: each batch is one row, position ids restart per record (block-diagonal mask)"
            eval_collator = LabelPaddingCollator(tokenizer)  # evaluation sees one row per record
        else:
            collator = eval_collator = LabelPaddingCollator(tokenizer)
            grouped = "group_by_length" in str(args.training.train_sampling_strategy)
            batching = "padded to the longest record of each batch" + (", batches grouped by length" if grouped else "")
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            raw=raw,
            datasets=tokenized,
            data_collator=collator,
            eval_data_collator=eval_collator,
            facts={
                "records": f"{task.dataset_format} (from the columns; prompt_format {task.prompt_format})",
                "prompt format": (f"chat, template: {template}" if chat else
                                  "plain: the prompt as given, then the completion and EOS"
                                  if task.prompt_format == "plain" else "alpaca"),
                "loss on": ("every token" if task.train_on_inputs else
                            "the completion's assistant turns (content and end-of-turn marker) only"
                            if task.dataset_format == CONVERSATIONAL_PC else
                            "assistant turns (content and end-of-turn marker) only" if chat else
                            "response tokens and EOS only"),
                "batching": batching,
                "records cut at max length": f"{limit} tokens: " + per_split(truncated),
                ("records dropped (no assistant answer)" if task.dataset_format in (MESSAGES, SHAREGPT, CONVERSATIONAL_PC)
                 else
                 "records dropped (no prompt or no completion)" if task.dataset_format == PROMPT_COMPLETION else
                 "records dropped (no instruction or no output)"): per_split(dropped),
                "records dropped (prompt fills max length)": per_split(without_target),
            },
        )

    def no_targets_hint(self, args: RecipeArgs) -> str:
        shorten = {"chat": "shorten the conversations", "plain": "shorten the prompts"}.get(
            args.task.prompt_format, "shorten prompt_template")
        return (f"the prompts fill max_seq_length ({args.data.max_seq_length}) before any response token: raise "
                f"max_seq_length or {shorten}")

    def before_training(self, trainer, prepared, args, report) -> None:
        examples = prepared.raw["test"].select(range(min(args.task.report_examples, len(prepared.raw["test"]))))
        prepared.before["answers"] = self.answer(prepared, examples, args.task)

    def answer(self, prepared: Prepared, records, task: InstructArguments) -> list[str]:
        # A prompt rendered by a chat template holds the BOS the template writes.
        texts = generate_text(prepared.model, prepared.tokenizer, self.prompts(records, task, prepared.tokenizer), task,
                              add_bos=task.prompt_format != "chat")
        return [text.strip() for text in texts]

    def after_training(self, trainer, prepared, args, report, test_output) -> dict[str, float] | None:
        task, test = args.task, prepared.raw["test"]
        # Each process answers its share of the test records; the answers are gathered back in order.
        with trainer.accelerator.split_between_processes(list(range(len(test)))) as share:
            answers = self.answer(prepared, test.select(share), task) if share else []
        generated = gather_object(answers)
        if not trainer.is_world_process_zero():
            return None
        references = self.references(test, task)
        if task.prompt_format == "chat":
            prompts = [split_last_answer(messages)[0] for messages in conversations(test, task)]
            rows = [{"messages": p, "reference": r, "generated": g} for p, r, g in zip(prompts, references, generated)]
            questions = [transcript(p) for p in prompts]
        elif task.prompt_format == "plain":
            questions = self.prompts(test, task)
            rows = [{"prompt": p, "reference": r, "generated": g} for p, r, g in zip(questions, references, generated)]
        else:
            rows = [
                {"instruction": i, "input": x, "reference": r, "generated": g}
                for i, x, r, g in zip(test[task.instruction_column], test[task.input_column], references, generated)
            ]
            questions = self.prompts(test, task)
        output_dir = Path(args.training.output_dir)
        with open(output_dir / GENERATIONS_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

        shown = len(prepared.before["answers"])
        scores = {"test_exact_match": exact_match(generated, references), "test_rouge_l": rouge_l(generated, references)}
        judged, judge_note = judge_scores(questions, references, generated, task)
        if judged is not None:
            scores["test_judge_score"] = judged
        added = extra_scores(load_metrics(args.checks.metric_names), generated, references,
                             taken={key.removeprefix("test_") for key in scores} | RUN_KEYS)
        scores.update({f"test_{key}": value for key, value in added.items()})
        report.add("Answer scores on the test split", markdown_table([
            {"model": f"starting model (first {shown} records)",
             "exact match": exact_match(prepared.before["answers"], references[:shown]),
             "ROUGE-L F1": rouge_l(prepared.before["answers"], references[:shown])},
            {"model": f"fine-tuned (first {shown} records)",
             "exact match": exact_match(generated[:shown], references[:shown]),
             "ROUGE-L F1": rouge_l(generated[:shown], references[:shown])},
            {"model": f"fine-tuned (all {len(test)} records)",
             "exact match": scores["test_exact_match"], "ROUGE-L F1": scores["test_rouge_l"]},
        ]) + f"\n\nDecoding: {task.describe_decoding()}; stops at EOS. Exact match ignores case and whitespace. "
             f"Every answer: `{GENERATIONS_FILE}`.\n\n"
             + judge_note)
        examples = [
            {"instruction": transcript(r["messages"]) if "messages" in r else r["prompt"] if "prompt" in r else
             r["instruction"] + (f"\n\ninput: {r['input']}" if r["input"] else ""),
             "reference": r["reference"], "starting model": start, "fine-tuned": r["generated"]}
            for r, start in zip(rows, prepared.before["answers"])
        ]
        report.add("Test examples: starting model and fine-tuned", markdown_table(examples))
        return scores

    def model_card_example(self, args: RecipeArgs) -> CardExample:
        task = args.task
        if task.prompt_format == "chat":
            how = ("Prompt with a conversation, a list of `{\"role\", \"content\"}` messages: the tokenizer's chat "
                   "template renders it as in training and opens the assistant's turn; the answer ends at the "
                   "template's end-of-turn token.")
            messages = [{"role": "user", "content": "Name three primary colors."}]
        else:
            rendered = render_prompt("{instruction}", "{input}", task)
            how = ("Prompt with a user message whose content is the instruction (an optional `input` key holds the "
                   "input): the tokenizer's chat template renders it in the format the model was trained on, the "
                   f"input section left out when there is none:\n\n```text\n{rendered}\n```")
            messages = [{"role": "user", "content": "Add the numbers.", "input": "2 and 3"}]
        return CardExample(
            prompt_format=how,
            code=f'print(generator({messages!r})[0]["generated_text"][-1]["content"])',
            intended_use="Answering instructions like the training ones, as an assistant for experiments and "
                         "research.",
            limitations="Its answers can be wrong, made up or unsafe; do not use them unchecked.")

    def prompt_format(self, task: InstructArguments) -> PromptFormat:
        if task.prompt_format == "plain":  # trained on prompts as given: no template
            return PromptFormat(echo=False, missing="give --prompt: this run was trained on plain prompt/completion "
                                                    "records, and the prompt is used as given")
        return dataclasses.replace(PromptFormat.alpaca(), template=task.prompt_template,
                                   input_template=task.input_template, chat=task.prompt_format == "chat")


def saved_templates(task: dict) -> InstructArguments:
    """The templates a run was trained with (recipe.json), so prompts at inference match training."""
    known = {f.name for f in dataclasses.fields(InstructArguments)}
    return InstructArguments(**{k: v for k, v in task.items() if k in {"prompt_template", "input_template"} & known})


RECIPE = InstructRecipe()
build_trainer = RECIPE.build_trainer
demo_config = RECIPE.demo_config  # works from any directory
run = RECIPE.run


def generate(model_dir: str | Path, instruction: str | None = None, input: str = "",
             messages: Sequence[dict[str, str]] | None = None, **settings) -> str:
    """The answer of a saved instruction-tuned model, prompted the way it was trained: with its prompt template,
    (a ``prompt_format: chat`` run) its tokenizer's chat template, given ``messages`` or the instruction and input as
    one user turn, or (a ``prompt_format: plain`` run, trained on prompt/completion text) ``instruction`` as given,
    the prompt. ``settings`` are GenerationArguments fields (default: the run's, else plain greedy, up to 256 new
    tokens)."""
    saved = load_recipe_file(model_dir)["task"]
    chat = saved.get("prompt_format") == "chat"
    if messages is not None and not chat:
        raise RecipeError(f"messages= needs a run trained with prompt_format chat; {model_dir} uses the alpaca format")
    if messages is None and not instruction:
        raise RecipeError("give an instruction (or, for a chat run, messages)")
    problem = message_problem(messages) if messages is not None else None
    if problem:
        raise RecipeError(f"messages must be a list of {{role, content}} messages, but it {problem}")
    decoding = settings_of_run(InstructArguments, saved, **settings)
    model, tokenizer = load_causal_lm(model_dir)
    if chat:
        prompt = generation_prompt(tokenizer, messages or [{"role": "user", "content": user_message(instruction, input)}])
    elif saved.get("prompt_format") == "plain":
        if input:
            raise RecipeError(f"{model_dir} was trained on plain prompts: give the whole prompt as instruction, no input")
        prompt = instruction
    else:
        prompt = render_prompt(instruction, input, saved_templates(saved))
    return generate_text(model, tokenizer, [prompt], decoding, add_bos=not chat)[0].strip()
