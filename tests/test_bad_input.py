"""Malformed input across the recipes: one clear line, a non-zero exit, no traceback, nothing in output_dir."""

import json
from pathlib import Path

import pytest

from hf_recipes import cli
from tests.conftest import SAMPLES, cli_args

BASE = {
    "sentiment": {"train_file": str(SAMPLES / "sentiment" / "train.csv"), "label_column": "sentiment",
                  "test_file": str(SAMPLES / "sentiment" / "test.csv")},
    "lyrics": {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 64},
    "instruct": {"train_file": str(SAMPLES / "instructions" / "instructions.json")},
}


def write(folder: Path, name: str, content) -> str:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content))
    return str(path)


def tweets_json(labels):
    return [{"text": f"tweet number {i}", "sentiment": label} for i, label in enumerate(labels)]


def records(**fields):
    return [{"instruction": f"Say {i}.", "input": "", "output": str(i), **fields} for i in range(30)]


CASES = {
    # name: (recipe, change built from a tmp folder, expected part of the error line)
    "missing file": ("sentiment", lambda d: {"train_file": str(d / "nope.csv")}, "train_file not found"),
    "directory instead of file": ("sentiment", lambda d: {"train_file": str(d)}, "train_file is a directory"),
    "empty file": ("sentiment", lambda d: {"train_file": write(d, "empty.csv", "")}, "train_file is empty"),
    "csv with the wrong delimiter": (
        "sentiment", lambda d: {"train_file": write(d, "semi.csv", "text;sentiment\nhi;positive\nno;negative\n")},
        "column 'text' not found in train data"),
    "missing column": ("sentiment", lambda d: {"label_column": "mood"}, "column 'mood' not found in train data"),
    "null labels": (
        "sentiment", lambda d: {"train_file": write(d, "null.json", tweets_json(["positive", None] * 10)),
                                "test_file": None},
        "rows have no 'sentiment' value"),
    "unknown label": (
        "sentiment", lambda d: {"test_file": write(d, "odd.csv", "text,sentiment\nhm,sarcastic\n")},
        "label 'sarcastic' in the test split is not a known label"),
    "integer label out of range": (
        "sentiment", lambda d: {"train_file": write(d, "ints.json", tweets_json([0, 1] * 10)),
                                "test_file": write(d, "ints_test.json", tweets_json([1, 5]))},
        "label '5' in the test split is not a known label (0, 1)"),
    "mixed label types": (
        "sentiment", lambda d: {"train_file": write(d, "mixed.json", tweets_json(["positive", 1] * 10)),
                                "test_file": None},
        "train labels mix numbers and names (e.g. '1' and 'positive')"),
    "non-UTF-8 bytes": (
        "sentiment", lambda d: {"train_file": write(d, "latin.csv", "text,sentiment\ncaf\xe9,positive\n".encode("latin-1"))},
        "train_file is not UTF-8 text"),
    "json that is not a list of records": (
        "instruct", lambda d: {"train_file": write(d, "object.json", {"instruction": "a", "n": 1})},
        "column 'output' not found in train data"),
    "instruction records missing output": (
        "instruct", lambda d: {"train_file": write(d, "no_output.json", records(output=None))},
        "records have no 'output'"),
    "unsupported file type": ("lyrics", lambda d: {"train_file": write(d, "songs.docx", "la la")},
                              "unsupported extension '.docx'"),
    "zero batch size": ("sentiment", lambda d: {"per_device_train_batch_size": 0}, "must be positive"),
    "negative sample limit": ("sentiment", lambda d: {"max_train_samples": -3}, "max_train_samples must be a positive"),
    "block_size beyond the context": ("lyrics", lambda d: {"block_size": 512},
                                      "block_size 512 is larger than the model's context of 128"),
    "model folder without weights": (
        "lyrics", lambda d: {"model_name_or_path": str(d), "model_type": None, "config_overrides": None,
                             "tokenizer_name": str(SAMPLES / "tokenizer"),
                             "_": write(d, "config.json", {"model_type": "gpt2", "n_layer": 1, "n_embd": 32,
                                                           "n_head": 2, "n_positions": 128})},
        "could not load model"),
    "a single huge line": ("lyrics", lambda d: {"train_file": write(d, "one_line.txt", "la " * 300_000)},
                           "need at least 3 songs to carve validation and test splits, found 1"),
    "too few songs": ("lyrics", lambda d: {"train_file": write(d, "two.txt", "one song\n\nanother song\n")},
                      "need at least 3 songs"),
    "template without the instruction": ("instruct", lambda d: {"prompt_template": "{input_section} answer:"},
                                         "prompt_template must hold exactly"),
    "missing forgetting file": ("lyrics", lambda d: {"forgetting_eval_file": str(d / "wiki.txt")},
                                "forgetting_eval_file not found"),
    "forgetting file not UTF-8": ("instruct", lambda d: {"forgetting_eval_file": write(d, "w.txt", b"caf\xe9 au lait")},
                                  "forgetting_eval_file is not UTF-8 text"),
    "few-shot on a generative recipe": ("lyrics", lambda d: {"few_shot_k": 2},
                                        "few_shot_k applies to classification recipes, not lyrics"),
    "few-shot words per label": ("sentiment", lambda d: {"few_shot_k": 0, "few_shot_label_words": "good"},
                                 "few_shot_label_words has 1 words for 3 labels"),
    "few-shot with numeric labels": (
        "sentiment", lambda d: {"train_file": write(d, "ints.json", tweets_json([0, 1] * 10)), "test_file": None,
                                "few_shot_k": 0},
        "give one word per label with --few_shot_label_words"),
    "few-shot template without the text": ("sentiment", lambda d: {"few_shot_k": 0, "few_shot_template": "Mood:"},
                                           "few_shot_template must hold exactly {text}"),
    "dedupe leaves no train rows": (
        "sentiment", lambda d: {"train_file": write(d, "same.csv", "text,sentiment\n" + "hi,positive\nHI,negative\n" * 5),
                                "test_file": write(d, "same_test.csv", "text,sentiment\nhi ,positive\n"),
                                "dedupe_splits": True},
        "--dedupe_splits removed every train row"),
    "misspelled option": ("sentiment", lambda d: {"learning_rat": 0.1}, "unknown argument '--learning_rat'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(case, tiny_model_args, tmp_path, capsys):
    recipe, change, message = CASES[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    values = {**tiny_model_args, **BASE[recipe], **change(data_dir)}
    values.pop("_", None)
    code = cli.main(["train", recipe, *cli_args(values)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code != 0
    assert last.startswith("error: ") and message in last, last
    assert "Traceback" not in err
    assert not Path(tiny_model_args["output_dir"]).exists()


def test_debug_shows_the_traceback(tiny_model_args):
    with pytest.raises(Exception, match="train_file not found"):
        cli.main(["--debug", "train", "lyrics", *cli_args({**tiny_model_args, "train_file": "/nope.txt"})])
