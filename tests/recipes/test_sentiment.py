import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from transformers import AutoModelForSequenceClassification, AutoTokenizer, EvalPrediction

from hf_recipes import cli
from tests.conftest import cli_args, needs_shared, random_tweets, SHARED_DATA
from hf_recipes.errors import RecipeError
from hf_recipes.metrics import classification_metrics
from hf_recipes.recipes import sentiment
from hf_recipes.recipes.sentiment import label_names





@pytest.fixture
def data_files(tmp_path):
    pd.DataFrame(random_tweets(60)).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(random_tweets(15, seed=1)).to_csv(tmp_path / "test.csv", index=False)
    return {"train_file": str(tmp_path / "train.csv"), "test_file": str(tmp_path / "test.csv")}


@pytest.fixture
def overrides(tiny_model_args, data_files):
    return {**tiny_model_args, **data_files, "label_column": "sentiment", "num_train_epochs": 1}


# ---- labels -------------------------------------------------------------------------------------------


def test_string_labels_map_both_ways_and_reach_the_model_config(overrides):
    trainer, prepared = sentiment.build_trainer(**overrides)
    config = prepared.model.config
    assert config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    raw_labels = list(prepared.raw["test"]["sentiment"])
    ids = list(prepared.datasets["test"]["labels"])
    assert [config.id2label[i] for i in ids] == raw_labels
    assert config.pad_token_id == prepared.tokenizer.pad_token_id is not None


def test_integer_and_classlabel_labels():
    ints = DatasetDict({"train": Dataset.from_dict({"label": [2, 0, 10, 2]}), "test": Dataset.from_dict({"label": [10]})})
    names, value_to_id = label_names(ints, "label", None)
    assert names == ["0", "2", "10"] and value_to_id == {"0": 0, "2": 1, "10": 2}
    features = Features({"label": ClassLabel(names=["neg", "pos"])})
    classed = DatasetDict({"train": Dataset.from_dict({"label": [1, 0]}, features=features)})
    assert label_names(classed, "label", None) == (["neg", "pos"], {"0": 0, "1": 1})


def test_explicit_label_order_is_kept():
    raw = DatasetDict({"train": Dataset.from_dict({"label": ["b", "a", "c"]})})
    assert label_names(raw, "label", ["c", "b", "a"])[1] == {"c": 0, "b": 1, "a": 2}


def test_unknown_label_is_named():
    raw = DatasetDict(
        {"train": Dataset.from_dict({"label": ["pos", "neg"]}), "test": Dataset.from_dict({"label": ["pos", "meh"]})}
    )
    with pytest.raises(RecipeError, match="label 'meh' in the test split is not a known label \\(neg, pos\\)"):
        label_names(raw, "label", None)


def test_normalize_labels_merges_spellings_under_the_most_frequent_one():
    raw = DatasetDict({"train": Dataset.from_dict({"label": ["Positive", "positive ", "POSITIVE", "positive", "neg"]}),
                       "test": Dataset.from_dict({"label": [" NEG", "Positive"]})})
    names, value_to_id = label_names(raw, "label", None, normalize=True)
    assert names == ["neg", "positive"]  # "positive" twice (one with a trailing space), every other spelling once
    assert value_to_id == {"Positive": 1, "positive ": 1, "POSITIVE": 1, "positive": 1, "neg": 0, " NEG": 0}
    assert label_names(raw, "label", ["Positive", "Neg"], normalize=True)[1]["positive "] == 0


