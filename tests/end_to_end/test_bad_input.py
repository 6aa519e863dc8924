"""Malformed and hostile input, by class. Every member of every class must end the same way: exit code 2, exactly
one ``error:`` line on stderr (the last one) naming the problem, no traceback, the output_dir absent or untouched,
and every file the user had byte-identical.

A case builds its command line from a folder of user files; it returns ``(argv, expected part of the error)``.
"""

import errno
import json
from pathlib import Path

import pandas as pd
import pytest

from hf_recipes import recipes
from hf_recipes import cli
from tests.conftest import (assert_one_error_line, cli_args, instruction_records, labelled_tweets, SAMPLE_DATA,
                           snapshot, TOKENIZER_DIR, write_file)



class Case:
    """One hostile input: ``recipe`` trained with the tiny model, ``change`` applied to its flags."""

    def __init__(self, recipe, change, message, verb="train"):
        self.recipe, self.change, self.message, self.verb = recipe, change, message, verb

    def argv(self, user: Path, run: dict, models: dict) -> list[str]:
        values = {**run, **SAMPLE_DATA[self.recipe], **self.change(user)}
        return [self.verb, self.recipe, *cli_args(values)]


def shaped(recipe: str, overrides: str, message: str, model_type: str = "gpt2") -> Case:
    """A model built from scratch with ``--config_overrides overrides``."""
    return Case(recipe, lambda d: {"model_type": model_type, "config_overrides": overrides}, message)


LLAMA = "num_hidden_layers=1,hidden_size=32,num_attention_heads=4,num_key_value_heads=2,intermediate_size=64"


class Verb:
    """A hostile command line as a whole, e.g. predict / generate on a saved run (``models`` maps recipe names to
    finished runs when ``needs_runs``)."""

    def __init__(self, argv, message, needs_runs=True):
        self.make_argv, self.message, self.needs_runs = argv, message, needs_runs

    def argv(self, user: Path, run: dict, models: dict) -> list[str]:
        return self.make_argv(user, models)








def chats(bad_row=None, n=30) -> dict:
    """Flags for a chat run on ``n`` conversations, row 5 replaced by ``bad_row`` (as the "messages" value)."""
    rows = [[{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"Said {i}."}] for i in range(n)]
    if bad_row is not None:
        rows[4] = bad_row

    def change(folder: Path) -> dict:
        text = "".join(json.dumps({"messages": messages}) + "\n" for messages in rows)
        return {"train_file": write_file(folder, "chat.jsonl", text), "prompt_format": "chat", "messages_column": "messages"}
    return change


def with_bad_row(rows, index, **fields):
    rows = [dict(r) for r in rows]
    rows[index].update(fields)
    return rows


def yaml(folder: Path, text: str) -> dict:
    return {"config": write_file(folder, "config.yaml", text)}