def test_a_run_with_normalize_labels_trains_one_class_per_label(overrides, tmp_path):
    spell = [str.upper, str.title, lambda label: label + " ", lambda label: label + " "]
    cased = [{**row, "sentiment": spell[i // 3 % 4](row["sentiment"])} for i, row in enumerate(random_tweets(60))]
    pd.DataFrame(cased).to_csv(tmp_path / "cased.csv", index=False)
    _, prepared = sentiment.build_trainer(**{**overrides, "train_file": str(tmp_path / "cased.csv"),
                                             "normalize_labels": True, "max_steps": 1})
    assert prepared.label_names == ["negative", "neutral", "positive"]  # "negative " etc. win over their cased twins
    labels = {split: list(data["labels"]) for split, data in prepared.datasets.items()}
    expected = {split: [prepared.label_names.index(v.strip().lower()) for v in raw["sentiment"]]
                for split, raw in prepared.raw.items()}
    assert labels == expected


def test_missing_label_is_an_error():
    raw = DatasetDict({"train": Dataset.from_dict({"label": ["pos", None, "neg"]})})
    with pytest.raises(RecipeError, match="1 train rows have no 'label' value"):
        label_names(raw, "label", None)


def test_single_label_is_an_error():
    raw = DatasetDict({"train": Dataset.from_dict({"label": ["pos", "pos"]})})
    with pytest.raises(RecipeError, match="at least 2 labels"):
        label_names(raw, "label", None)


# ---- tokenization, collator, pooling ------------------------------------------------------------------


def test_tokenization_leaves_no_padding(overrides):
    _, prepared = sentiment.build_trainer(**overrides)
    tokenizer = prepared.tokenizer
    for text, encoded in zip(prepared.raw["train"]["text"], prepared.datasets["train"]):
        assert encoded["input_ids"] == tokenizer(text)["input_ids"]
        assert encoded["attention_mask"] == [1] * len(encoded["input_ids"])
    assert len({len(ids) for ids in prepared.datasets["train"]["input_ids"]}) > 1
    assert set(prepared.datasets["train"].column_names) == {"input_ids", "attention_mask", "labels"}


def test_collator_pads_to_the_longest_in_the_batch(overrides):
    _, prepared = sentiment.build_trainer(**overrides)
    features = [prepared.datasets["train"][i] for i in range(4)]
    lengths = [len(f["input_ids"]) for f in features]
    batch = prepared.data_collator(features)
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["labels"].tolist() == [f["labels"] for f in features]
    for row, length in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert batch["input_ids"][row, :length].tolist() == features[row]["input_ids"]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pooling_uses_the_last_real_token(overrides, padding_side):
    _, prepared = sentiment.build_trainer(**overrides)
    model, tokenizer = prepared.model.eval(), prepared.tokenizer
    tokenizer.padding_side = padding_side
    features = [prepared.datasets["train"][i] for i in range(6)]
    batch = prepared.data_collator(features)
    batch.pop("labels")
    assert (batch["attention_mask"] == 0).any()
    pad_column = 0 if padding_side == "left" else -1
    assert (batch["attention_mask"][:, pad_column] == 0).any()
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([f["input_ids"]])).logits for f in features])
        batched = model(**batch).logits
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


# ---- metrics ------------------------------------------------------------------------------------------


def test_metrics_equal_hand_computation():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 2])
    logits = np.eye(3)[predictions]
    metrics = classification_metrics(EvalPrediction(predictions=logits, label_ids=labels), ["neg", "neu", "pos"])
    # by hand: correct 4/6; precision neg 1/2, neu 2/3, pos 1/1; recall neg 1/2, neu 2/2, pos 1/2
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision_neg"] == pytest.approx(1 / 2)
    assert metrics["precision_neu"] == pytest.approx(2 / 3)
    assert metrics["precision_pos"] == pytest.approx(1.0)
    assert metrics["recall_neg"] == pytest.approx(1 / 2)
    assert metrics["recall_neu"] == pytest.approx(1.0)
    assert metrics["recall_pos"] == pytest.approx(1 / 2)
    f1 = [2 * p * r / (p + r) for p, r in [(1 / 2, 1 / 2), (2 / 3, 1), (1, 1 / 2)]]
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_majority_class_predictions():
    from hf_recipes.baselines import majority_class_predictions

    assert majority_class_predictions([0, 1, 1, 2], 5).tolist() == [1] * 5
    assert majority_class_predictions([2, 0, 2, 0], 2).tolist() == [0, 0]  # ties: the lowest id


# ---- end to end ---------------------------------------------------------------------------------------


def test_train_save_reload_predict_gives_identical_predictions(overrides, tmp_path):
    metrics = sentiment.run(**overrides)
    out = Path(overrides["output_dir"])
    for name in ["model.safetensors", "config.json", "tokenizer.json", "train_results.json", "eval_results.json",
                 "test_results.json", "all_results.json", "README.md", "report.md", "loss_curve.png",
                 "confusion_matrix.png"]:
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) or list(out.glob("*.bin")) == [out / "training_args.bin"]
    assert json.loads((out / "test_results.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert 0 < metrics["train_real_token_share"] <= 1
    report = (out / "report.md").read_text()
    assert "| accuracy |" in report and "confusion_matrix.png" in report and "loss_curve.png" in report

    texts = list(pd.read_csv(overrides["test_file"])["text"])
    predicted = sentiment.predict(out, texts, batch_size=4)
    # the same model in memory, one text at a time
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        probabilities = [model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0] for t in texts]
    assert [p["label"] for p in predicted] == [model.config.id2label[int(p.argmax())] for p in probabilities]
    assert [p["score"] for p in predicted] == pytest.approx([float(p.max()) for p in probabilities], abs=1e-5)
    # the saved test accuracy is what the reloaded model scores
    truth = list(pd.read_csv(overrides["test_file"])["sentiment"])
    assert np.mean([p["label"] == t for p, t in zip(predicted, truth)]) == pytest.approx(metrics["test_accuracy"])


def test_finished_run_is_not_overwritten_unless_asked(overrides):
    sentiment.run(**overrides)
    with pytest.raises(RecipeError, match="already holds a finished run"):
        sentiment.build_trainer(**overrides)
    sentiment.build_trainer(**overrides, overwrite_output_dir=True)


# ---- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train_file": "/nonexistent/train.csv"}, "error: train_file not found: /nonexistent/train.csv"),
        ({"label_column": "mood"}, "error: column 'mood' not found in train data"),
        ({"learning_rat": "0.1"}, "error: unknown argument '--learning_rat'"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(overrides, capsys, change, message):
    code = cli.main(["train", "sentiment", *cli_args({**overrides, **change})])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith(message)
    assert "Traceback" not in "\n".join(err)
    assert not Path(overrides["output_dir"]).exists()


def test_cli_unknown_test_label_writes_nothing(overrides, tmp_path, capsys):
    pd.DataFrame([{"text": "hello there", "sentiment": "sarcastic"}]).to_csv(tmp_path / "odd.csv", index=False)
    code = cli.main(["train", "sentiment", *cli_args({**overrides, "test_file": str(tmp_path / "odd.csv")})])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: label 'sarcastic' in the test split is not a known label (negative, neutral, positive): "
        f"row 1 of {tmp_path / 'odd.csv'}"
    )
    assert not Path(overrides["output_dir"]).exists()


def test_cli_predict_from_arguments_and_file(overrides, tmp_path, capsys):
    sentiment.run(**overrides)
    capsys.readouterr()
    (tmp_path / "texts.txt").write_text("i love this\n\ni hate this\n")
    code = cli.main(["predict", "sentiment", "--model_dir", overrides["output_dir"], "what a day", "--file",
                     str(tmp_path / "texts.txt")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    for line, text in zip(lines, ["what a day", "i love this", "i hate this"]):
        label, score, shown = line.split("\t")
        assert label in {"negative", "neutral", "positive"} and 0 < float(score) <= 1 and shown == text
    # RECIPE may be left out: the run's recipe.json names it, and the text is not taken for a recipe name
    assert cli.main(["predict", "--model_dir", overrides["output_dir"], "what a day"]) == 0
    assert capsys.readouterr().out.strip() == lines[0]


def test_cli_predict_without_a_model(tmp_path, capsys):
    assert cli.main(["predict", "sentiment", "--model_dir", str(tmp_path / "none"), "hi"]) == 2
    assert capsys.readouterr().err.strip() == f"error: model_dir not found: {tmp_path / 'none'}"


def test_cli_more_bad_inputs_are_one_line(overrides, tmp_path, capsys):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,sentiment\ncaf\xe9,positive\n".encode("latin-1"))
    blank = tmp_path / "blank.csv"
    pd.DataFrame([{"text": " ", "sentiment": "positive"}] * 3).to_csv(blank, index=False)
    config = tmp_path / "bad.yaml"
    config.write_text("num_train_epoch: 3\n")
    cases = [
        (cli_args({**overrides, "train_file": str(latin)}), "error: train_file is not UTF-8 text"),
        (cli_args({**overrides, "train_file": str(blank)}), "error: the train split is empty after dropping"),
        (["--config", str(config)], "error: unknown config key 'num_train_epoch'"),
    ]
    for argv, message in cases:
        assert cli.main(["train", "sentiment", *argv]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
    assert not Path(overrides["output_dir"]).exists()


def test_hub_unreachable_fails_fast_with_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the test's socket guard makes the hub unreachable
    assert cli.main(["train", "sentiment"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot reach the Hugging Face Hub")
    assert "--train_file" in err and "make demo" in err


@pytest.mark.slow
@needs_shared
def test_kaggle_csvs_load_with_the_sentiment_column(tiny_model_args):
    data = SHARED_DATA / "tweet_sentiment"
    _, prepared = sentiment.build_trainer(
        **{
            **tiny_model_args,
            "train_file": str(data / "train.csv"),
            "test_file": str(data / "test.csv"),
            "label_column": "sentiment",
            "tokenizer_name": str(SHARED_DATA / "gpt2_tokenizer"),
        }
    )
    assert prepared.model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert len(prepared.datasets["train"]) + len(prepared.datasets["validation"]) == 27481 - 1  # one empty text
    assert len(prepared.datasets["test"]) == 3534
    first = prepared.raw["test"][0]
    assert prepared.datasets["test"][0]["input_ids"] == prepared.tokenizer(first["text"])["input_ids"]


def test_gradient_accumulation_does_not_change_the_loss(overrides):
    """Same rows, same order, no learning: batch 4 and batch 2 x accumulation 2 report the same train loss
    (Trainer alone sums a classifier's micro-batch losses over accumulation steps)."""
    common = {**overrides, "learning_rate": 1e-12,  # effectively frozen (0 is refused: such a run cannot learn)
              "train_sampling_strategy": "sequential", "max_train_samples": 16,
              "logging_steps": 1, "warmup_steps": 0,
              "config_overrides": overrides["config_overrides"] + ",resid_pdrop=0,embd_pdrop=0,attn_pdrop=0"}
    whole, _ = sentiment.build_trainer(**common, per_device_train_batch_size=4, gradient_accumulation_steps=1)
    split, _ = sentiment.build_trainer(**common, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    loss_whole = whole.train().metrics["train_loss"]
    loss_split = split.train().metrics["train_loss"]
    assert 0.5 < loss_whole < 2.0  # about ln(3) for an untrained 3-class head
    assert loss_split == pytest.approx(loss_whole, rel=1e-5)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_mixed_precision_reaches_the_accelerator(overrides, precision):
    trainer, _ = sentiment.build_trainer(**{**overrides, "mixed_precision": precision})
    assert trainer.accelerator.mixed_precision == precision
    assert trainer.args.bf16 == (precision == "bf16")


@pytest.mark.parametrize("flags, dtype", [({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, torch.bfloat16),
                                          ({"avx2", "avx512f", "avx512_bf16"}, None), ({"avx2"}, None)])
def test_auto_precision_takes_bf16_on_cpus_with_amx_only(flags, dtype):
    # AVX512-BF16 without AMX measured no faster than fp32 (bench/bench_precision.py); AVX2 emulates bf16.
    from hf_recipes.precision import autocast_dtype_for_cpu

    assert autocast_dtype_for_cpu(flags) == dtype


@pytest.mark.parametrize("bf16_rate, chosen", [(30.0, "bf16"), (11.0, "no"), (1.0, "no")])
def test_measured_precision_takes_bf16_only_when_its_matmul_is_clearly_faster(bf16_rate, chosen, monkeypatch,
                                                                              tmp_path):
    from transformers import TrainingArguments

    from hf_recipes import precision
    from hf_recipes.precision import cpu_matmul_rates

    measured = cpu_matmul_rates(size=64, repeats=1)  # the real measurement runs and gives rates
    assert measured["fp32"] > 0 and measured["bf16"] > 0
    monkeypatch.setattr(precision, "cpu_matmul_rates", lambda: {"fp32": 10.0, "bf16": bf16_rate})
    training_args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    assert precision.resolve_precision(training_args, "measure") == chosen
    assert training_args.bf16 == (chosen == "bf16")


def test_predictions_come_back_in_dataset_order_under_length_grouping(overrides):
    trainer, prepared = sentiment.build_trainer(**overrides, train_sampling_strategy="group_by_length",
                                                per_device_eval_batch_size=4)
    test = prepared.datasets["test"]
    assert len(set(map(len, test["input_ids"]))) > 1  # lengths differ, so grouping would reorder them
    output = trainer.predict(test)
    assert output.label_ids.tolist() == test["labels"]
    model = trainer.model.eval()
    with torch.no_grad():
        one_by_one = [model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in test["input_ids"]]
    assert np.asarray(output.predictions) == pytest.approx(np.stack(one_by_one), abs=1e-5)