CLASSES = {
    # 1. Everything is checked before anything is written.
    "checked before writing": {
        "negative learning rate": Case("sentiment", lambda d: {"learning_rate": -0.01},
                                       "learning_rate must be a positive number, got -0.01"),
        "NaN learning rate": Case("lyrics", lambda d: {"learning_rate": "nan"}, "learning_rate must be a positive"),
        "temperature 0 while sampling": Case("lyrics", lambda d: {"temperature": 0},
                                             "temperature must be a positive number, got 0"),
        "negative max_new_tokens": Case("instruct", lambda d: {"max_new_tokens": -5},
                                        "max_new_tokens must be a positive number, got -5"),
        "top_p above 1": Case("lyrics", lambda d: {"top_p": 1.5}, "top_p must be in (0, 1]"),
        "a weights dtype that is none of the choices": Case("lyrics", lambda d: {"dtype": "fp32"},
                                                           "argument --dtype: invalid choice: 'fp32'"),
        "a license that is no hub id": Case("sentiment", lambda d: {"license": "Apache 2"},
                                            "license must be a hub license id (e.g. apache-2.0, mit, cc-by-4.0, "
                                            "other), got 'Apache 2'"),
        "a language that is no ISO code": Case("lyrics", lambda d: {"language": ["en", "English"]},
                                               "language must be ISO 639 codes (e.g. en, fr, zh), got 'English'"),
        "zero generation batch": Case("instruct", lambda d: {"generation_batch_size": 0},
                                      "generation_batch_size must be a positive number"),
        "resume from another recipe's checkpoint": Case(
            "lyrics", lambda d: {"resume_from_checkpoint": str(d / "sentiment-run" / "checkpoint-1")},
            "is of a GPT2ForSequenceClassification, but this run trains a GPT2LMHeadModel"),
        "resume from a folder that is no checkpoint": Case(
            "sentiment", lambda d: {"resume_from_checkpoint": str(d)}, "is not a complete checkpoint folder"),
        "config_overrides key the family lacks": Case(
            "sentiment", lambda d: {"config_overrides": "n_layer=1,n_embd=32,n_head=2,n_positions=128,hidden_dim=9"},
            "gpt2 configs have no 'hidden_dim'"),
        "config_overrides value of the wrong type": Case(
            "lyrics", lambda d: {"config_overrides": "n_layer=one,n_embd=32,n_head=2,n_positions=128"},
            "'n_layer' takes int values, got 'one'"),
        "config_overrides of a key holding a mapping": Case(
            "sentiment", lambda d: {"config_overrides": "n_layer=1,n_embd=32,n_head=2,n_positions=128,id2label=x"},
            "'id2label' holds a dict; only numbers, booleans and strings can be overridden"),
        "packing on a family that cannot keep packed sequences apart": Case(
            "lyrics", lambda d: {"model_type": "opt", "config_overrides": "num_hidden_layers=1,hidden_size=32,"
                                 "ffn_dim=32,num_attention_heads=2,max_position_embeddings=128,word_embed_proj_dim=32"},
            "opt models do not keep sequences packed into one row apart"),
        "negative warmup": Case("sentiment", lambda d: {"warmup_steps": -1}, "Expected value warmup_steps >= 0"),
        "zero accumulation": Case("sentiment", lambda d: {"gradient_accumulation_steps": 0},
                                  "gradient_accumulation_steps must be positive"),
        "unknown prompt_format": Case("instruct", lambda d: {"prompt_format": "chatml"},
                                      "prompt_format must be one of auto, alpaca, chat, plain, got 'chatml'"),
        "best model without matching save and eval": Case(
            "sentiment", lambda d: {"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "no"},
            "--load_best_model_at_end requires the save and eval strategy to match"),
    },
    # 2. Runs that cannot learn are errors.
    "cannot learn": {
        "zero epochs": Case("sentiment", lambda d: {"num_train_epochs": 0, "max_steps": -1},
                            "num_train_epochs is 0.0: the run would train nothing"),
        "negative epochs": Case("lyrics", lambda d: {"num_train_epochs": -2, "max_steps": 0}, "the run would train nothing"),
        "block of one token": Case("lyrics", lambda d: {"block_size": 1},
                                   "block_size 1 leaves no room for real text"),
        "prompts longer than max_seq_length": Case(
            "instruct", lambda d: {"train_file": write_file(d, "long.json", instruction_records(instruction="Say it. " * 60)),
                                   "max_seq_length": 96},
            "the train split is empty after preparation; the prompts fill max_seq_length (96)"),
        "every output empty": Case("instruct", lambda d: {"train_file": write_file(d, "empty.json", instruction_records(output=" "))},
                                   "the train split is empty after dropping rows with empty 'output'"),
        "no conversation answered": Case("instruct", lambda d: chats()(d) | {"train_file": write_file(
            d, "unanswered.jsonl", (json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n") * 30)},
            "the train split is empty after dropping rows without an assistant answer in 'messages'"),
        "every text empty": Case("sentiment", lambda d: {"train_file": write_file(d, "blank.json", labelled_tweets(["a", "b"] * 10,
                                                                                                    [""] * 20)),
                                                       "test_file": None},
                                 "the train split is empty after dropping rows with empty 'text'"),
        "learning rate zero": Case("instruct", lambda d: {"learning_rate": 0}, "learning_rate must be a positive"),
        "fewer tokens than a block": Case(
            "lyrics", lambda d: {"train_file": write_file(d, "short.txt", "la la\n\n" * 30)},
            "has fewer tokens than one block of 64"),
    },
    # 3. Column types are checked, naming the column, the split and the first bad row.
    "column types": {
        "integer texts": Case("sentiment", lambda d: {"train_file": write_file(d, "ints.json", labelled_tweets(["a", "b"] * 10,
                                                                                                  list(range(20)))),
                                                    "test_file": None},
                              "column 'text' of the train split"),
        "list texts": Case("sentiment", lambda d: {"train_file": write_file(d, "lists.json", labelled_tweets(
            ["a", "b"] * 10, [[f"w{i}", "x"] for i in range(20)])), "test_file": None},
            "must hold text, but row 1 holds list"),
        "nested list outputs": Case("instruct", lambda d: {"train_file": write_file(
            d, "nested.json", [{**r, "output": [[r["output"]]]} for r in instruction_records()])},
            "column 'output' of the train split"),
        "one integer instruction among strings": Case(
            "instruct", lambda d: {"train_file": write_file(d, "mixed.jsonl", "\n".join(
                json.dumps(r) for r in with_bad_row(instruction_records(), 7, instruction=7)))},
            "instruction"),
        "messages that are not a list": Case("instruct", chats("hi"), "must hold lists of {role, content} messages, "
                                                                     "but row 5 holds str 'hi'"),
        "a message without a role": Case("instruct", chats([{"content": "x"}, {"role": "assistant", "content": "y"}]),
                                         "but row 5 has message 1 without 'role'"),
        "a message with an unknown role": Case("instruct", chats([{"role": "bot", "content": "x"}]),
                                               "but row 5 has message 1 with role 'bot' (roles: system, user, assistant)"),
        "a message whose content is a number": Case(
            "instruct", chats([{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]),
            "but row 5 has message 1 whose content is int 5, not text"),
        "parquet text column of integers": Case(
            "lyrics", lambda d: {"train_file": write_file(d, "songs.parquet", pd.DataFrame({"text": range(50)}))},
            "column 'text' of the train split"),
        "repeated CSV header": Case(
            "sentiment", lambda d: {"train_file": write_file(d, "twice.csv", "id,text,text,sentiment\n1,hi,ho,positive\n"),
                                    "test_file": None},
            "names the column 'text' twice in its header"),
        "float labels": Case("sentiment", lambda d: {"train_file": write_file(d, "floats.json", labelled_tweets([0.5, 1.5] * 10)),
                                                     "test_file": None},
                             "label column 'sentiment' of the train split must hold label names or whole numbers, "
                             "but row 1 holds float"),
        "list labels": Case("sentiment", lambda d: {"train_file": write_file(d, "listlab.json", labelled_tweets([["a"], ["b"]] * 10)),
                                                    "test_file": None},
                            "but row 1 holds list"),
    },
    # 5. --labels is validated.
    "labels": {
        "repeated label": Case("sentiment", lambda d: {"labels": ["negative", "positive", "negative"]},
                               "--labels lists 'negative' more than once"),
        "unknown label in the data": Case("sentiment", lambda d: {"labels": ["negative", "positive"]},
                                          "label 'neutral' in the train split is not a known label"),
        "integer label out of range": Case(
            "sentiment", lambda d: {"train_file": write_file(d, "ints.json", labelled_tweets([0, 1] * 10)),
                                    "test_file": write_file(d, "ints_test.json", labelled_tweets([1, 5]))},
            "label '5' in the test split is not a known label (0, 1)"),
        "mixed label kinds": Case("sentiment", lambda d: {"train_file": write_file(d, "mixed.json", labelled_tweets(["positive", 1] * 10)),
                                                          "test_file": None},
                                  "train labels mix numbers and names (e.g. '1' and 'positive')"),
        "null labels": Case("sentiment", lambda d: {"train_file": write_file(d, "null.json", labelled_tweets(["positive", None] * 10)),
                                                    "test_file": None},
                            "rows have no 'sentiment' value"),
    },
    # 6. Verbs check the kind of run they are given.
    "run kind": {
        "predict on a lyrics run": Verb(lambda d, m: ["predict", "sentiment", "--model_dir", m["lyrics"], "hi"],
                                        "holds a lyrics run (causal LM), not a classifier: use `hf-recipes generate`"),
        "generate on a sentiment run": Verb(lambda d, m: ["generate", "--model_dir", m["sentiment"], "--prompt", "x"],
                                            "holds a sentiment run (classifier), not a causal LM"),
        "unreadable recipe.json": Verb(lambda d, m: ["predict", "sentiment", "--model_dir",
                                                     broken_copy(m["sentiment"], d, "{not json"), "hi"],
                                       "cannot read run file"),
        "recipe.json holding a list": Verb(lambda d, m: ["generate", "--model_dir",
                                                         broken_copy(m["lyrics"], d, "[1, 2]"), "--prompt", "x"],
                                           "it holds list, not a JSON object"),
        "predict with batch size 0": Verb(lambda d, m: ["predict", "sentiment", "--model_dir", m["sentiment"],
                                                        "--batch_size", "0", "hi"],
                                          "batch_size must be a positive number, got 0"),
        "generate with negative max_new_tokens": Verb(
            lambda d, m: ["generate", "--model_dir", m["lyrics"], "--prompt", "x", "--max_new_tokens", "-5"],
            "max_new_tokens must be a positive number, got -5"),
        "generate with temperature 0": Verb(
            lambda d, m: ["generate", "--model_dir", m["lyrics"], "--prompt", "x", "--temperature", "0"],
            "temperature must be a positive number, got 0.0 (for greedy decoding set do_sample false)"),
        "a model folder that is not a folder": Verb(
            lambda d, m: ["generate", "--model_dir", write_file(d, "model.txt", "x"), "--prompt", "x"], "model_dir not found"),
    },
    # 7. Paths, shapes and library errors: still one line, exit 2.
    "paths and shapes": {
        "empty output_dir": Case("sentiment", lambda d: {"output_dir": ""}, "output_dir is empty"),
        "output_dir under a file": Case("sentiment", lambda d: {"output_dir": write_file(d, "afile", "x") + "/run"},
                                        "cannot be created: "),
        "output_dir is a file": Case("lyrics", lambda d: {"output_dir": write_file(d, "notes.txt", "mine")},
                                     "cannot be created: "),
        "YAML list for num_train_epochs": Case("sentiment", lambda d: yaml(d, "num_train_epochs: [1, 2]\n"),
                                               "config key 'num_train_epochs' in"),
        "YAML mapping for learning_rate": Case("lyrics", lambda d: yaml(d, "learning_rate: {a: 1}\n"),
                                               "takes one value, got a mapping"),
        "YAML that is a list": Case("lyrics", lambda d: yaml(d, "- 1\n- 2\n"), "must hold a mapping"),
        "empty song_separator": Case("lyrics", lambda d: {"song_separator": ""}, "song_separator is empty"),
        "misspelled flag": Case("sentiment", lambda d: {"learning_rat": 0.1}, "unknown argument '--learning_rat'"),
        "non-number for a number": Case("sentiment", lambda d: {"num_train_epochs": "many"}, "invalid float value"),
        "missing file": Case("sentiment", lambda d: {"train_file": str(d / "nope.csv")}, "train_file not found"),
        "directory instead of file": Case("sentiment", lambda d: {"train_file": str(d)}, "train_file is a directory"),
        "empty file": Case("sentiment", lambda d: {"train_file": write_file(d, "empty.csv", "")}, "train_file is empty"),
        "unsupported file type": Case("lyrics", lambda d: {"train_file": write_file(d, "songs.docx", "la la")},
                                      "unsupported extension '.docx'"),
        "non-UTF-8 bytes": Case("sentiment", lambda d: {"train_file": write_file(
            d, "latin.csv", "text,sentiment\ncaf\xe9,positive\n".encode("latin-1"))}, "train_file is not UTF-8 text"),
        "wrong CSV delimiter": Case("sentiment", lambda d: {"train_file": write_file(
            d, "semi.csv", "text;sentiment\nhi;positive\nno;negative\n")}, "column 'text' not found in train data"),
        "JSON object instead of records": Case("instruct", lambda d: {"train_file": write_file(
            d, "object.json", {"instruction": "a", "n": 1})}, "column 'output' not found in train data"),
        "unknown recipe": Verb(lambda d, m: ["train", "sentimental"], "unknown recipe 'sentimental'",
                               needs_runs=False),
        "unknown command": Verb(lambda d, m: ["trian", "sentiment"], "invalid choice: 'trian'", needs_runs=False),
        "model folder without weights": Case("lyrics", lambda d: model_without_weights(d), "could not load model"),
        "block_size beyond the context": Case("lyrics", lambda d: {"block_size": 512},
                                              "block_size 512 is larger than the model's context of 128"),
        "negative sample limit": Case("sentiment", lambda d: {"max_train_samples": -3},
                                      "max_train_samples must be a positive"),
    },
    # 8. Model-shape settings, from config_overrides (every family) or a model folder's config, before building.
    "model shape": {
        "no layers": shaped("lyrics", "n_layer=-1,n_embd=32,n_head=2,n_positions=128",
                            "bad config_overrides 'n_layer=-1,n_embd=32,n_head=2,n_positions=128': n_layer must be 1 "
                            "or more, got -1"),
        "negative width": shaped("sentiment", "n_layer=1,n_embd=-64,n_head=2", "n_embd must be 1 or more, got -64"),
        "no positions": shaped("instruct", "n_layer=1,n_embd=32,n_head=2,n_positions=0",
                               "n_positions must be 1 or more, got 0"),
        "heads that do not divide the width": shaped("sentiment", "n_layer=1,n_embd=30,n_head=4,n_positions=128",
                                                     "n_head (4) must divide n_embd (30)"),
        "a layer count by its generic name": shaped("lyrics", "num_hidden_layers=0,n_embd=32,n_head=2,n_positions=128",
                                                    "num_hidden_layers must be 1 or more, got 0"),
        "dropout above 1": shaped("lyrics", "n_layer=1,n_embd=32,n_head=2,n_positions=128,attn_pdrop=1.5",
                                  "attn_pdrop is a dropout probability and must be in [0, 1), got 1.5"),
        "llama key/value heads that do not divide the heads": shaped(
            "lyrics", LLAMA + ",num_key_value_heads=3", "num_key_value_heads (3) must divide num_attention_heads (4)",
            "llama"),
        "llama without feed-forward width": shaped("sentiment", LLAMA + ",intermediate_size=0",
                                                   "intermediate_size must be 1 or more, got 0", "llama"),
        "mistral heads its default key/value heads do not divide": shaped(
            "lyrics", "num_hidden_layers=1,hidden_size=32,num_attention_heads=4,intermediate_size=64",
            "num_key_value_heads (8) must divide num_attention_heads (4)", "mistral"),
        "qwen2 with no heads": shaped("instruct", LLAMA + ",num_attention_heads=0",
                                      "num_attention_heads must be 1 or more, got 0", "qwen2"),
        "gpt_neox heads that do not divide the width": shaped(
            "lyrics", "num_hidden_layers=1,hidden_size=32,num_attention_heads=3,intermediate_size=64",
            "num_attention_heads (3) must divide hidden_size (32)", "gpt_neox"),
        "opt with a negative feed-forward width": shaped(
            "sentiment", "num_hidden_layers=1,hidden_size=32,ffn_dim=-1,num_attention_heads=2",
            "ffn_dim must be 1 or more, got -1", "opt"),
        "phi3 without positions": shaped("sentiment", LLAMA + ",max_position_embeddings=0",
                                         "max_position_embeddings must be 1 or more, got 0", "phi3"),
        "a model folder whose config has no layers": Case(
            "lyrics", lambda d: model_without_weights(d, n_layer=0), "n_layer must be 1 or more, got 0"),
    },
    # 9. Labels that differ only in case or surrounding spaces are one label (--normalize_labels) or an error.
    "near-duplicate labels": {
        "case and spaces in train": Case(
            "sentiment", lambda d: {"train_file": write_file(d, "cased.json", labelled_tweets(["Positive", "negative", "positive ",
                                                                                "POSITIVE"] * 6)), "test_file": None},
            "labels 'Positive' (row 1 of "),
        "test spelled unlike train": Case(
            "sentiment", lambda d: {"train_file": write_file(d, "train.json", labelled_tweets(["positive", "negative"] * 10)),
                                    "test_file": write_file(d, "test.json", labelled_tweets(["Negative", "positive"]))},
            "and 'Negative' (row 1 of "),
        "--labels spelled twice": Case("sentiment", lambda d: {"labels": ["negative", "Negative", "neutral", "positive"]},
                                       "--labels lists 'negative' and 'Negative', which differ only in case"),
        "--labels spelled unlike the data": Case(
            "sentiment", lambda d: {"labels": ["Negative", "Neutral", "Positive"]},
            "differs from 'Negative' only in case or surrounding spaces: pass --normalize_labels true"),
        "a trailing space": Case(
            "sentiment", lambda d: {"train_file": write_file(d, "space.csv", "text,sentiment\n" + "".join(
                f"tweet {i},{'positive ' if i == 7 else ['positive', 'negative'][i % 2]}\n" for i in range(20))),
                                    "test_file": None},
            "and 'positive ' (row 8 of "),
    },
    # 10. Settings under which no real text fits: the error states the minimum.
    "nothing fits": {
        "classifier texts of one token": Case("sentiment", lambda d: {"max_seq_length": 1},
                                              "max_seq_length 1 leaves no room for real text: a classifier needs at "
                                              "least 4 tokens of each text to tell its label; set max_seq_length to at "
                                              "least 4"),
        "classifier texts of three tokens": Case("sentiment", lambda d: {"max_seq_length": 3},
                                                 "set max_seq_length to at least 4"),
        "instructions of one token": Case("instruct", lambda d: {"max_seq_length": 1},
                                          "max_seq_length 1 leaves no room for real text: the prompt template alone "
                                          "takes"),
        "room for the template only": Case("instruct", lambda d: {"max_seq_length": 8},
                                           "and a record needs at least one more for its instruction and one for its "
                                           "response; set max_seq_length to at least"),
        "chat turns of four tokens": Case("instruct", lambda d: chats()(d) | {"max_seq_length": 4},
                                          "max_seq_length 4 leaves no room for real text: the prompt template alone"),
        "lyrics blocks of two tokens": Case("lyrics", lambda d: {"block_size": 2},
                                            "block_size 2 leaves no room for real text: a block needs at least 8 "
                                            "tokens"),
        "lyrics blocks of seven tokens": Case("lyrics", lambda d: {"block_size": 7}, "set block_size to at least 8"),
    },
    # 11. Special files are named for what they are; files without rows say so.
    "special files": {
        "a FIFO as train_file": Case("sentiment", lambda d: {"train_file": fifo(d, "pipe.csv")},
                                     "is a named pipe (FIFO), not a regular file"),
        "a symlink to /dev/zero": Case("lyrics", lambda d: {"train_file": symlink(d, "zero.txt", "/dev/zero")},
                                       "(a symbolic link to /dev/zero) is a character device, not a regular file"),
        "a device as validation_file": Case("sentiment", lambda d: {"validation_file": "/dev/null"},
                                            "validation_file /dev/null is a character device"),
        "a socket as test_file": Case("sentiment", lambda d: {"test_file": unix_socket(d, "sock.csv")},
                                      "is a socket, not a regular file"),
        "a FIFO as forgetting_eval_file": Case("lyrics", lambda d: {"forgetting_eval_file": fifo(d, "text.txt")},
                                               "forgetting_eval_file"),
        "a FIFO as --config": Case("lyrics", lambda d: {"config": fifo(d, "config.yaml")},
                                   "config.yaml is a named pipe (FIFO), not a regular file"),
        "a FIFO as predict --file": Verb(lambda d, m: ["predict", "sentiment", "--model_dir", m["sentiment"], "--file",
                                                       fifo(d, "texts.txt")], "texts.txt is a named pipe (FIFO)"),
        "a directory as test_file": Case("instruct", lambda d: {"test_file": str(d)}, "test_file is a directory"),
        "a broken symlink": Case("instruct", lambda d: {"train_file": symlink(d, "gone.json", str(d / "nowhere"))},
                                 "is a broken symbolic link"),
        "a header-only CSV": Case("sentiment", lambda d: {"train_file": write_file(d, "header.csv", "text,sentiment\n")},
                                  "has a header (text, sentiment) but no rows: add data rows below it"),
        "a header-only TSV test file": Case("sentiment", lambda d: {
            "train_file": write_file(d, "train.tsv", "text\tsentiment\n" + "hi\tpositive\nno\tnegative\n" * 10),
            "test_file": write_file(d, "test.tsv", "text\tsentiment\n\n")}, "has a header (text, sentiment) but no rows"),
        "an empty JSON list": Case("instruct", lambda d: {"train_file": write_file(d, "none.json", [])},
                                   "holds no records: pass a file with data"),
        "blank JSON lines": Case("instruct", lambda d: {"train_file": write_file(d, "blank.jsonl", "\n\n  \n")},
                                 "holds no records"),
        "a parquet file without rows": Case("lyrics", lambda d: {"train_file": write_file(
            d, "none.parquet", pd.DataFrame({"text": pd.Series([], dtype=str)}))}, "holds columns but no rows"),
    },
    # 12. Library errors in our words, naming our flag, before anything is written.
    "library errors": {
        "negative preprocessing workers": Case("sentiment", lambda d: {"preprocessing_num_workers": -1},
                                               "preprocessing_num_workers must be 0 or more"),
        "negative dataloader workers": Case("lyrics", lambda d: {"dataloader_num_workers": -1},
                                            "--dataloader_num_workers must be 0 or more"),
        "no checkpoints kept": Case("sentiment", lambda d: {"save_total_limit": 0},
                                    "--save_total_limit must be 1 or more (leave it unset to keep every checkpoint)"),
        "negative logging_steps": Case("instruct", lambda d: {"logging_steps": -1},
                                       "--logging_steps must be a positive number of steps"),
        "negative eval_steps": Case("sentiment", lambda d: {"eval_strategy": "steps", "eval_steps": -5},
                                    "--eval_steps must be a positive number of steps"),
        "negative save_steps": Case("lyrics", lambda d: {"save_strategy": "steps", "save_steps": -2},
                                    "--save_steps must be a positive number of steps"),
        "adam_beta1 above 1": Case("sentiment", lambda d: {"adam_beta1": 1.5}, "--adam_beta1 must be in [0, 1)"),
        "negative adam_epsilon": Case("lyrics", lambda d: {"adam_epsilon": -1}, "--adam_epsilon must be 0 or more"),
        "label smoothing of 1": Case("sentiment", lambda d: {"label_smoothing_factor": 1.0},
                                     "--label_smoothing_factor must be in [0, 1)"),
        "negative seed": Case("instruct", lambda d: {"seed": -1}, "--seed must be in [0, 2**32)"),
        "negative max_grad_norm": Case("sentiment", lambda d: {"max_grad_norm": -1},
                                       "--max_grad_norm must be 0 or more"),
        "an unknown tracker": Case("sentiment", lambda d: {"report_to": "tensorbored"},
                                   "--report_to tensorbored: unknown tracker (did you mean 'tensorboard'?)"),
        "no test split carved": Case("instruct", lambda d: {"test_split_percentage": 0},
                                     "test_split_percentage must be between 0 and 100, got 0"),
        "negative report_examples": Case("instruct", lambda d: {"report_examples": -1},
                                         "report_examples must be 0 or more, got -1"),
        "output_dir a broken symlink": Case("lyrics", lambda d: {"output_dir": symlink(d, "out", str(d / "gone"))},
                                            "is a broken symbolic link (to "),
        "sweep into an output_dir that is a file": Case(
            "sentiment", lambda d: {"output_dir": write_file(d, "results.txt", "mine"), "n_trials": 1},
            "results.txt is a file; choose another --output_dir", verb="sweep"),
        "sweep into a broken symlink": Case(
            "lyrics", lambda d: {"output_dir": symlink(d, "sweeps", str(d / "gone")), "n_trials": 1},
            "is a broken symbolic link", verb="sweep"),
    },
    # 13. Label errors give the row of the user's file, also when validation is carved from it (which shuffles).
    "rows of the file": {
        "a float label": Case("sentiment", lambda d: {"train_file": write_file(d, "float.json", labelled_tweets(
            ["a", "b"] * 8 + [0.5] + ["a"] * 5)), "test_file": None}, "but row 17 holds float 0.5"),
        "a label outside --labels": Case("sentiment", lambda d: {"train_file": write_file(d, "odd.json", labelled_tweets(
            ["a", "b"] * 11 + ["c"])), "test_file": None, "labels": ["a", "b"]},
            "label 'c' in the train split is not a known label (a, b): row 23 of "),
        "after rows with empty texts": Case("sentiment", lambda d: {"train_file": write_file(d, "gaps.json", labelled_tweets(
            ["a", "b"] * 10 + ["B"], [""] * 5 + [f"t{i}" for i in range(16)])), "test_file": None},
            "and 'B' (row 21 of "),
        "a row without a label": Case("sentiment", lambda d: {"train_file": write_file(d, "gap.json", labelled_tweets(
            ["a", "b"] * 9 + [None] + ["a"])), "test_file": None}, "1 train rows have no 'sentiment' value (the first: "
                                                                    "row 19 of "),
        "an unknown label in the test file": Case("sentiment", lambda d: {"test_file": write_file(
            d, "t.csv", "text,sentiment\na,positive\nb,negative\nc,sarcastic\n")},
            "label 'sarcastic' in the test split is not a known label (negative, neutral, positive): row 3 of "),
    },
}

def fifo(folder: Path, name: str) -> str:
    import os

    os.mkfifo(folder / name)
    return str(folder / name)


def symlink(folder: Path, name: str, target: str) -> str:
    (folder / name).symlink_to(target)
    return str(folder / name)


def unix_socket(folder: Path, name: str) -> str:
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / name))
    server.close()  # the socket file stays
    return str(folder / name)


def model_without_weights(folder: Path, **config) -> dict:
    write_file(folder, "config.json", {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128,
                                  **config})
    return {"model_name_or_path": str(folder), "model_type": None, "config_overrides": None}


def broken_copy(model_dir: str, folder: Path, recipe_json: str) -> str:
    import shutil

    copy = folder / f"copy-{len(list(folder.glob('copy-*')))}"
    shutil.copytree(model_dir, copy)
    (copy / "recipe.json").write_text(recipe_json)
    return str(copy)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """A finished tiny lyrics run and sentiment run (one step each), for the verbs, and a sentiment checkpoint."""
    folder = tmp_path_factory.mktemp("finished")
    runs = {}
    for name in ("sentiment", "lyrics"):
        out = folder / name
        recipes.get(name).run(**{**tiny(out), **SAMPLE_DATA[name], "max_steps": 1, "save_strategy": "steps",
                                 "save_steps": 1})
        runs[name] = str(out)
    return runs


def tiny(output_dir: Path) -> dict:
    return {"model_type": "gpt2", "model_name_or_path": None, "tokenizer_name": str(TOKENIZER_DIR),
            "config_overrides": "n_layer=1,n_embd=32,n_head=2,n_positions=128", "output_dir": str(output_dir),
            "report_to": "none", "save_strategy": "no", "eval_strategy": "no", "load_best_model_at_end": False,
            "disable_tqdm": True, "mixed_precision": "no", "use_cpu": True, "max_steps": 2}






def refused_by_class(cls: str):
    """The test of one class: every member refused (see :func:`assert_refused`)."""
    @pytest.mark.parametrize("case", list(CLASSES[cls]))
    def test(case, tmp_path, capsys, request):
        assert_refused(CLASSES[cls][case], case, tmp_path, capsys, request)
    return test


# One test per class, each member a case of it.
globals().update({name: refused_by_class(cls) for name, cls in {
    "test_settings_are_checked_before_anything_is_written": "checked before writing",
    "test_runs_that_cannot_learn_are_errors": "cannot learn",
    "test_column_types_are_checked_naming_column_split_and_row": "column types",
    "test_labels_are_validated": "labels",
    "test_verbs_check_the_kind_of_run_they_are_given": "run kind",
    "test_paths_shapes_and_library_errors_are_one_line": "paths and shapes",
    "test_model_shape_settings_are_checked_for_every_family": "model shape",
    "test_labels_that_differ_only_in_case_or_spaces_are_named": "near-duplicate labels",
    "test_lengths_that_leave_no_room_for_real_text_state_the_minimum": "nothing fits",
    "test_special_files_are_named_for_what_they_are": "special files",
    "test_library_errors_are_told_in_our_words_naming_our_flag": "library errors",
    "test_label_errors_give_the_row_of_the_users_file": "rows of the file",
}.items()})


@pytest.mark.slow
def test_normalize_labels_merges_what_the_error_names(tmp_path, capsys):
    cased = write_file(tmp_path, "cased.json", labelled_tweets(["positive", "negative", "positive ", "POSITIVE", "Negative",
                                                                 "negative"] * 6))
    run = {**tiny(tmp_path / "run"), **SAMPLE_DATA["sentiment"], "train_file": cased, "test_file": None, "max_steps": 1}
    assert_one_error_line(cli.main(["train", "sentiment", *cli_args(run)]), capsys.readouterr().err,
                          "pass --normalize_labels true to merge them")
    assert cli.main(["train", "sentiment", *cli_args({**run, "normalize_labels": True})]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"}  # each under its most frequent spelling


def assert_refused(hostile, case: str, tmp_path: Path, capsys, request) -> None:
    """Exit 2, one error line naming the problem, no traceback, no output_dir, the user's files byte-identical."""
    user = tmp_path / "user"
    user.mkdir()
    models = request.getfixturevalue("finished_runs") if getattr(hostile, "needs_runs", False) else {}
    if "another recipe" in case:
        recipes.get("sentiment").run(**{**tiny(user / "sentiment-run"), **SAMPLE_DATA["sentiment"], "max_steps": 1,
                                        "save_strategy": "steps", "save_steps": 1})
    output_dir = tmp_path / "run"
    argv = hostile.argv(user, tiny(output_dir), models)
    capsys.readouterr()
    before = snapshot(tmp_path)
    models_before = {m: snapshot(Path(p)) for m, p in models.items()}

    code = cli.main(argv)

    assert_one_error_line(code, capsys.readouterr().err, hostile.message)
    assert not output_dir.exists()
    assert snapshot(tmp_path) == before  # the user's files, byte for byte; nothing new
    assert {m: snapshot(Path(p)) for m, p in models.items()} == models_before


@pytest.mark.slow
def test_a_failure_while_saving_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """Disk full (or any OS error) while the model is written: one line, and the half-written folder is gone."""
    from hf_recipes.trainer import RecipeTrainer

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "model.safetensors"))

    monkeypatch.setattr(RecipeTrainer, "save_model", disk_full)
    code = cli.main(["train", "lyrics", *cli_args({**tiny(tmp_path / "run"), **SAMPLE_DATA["lyrics"]})])
    assert_one_error_line(code, capsys.readouterr().err, "No space left on device: ")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_interrupted_run_is_one_line_and_keeps_only_what_resumes(tmp_path, capsys, monkeypatch):
    from hf_recipes.trainer import RecipeTrainer

    original = RecipeTrainer.training_step

    def interrupted_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecipeTrainer, "training_step", interrupted_at_step_3)
    run = {**tiny(tmp_path / "run"), **SAMPLE_DATA["lyrics"], "max_steps": 4, "save_strategy": "steps", "save_steps": 1}
    assert_one_error_line(cli.main(["train", "lyrics", *cli_args(run)]), capsys.readouterr().err, "interrupted")
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    run["save_strategy"] = "no"  # nothing to resume from: nothing is kept
    assert_one_error_line(cli.main(["train", "lyrics", *cli_args({**run, "output_dir": str(tmp_path / "none")})]),
                          capsys.readouterr().err, "interrupted")
    assert not (tmp_path / "none").exists()


def test_a_multi_line_library_message_is_joined_not_cut(tmp_path, capsys):
    run = {**tiny(tmp_path / "run"), **SAMPLE_DATA["sentiment"], "load_best_model_at_end": True, "eval_strategy": "epoch",
           "save_strategy": "no"}
    code = cli.main(["train", "sentiment", *cli_args(run)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    # transformers' message is two lines; its first ends in "but found"; the details must follow on the same line
    assert "but found - Evaluation strategy: IntervalStrategy.EPOCH - Save strategy: SaveStrategy.NO" in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="train_file not found"):
        cli.main(["--debug", "train", "lyrics", *cli_args({**tiny(tmp_path / "run"), "train_file": "/nope.txt"})])


@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT", "SIGINT"), ("SIGTERM", "SIGINT"), ("SIGINT", "SIGTERM")],
                         ids=["kill", "Ctrl-C twice", "kill then Ctrl-C", "Ctrl-C then kill"])
@pytest.mark.slow
def test_a_killed_cli_process_says_so_in_one_line_and_leaves_nothing(signals, tmp_path):
    """SIGTERM (a scheduler's kill, `kill PID`) ends a run the way Ctrl-C does; a second one, sent while the process
    ends (after its error line), still ends it with exit code 2, not the shell's 130."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from tests.conftest import REPO

    run = {**tiny(tmp_path / "run"), **SAMPLE_DATA["lyrics"], "max_steps": 100000, "logging_steps": 1}
    # Ctrl-C as a terminal sends it: a shell that starts the tests in the background has them ignore SIGINT, and
    # Python then leaves it ignored in the run too
    process = subprocess.Popen([sys.executable, "-u", "-m", "hf_recipes.cli", "train", "lyrics", *cli_args(run)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = threading.Timer(300, process.kill)  # a run that never stops fails the test instead of hanging it
    deadline.daemon = True
    deadline.start()
    lines = []
    for line in process.stdout:  # wait until it trains
        lines.append(line)
        if "'loss'" in line:
            break
    process.send_signal(getattr(signal, signals[0]))
    for line in process.stdout:  # wait until it has said why it stops
        lines.append(line)
        if line.startswith("error:"):
            break
    for name in signals[1:]:
        process.send_signal(getattr(signal, name))
    lines += process.stdout.readlines()
    assert process.wait(timeout=120) == 2, "".join(lines)
    deadline.cancel()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]] and "interrupted" in errors[0] and "Traceback" not in "".join(lines)
    assert not (tmp_path / "run").exists()
