"""The checks every run makes (leakage, over/underfitting, label balance, baselines) and the commands on top
(forgetting, few-shot baseline), against hand computation and scikit-learn."""

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_recipes import baselines
from hf_recipes.checks import Baseline, find_leakage, fit_verdict, normalize_text
from hf_recipes.report import metrics_table
from hf_recipes.forgetting import backbone_with_head, text_perplexity
from hf_recipes.recipes import instruct, lyrics, sentiment
from tests.conftest import random_tweets, TOKENIZER_DIR


# ---- leakage ------------------------------------------------------------------------------------------------
SPLITS = {
    "train": ["I love it", "i  LOVE it\n", "dup row", "dup row", "only in train", "Dup Row"],
    "validation": ["dup row", "fresh"],
    "test": ["I love it", "i love IT", "nothing like it", ""],
}


def test_normalize_text_ignores_case_and_whitespace_only():
    assert normalize_text("  Hello\tWORLD \n") == "hello world"
    assert normalize_text("hello, world") != normalize_text("hello world")


def test_leakage_counts_on_a_crafted_split():
    leakage, _ = find_leakage(SPLITS, "text")
    test, validation = leakage.overlaps["test"], leakage.overlaps["validation"]
    assert (test.rows, test.exact, test.normalized, test.train_rows) == (4, 1, 2, 2)
    assert (validation.rows, validation.exact, validation.normalized, validation.train_rows) == (2, 1, 1, 3)
    assert test.examples == ["I love it", "i love IT"]
    assert leakage.train_exact_repeats == 1  # the second "dup row"
    assert leakage.train_normalized_repeats == 3  # + "Dup Row" and "i  LOVE it"
    assert leakage.leaked == 3


def test_dedupe_keeps_only_train_rows_unseen_in_validation_and_test():
    _, keep = find_leakage(SPLITS, "text")
    assert [SPLITS["train"][i] for i in keep] == ["only in train"]


def test_leakage_reads_each_split_once_batch_by_batch_and_agrees_with_counting_texts():
    """Splits given as one-pass iterators, read in batches of 3 rows: the same counts as comparing the texts
    themselves with Counters, and blank rows kept by dedupe but never matched."""
    rng = np.random.default_rng(0)
    words = ["a", "B", "c", "a ", " ", ""]
    splits = {name: [" ".join(rng.choice(words, size=2)) for _ in range(rows)]
              for name, rows in (("train", 40), ("validation", 9), ("test", 11))}
    leakage, keep = find_leakage({name: iter(texts) for name, texts in splits.items()}, "text", examples=2,
                                 batch_rows=3)
    train = [t for t in splits["train"] if t.strip()]
    train_normal = Counter(normalize_text(t) for t in train)
    assert leakage.train_rows == 40
    assert leakage.train_exact_repeats == len(train) - len(set(train))
    assert leakage.train_normalized_repeats == len(train) - len(train_normal)
    for name in ("validation", "test"):
        texts = [t for t in splits[name] if t.strip()]
        matched = [t for t in texts if normalize_text(t) in train_normal]
        normal = {normalize_text(t) for t in texts}
        overlap = leakage.overlaps[name]
        assert (overlap.rows, overlap.exact, overlap.normalized, overlap.train_rows) == (
            len(splits[name]), sum(t in set(train) for t in texts), len(matched),
            sum(c for t, c in train_normal.items() if t in normal))
        assert overlap.examples == list(dict.fromkeys(matched))[:2]
    held_out = {normalize_text(t) for name in ("validation", "test") for t in splits[name] if t.strip()}
    assert list(keep) == [i for i, t in enumerate(splits["train"]) if normalize_text(t) not in held_out]


def write_csv(path, texts_and_labels):
    pd.DataFrame(texts_and_labels, columns=["text", "sentiment"]).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def leaky_sentiment(tmp_path, tiny_model_args):
    rows = [(r["text"], r["sentiment"]) for r in random_tweets(30)]
    train = rows + [("I love it", "positive"), ("i  LOVE it", "positive"), ("dup row", "neutral"), ("dup row", "neutral")]
    return {
        **tiny_model_args, "label_column": "sentiment",
        "train_file": write_csv(tmp_path / "train.csv", train),
        "validation_file": write_csv(tmp_path / "validation.csv", rows[:2] + [("fresh one", "neutral")]),
        "test_file": write_csv(tmp_path / "test.csv", [("I love it", "positive"), ("i love IT", "positive"),
                                                       ("brand new", "negative")]),
    }


def test_sentiment_leakage_and_dedupe(leaky_sentiment):
    _, prepared = sentiment.build_trainer(**leaky_sentiment)
    leakage = prepared.leakage
    assert (leakage.overlaps["test"].exact, leakage.overlaps["test"].normalized) == (1, 2)
    assert (leakage.overlaps["validation"].exact, leakage.overlaps["validation"].normalized) == (2, 2)
    assert (leakage.train_exact_repeats, leakage.train_normalized_repeats) == (1, 2)
    assert len(prepared.datasets["train"]) == 34

    _, deduped = sentiment.build_trainer(**leaky_sentiment, dedupe_splits=True)
    assert deduped.leakage.removed_from_train == 4  # both spellings of "I love it" and the two validation rows
    assert len(deduped.datasets["train"]) == 30
    held_out = {normalize_text(t) for s in ("validation", "test") for t in deduped.raw[s]["text"]}
    assert not held_out & {normalize_text(t) for t in deduped.raw["train"]["text"]}
    assert len(deduped.datasets["test"]) == 3  # evaluation splits are never touched


def test_lyrics_leakage_unit_is_the_song(tmp_path, tiny_model_args):
    song = "la la la\nwe sing along"
    files = {}
    for split, songs in {"train": [song, "another tune\nof the road", "third song here"] * 3,
                         "validation": ["La La La\nwe  sing along", "a new one"],
                         "test": ["the road home", "we sing along"]}.items():
        files[f"{split}_file"] = str(tmp_path / f"{split}.json")
        Path(files[f"{split}_file"]).write_text(json.dumps([{"text": s} for s in songs]))
    _, prepared = lyrics.build_trainer(**tiny_model_args, **files, block_size=8)
    leakage = prepared.leakage
    assert prepared.leakage and lyrics.RECIPE.leakage_unit == "song"
    # a line shared with a train song is not a repeated song
    assert (leakage.overlaps["validation"].normalized, leakage.overlaps["test"].normalized) == (1, 0)
    assert leakage.train_exact_repeats == 6


def test_instruct_leakage_unit_is_instruction_with_input(tmp_path, tiny_model_args):
    records = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(20)]
    records += [{"instruction": "Add the numbers.", "input": "2 and 2", "output": "4"}]
    test = [{"instruction": "add the numbers.", "input": "2  and 2", "output": "4"},  # same record, normalised
            {"instruction": "Add the numbers.", "input": "3 and 3", "output": "6"},  # same instruction, new input
            {"instruction": "Say 3.", "input": "", "output": "3"}]
    paths = {}
    for split, rows in {"train": records, "validation": records[:2], "test": test}.items():
        paths[f"{split}_file"] = str(tmp_path / f"{split}.json")
        Path(paths[f"{split}_file"]).write_text(json.dumps(rows))
    _, prepared = instruct.build_trainer(**tiny_model_args, **paths)
    overlap = prepared.leakage.overlaps["test"]
    assert (overlap.exact, overlap.normalized) == (1, 2)


# ---- over- and underfitting ---------------------------------------------------------------------------------
def history(train, evals):
    return [{"step": s, "loss": v} for s, v in train] + [{"step": s, "eval_loss": v} for s, v in evals]


FALLING_TRAIN = [(s, 2.0 - 0.011 * s) for s in range(10, 101, 10)]  # ends at 0.9


def test_rising_validation_loss_is_overfitting_with_the_lowest_step():
    log = history(FALLING_TRAIN, [(20, 1.5), (40, 1.2), (60, 1.3), (80, 1.45), (100, 1.6)])
    verdict = fit_verdict(log)
    assert verdict.kind == "overfitting" and verdict.best_step == 40
    assert "lowest at step 40" in verdict.message and "--load_best_model_at_end true" in verdict.message
    kept = fit_verdict(log, load_best_model_at_end=True, metric_for_best_model="eval_loss")
    assert "kept the step-40 model" in kept.message
    by_accuracy = fit_verdict(log, load_best_model_at_end=True, metric_for_best_model="accuracy")
    assert "best by accuracy" in by_accuracy.message


def test_one_rise_or_a_rise_without_falling_train_loss_is_not_overfitting():
    assert fit_verdict(history(FALLING_TRAIN, [(20, 1.5), (40, 1.2), (60, 1.3)])).kind == "healthy"
    flat_late = [(s, 1.2 if s > 40 else 2.0 - 0.02 * s) for s in range(10, 101, 10)]
    assert fit_verdict(history(flat_late, [(20, 1.5), (40, 1.2), (60, 1.3), (80, 1.4)])).kind != "overfitting"


def test_flat_training_loss_is_underfitting_and_suggests_lr_or_epochs():
    flat = [(s, 1.10 + 0.01 * (s % 20 == 0)) for s in range(10, 101, 10)]
    verdict = fit_verdict(history(flat, [(50, 1.1), (100, 1.1)]), learning_rate=5e-5, num_train_epochs=3)
    assert verdict.kind == "underfitting"
    assert "higher `learning_rate` (now 5e-05)" in verdict.message and "more epochs (now 3)" in verdict.message


def test_a_rising_training_loss_is_called_a_rise_not_a_drop():
    rising = [(s, 1.0905 + 0.00307 * s) for s in range(10, 101, 10)]
    verdict = fit_verdict(history(rising, []))
    head = (rising[0][1] + rising[1][1]) / 2
    tail = (rising[-2][1] + rising[-1][1]) / 2
    assert verdict.kind == "underfitting"
    assert (f"Training loss rose instead of falling: from {head:.4f} to {tail:.4f} ({(tail - head) / head:.1%} "
            "higher)") in verdict.message
    assert "lower" not in verdict.message and "barely" not in verdict.message


def test_healthy_run_and_a_run_too_short_to_judge():
    verdict = fit_verdict(history(FALLING_TRAIN, [(50, 1.4), (100, 1.0)]))
    assert verdict.kind == "healthy" and verdict.best_step == 100 and "more epochs may help" in verdict.message
    assert fit_verdict(history([(10, 2.0)], [])).kind == "unknown"
    assert "no evaluations during training" in fit_verdict(history(FALLING_TRAIN, [])).message


def test_a_large_train_validation_gap_is_overfitting_even_without_a_rise():
    train = [(s, 2.3 - 0.0056 * s) for s in range(10, 101, 10)]  # ends at 1.74
    verdict = fit_verdict(history(train, [(50, 3.5), (100, 3.36)]))
    assert verdict.kind == "overfitting"
    tail = (train[-2][1] + train[-1][1]) / 2  # the last fifth of 10 logged losses
    assert f"is {3.36 / tail:.2f}x the training loss of the run's last fifth ({tail:.4f})" in verdict.message
    assert fit_verdict(history(train, [(50, 3.5), (100, 3.36)]), max_gap=1.0).kind == "healthy"


def test_a_classifier_no_better_than_the_majority_class_is_not_learning_whatever_its_losses():
    rising = history(FALLING_TRAIN, [(20, 1.5), (40, 1.2), (60, 1.3), (80, 1.45), (100, 1.6)])
    verdict = fit_verdict(rising, baseline=Baseline("accuracy", fine_tuned=0.40, majority=0.4046))
    assert verdict.kind == "underfitting" and verdict.message.startswith("**Not learning.**")
    assert "(0.4000) is no better than always predicting the majority class (0.4046)" in verdict.message
    assert fit_verdict(rising, baseline=Baseline("accuracy", 0.70, 0.4046)).kind == "overfitting"


def test_metrics_tables_open_with_what_the_model_achieved():
    table = metrics_table({"train": {"train_runtime": 3.0, "train_loss": 1.2, "train_samples": 10},
                           "eval": {"eval_runtime": 1.0, "eval_samples_per_second": 5.0, "eval_precision_a": 0.5,
                                    "eval_accuracy": 0.7, "eval_loss": 1.3, "epoch": 2.0}})
    metrics = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert metrics == ["loss", "accuracy", "precision_a", "samples", "runtime", "samples_per_second", "epoch"]


# ---- few-shot scoring ---------------------------------------------------------------------------------------
class BigramLM(torch.nn.Module):
    """Next-token logits depend only on the current token, through a table set by hand."""

    def __init__(self, vocab_size, n_positions=64):
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, vocab_size)
        torch.nn.init.zeros_(self.table.weight)
        self.config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions)

    @property
    def device(self):
        return self.table.weight.device

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = self.table(input_ids)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok.pad_token = tok.eos_token
    return tok


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_few_shot_scorer_picks_the_most_likely_label_word(tokenizer):
    model = BigramLM(len(tokenizer))
    up, down = ids(tokenizer, " up")[0], ids(tokenizer, " down")[0]
    good, bad = ids(tokenizer, " good")[0], ids(tokenizer, " bad")[0]
    with torch.no_grad():
        model.table.weight[up, good] = 3.0
        model.table.weight[down, bad] = 2.0
    texts = ["i feel up", "i feel down", "i feel up"]
    assert baselines.few_shot_predictions(model, tokenizer, texts, ["bad", "good"], template="{text}").tolist() == [1, 0, 1]
    scores = baselines.label_log_likelihoods(model, tokenizer, texts[:2], ["bad", "good"])
    expected = torch.log_softmax(model.table.weight.detach()[[up, down]], -1)[:, [bad, good]]
    assert scores == pytest.approx(expected.numpy(), abs=1e-6)


def test_multi_token_label_words_sum_the_log_probability_of_every_token(tokenizer):
    model = BigramLM(len(tokenizer))
    positive, negative = ids(tokenizer, " positive"), ids(tokenizer, " negative")
    assert len(positive) == 3 and len(negative) == 4
    up = ids(tokenizer, " up")[0]
    with torch.no_grad():
        model.table.weight[up, positive[0]] = 1.0
        model.table.weight[positive[0], positive[1]] = 4.0
        model.table.weight[up, negative[0]] = 2.5  # the likelier first token, but the rest of the word is not
    scores = baselines.label_log_likelihoods(model, tokenizer, ["i feel up"], ["negative", "positive"])
    log_probs = torch.log_softmax(model.table.weight.detach(), -1)

    def by_hand(word):
        chain = [up] + word
        return sum(float(log_probs[a, b]) for a, b in zip(chain, chain[1:]))

    assert scores[0] == pytest.approx([by_hand(negative), by_hand(positive)], abs=1e-5)
    assert scores[0].argmax() == 1


def test_scores_of_a_real_model_do_not_depend_on_batching_or_the_fast_path(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=64))
    prompts = ["Tweet: a\nSentiment:", "Tweet: a much longer tweet about the day\nSentiment:"]
    together = baselines.label_log_likelihoods(model, tokenizer, prompts, ["good", "bad"], batch_size=8)
    alone = np.vstack([baselines.label_log_likelihoods(model, tokenizer, [p], ["good", "bad"]) for p in prompts])
    generic = baselines.label_log_likelihoods(model, tokenizer, prompts, ["good", "bad", "positive"], batch_size=8)
    assert together == pytest.approx(alone, abs=1e-5)
    assert together == pytest.approx(generic[:, :2], abs=1e-5)  # one pass per prompt == one per (prompt, label)


def test_demonstrations_take_the_classes_in_turn():
    labels = [0] * 10 + [1] * 3 + [2] * 5
    picked = baselines.pick_demonstrations(labels, 4, seed=1)
    assert sorted(Counter(labels[i] for i in picked).values()) == [1, 1, 2]
    assert picked == baselines.pick_demonstrations(labels, 4, seed=1) and len(set(picked)) == 4
    prompts = baselines.few_shot_prompts(["new\ntext"], [("old one", "good")], "T: {text}\nS:")
    assert prompts == ["T: old one\nS: good\n\nT: new text\nS:"]


# ---- forgetting ---------------------------------------------------------------------------------------------
def test_text_perplexity_is_the_mean_loss_over_every_predicted_token(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=16)).eval()
    text = "the quick brown fox jumps over the lazy dog " * 5
    token_ids = tokenizer(text)["input_ids"]
    result = text_perplexity(model, tokenizer, text, max_tokens=40)
    blocks = [token_ids[:16], token_ids[16:32], token_ids[32:40]]
    with torch.no_grad():
        losses = [model(input_ids=torch.tensor([b]), labels=torch.tensor([b])).loss.item() * (len(b) - 1) for b in blocks]
    assert result.tokens == 40 and result.truncated == (len(token_ids) > 40)
    assert result.loss == pytest.approx(sum(losses) / (15 + 15 + 7), rel=1e-5)
    assert result.perplexity == pytest.approx(np.exp(result.loss))


def test_backbone_keeps_the_starting_head(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=32)
    start = GPT2LMHeadModel(config)
    start.save_pretrained(tmp_path)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    text = "a b c d e f g " * 4
    same = backbone_with_head(classifier, start)
    assert text_perplexity(same, tokenizer, text, 100).loss == pytest.approx(
        text_perplexity(start, tokenizer, text, 100).loss, rel=1e-6)
    with torch.no_grad():
        classifier.transformer.wte.weight.add_(1.0)  # fine-tuning moves the (tied) input embeddings
    moved = backbone_with_head(classifier, start)
    assert torch.equal(moved.lm_head.weight, start.lm_head.weight)
    assert torch.equal(moved.transformer.wte.weight, classifier.transformer.wte.weight)


# ---- end to end ---------------------------------------------------------------------------------------------
@pytest.fixture
def starting_lm(tmp_path, tokenizer):
    """A saved tiny GPT-2 language model, as a pretrained starting point would be."""
    torch.manual_seed(0)
    folder = tmp_path / "start"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=128)
                    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_sentiment_report_reads_the_model_against_baselines_few_shot_and_forgetting(
        leaky_sentiment, starting_lm, tmp_path):
    forgetting_file = tmp_path / "plain.txt"
    forgetting_file.write_text("Once upon a time there was a river and a song. " * 20)
    overrides = {**leaky_sentiment, "model_name_or_path": str(starting_lm), "model_type": None,
                 "config_overrides": None, "tokenizer_name": None, "num_train_epochs": 2, "logging_steps": 1,
                 "learning_rate": 1e-3, "train_sampling_strategy": "group_by_length",
                 "eval_strategy": "epoch", "few_shot_k": [0, 2], "few_shot_label_words": ["bad", "meh", "good"],
                 "forgetting_eval_file": str(forgetting_file)}
    metrics = sentiment.run(**overrides)
    out = Path(overrides["output_dir"])
    found = json.loads((out / "checks.json").read_text())
    report = (out / "report.md").read_text()
    _, prepared = sentiment.build_trainer(**{**overrides, "output_dir": str(tmp_path / "again")})
    names = prepared.label_names
    train_texts, train_labels = list(prepared.raw["train"]["text"]), list(prepared.datasets["train"]["labels"])
    test_texts, y_true = list(prepared.raw["test"]["text"]), np.asarray(prepared.datasets["test"]["labels"])

    rows = {row["model"]: row for row in found["baselines"]["rows"]}
    assert found["baselines"]["split"] == "test"
    counts = Counter(train_labels)
    majority = min(label for label, n in counts.items() if n == max(counts.values()))  # ties: the lowest id
    assert rows["majority class (from train)"]["accuracy"] == pytest.approx(np.mean(y_true == majority))
    direct = LogisticRegression(max_iter=1000, random_state=42).fit(
        (vectorizer := TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)).fit_transform(train_texts), train_labels
    ).predict(vectorizer.transform(test_texts))
    assert rows["TF-IDF + logistic regression"]["accuracy"] == pytest.approx(accuracy_score(y_true, direct))
    assert rows["TF-IDF + logistic regression"]["macro-F1"] == pytest.approx(
        f1_score(y_true, direct, labels=[0, 1, 2], average="macro", zero_division=0))
    assert rows["fine-tuned"]["accuracy"] == pytest.approx(metrics["test_accuracy"])

    start = AutoModelForCausalLM.from_pretrained(starting_lm)
    for k in (0, 2):
        shots = [(train_texts[i], ["bad", "meh", "good"][train_labels[i]])
                 for i in baselines.pick_demonstrations(train_labels, k, 42)]
        predicted = baselines.few_shot_predictions(start, prepared.tokenizer, test_texts, ["bad", "meh", "good"], shots)
        assert rows[f"starting LM, {k}-shot prompt"]["accuracy"] == pytest.approx(accuracy_score(y_true, predicted))
    assert f"scored on all {len(test_texts)} rows" in report  # fewer than few_shot_max_samples (1,000 by default)

    for name in names:
        counts = Counter(prepared.datasets["train"]["labels"])[names.index(name)]
        assert f"| {name} | {counts} (" in report
    assert "## Label balance" in report and "## Baselines on the test split" in report
    assert "## Data leakage (unit: text)" in report and "I love it" in report
    assert found["leakage"]["overlaps"]["test"]["normalized"] == 2
    assert found["fitting"]["verdict"] in {"overfitting", "underfitting", "healthy"}
    assert "Loss curve" in report and ("fitting" in report or "No sign" in report)

    text = forgetting_file.read_text()
    assert found["forgetting"]["applies"] is True
    assert found["forgetting"]["perplexity_before"] == pytest.approx(
        text_perplexity(start, prepared.tokenizer, text, 50_000).perplexity, rel=1e-5)
    fine_tuned = AutoModelForSequenceClassification.from_pretrained(out)
    assert found["forgetting"]["perplexity_after"] == pytest.approx(
        text_perplexity(backbone_with_head(fine_tuned, start), prepared.tokenizer, text, 50_000).perplexity, rel=1e-4)
    assert found["forgetting"]["perplexity_after"] != found["forgetting"]["perplexity_before"]


@pytest.mark.slow
def test_forgetting_on_a_causal_lm_and_on_a_classifier_built_from_scratch(tmp_path, tiny_model_args):
    from tests.conftest import SAMPLES

    forgetting_file = tmp_path / "plain.txt"
    forgetting_file.write_text("Some plain prose about rivers, roads and evenings. " * 10)
    overrides = {**tiny_model_args, "train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 64,
                 "max_steps": 3, "forgetting_eval_file": str(forgetting_file)}
    lyrics.run(**overrides)
    found = json.loads((Path(overrides["output_dir"]) / "checks.json").read_text())
    _, prepared = lyrics.build_trainer(**{**overrides, "output_dir": str(tmp_path / "again")})  # the same starting model
    text = forgetting_file.read_text()
    assert found["forgetting"]["loss_before"] == pytest.approx(
        text_perplexity(prepared.model, prepared.tokenizer, text, 50_000).loss, rel=1e-5)
    trained = AutoModelForCausalLM.from_pretrained(overrides["output_dir"])
    assert found["forgetting"]["loss_after"] == pytest.approx(
        text_perplexity(trained, prepared.tokenizer, text, 50_000).loss, rel=1e-5)
    assert "## Forgetting" in (Path(overrides["output_dir"]) / "report.md").read_text()

    scratch = {**tiny_model_args, "train_file": str(SAMPLES / "sentiment" / "train.csv"), "label_column": "sentiment",
               "max_steps": 2, "forgetting_eval_file": str(forgetting_file), "output_dir": str(tmp_path / "clf")}
    sentiment.run(**scratch)
    found = json.loads((tmp_path / "clf" / "checks.json").read_text())
    assert found["forgetting"]["applies"] is False and "built from scratch" in found["forgetting"]["reason"]
    assert found["baselines"]["split"] == "validation"  # no test split: the baselines use validation


def test_checks_can_be_switched_off(tmp_path, tiny_model_args):
    from tests.conftest import SAMPLES

    overrides = {**tiny_model_args, "train_file": str(SAMPLES / "sentiment" / "train.csv"),
                 "label_column": "sentiment", "max_steps": 1, "check_leakage": False, "check_fitting": False,
                 "classification_baselines": False}
    sentiment.run(**overrides)
    report = (Path(overrides["output_dir"]) / "report.md").read_text()
    assert json.loads((Path(overrides["output_dir"]) / "checks.json").read_text()) == {}
    assert "leakage" not in report.lower() and "Baselines" not in report and "Label balance" not in report


def test_reusing_the_demonstrations_prefix_gives_the_same_scores(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=128))
    shots = [("i love this so much", "good"), ("what an awful day", "bad"), ("the bus is at nine", "meh")]
    prompts = baselines.few_shot_prompts(["a", "a much longer text about the evening bus", "so sad"], shots)
    assert baselines.common_prefix_length(tokenizer(prompts)["input_ids"]) >= 8
    for words in (["good", "bad"], ["good", "positive", "meh"]):  # one pass per prompt, and per (prompt, label)
        reused = baselines.label_log_likelihoods(model, tokenizer, prompts, words, batch_size=2)
        fresh = baselines.label_log_likelihoods(model, tokenizer, prompts, words, batch_size=2, reuse_prefix=False)
        assert reused == pytest.approx(fresh, abs=1e-4)


# ---- bounded classification checks --------------------------------------------------------------------------
def baselines_run(train_rows, test_rows, seed=7):
    """The classification-baselines check's inputs for a run, with the fine-tuned model predicting class 0."""
    from datasets import Dataset, DatasetDict
    from transformers.trainer_utils import PredictionOutput

    from hf_recipes.checks import RunState

    raw = DatasetDict({split: Dataset.from_dict({"text": [t for t, _ in rows]})
                       for split, rows in (("train", train_rows), ("test", test_rows))})
    datasets = DatasetDict({split: Dataset.from_dict({"labels": [label for _, label in rows]})
                            for split, rows in (("train", train_rows), ("test", test_rows))})
    prepared = SimpleNamespace(label_names=["neg", "pos"], raw=raw, datasets=datasets)
    args = SimpleNamespace(data=SimpleNamespace(text_column="text"), training=SimpleNamespace(seed=seed),
                           checks=SimpleNamespace(few_shot_k=None))
    logits = np.tile([1.0, 0.0], (len(test_rows), 1))
    return RunState(None, args, None, prepared, scored=PredictionOutput(logits, None, {}))


WORDS = {0: ["awful", "bad", "sad", "hate"], 1: ["great", "good", "happy", "love"]}


def labelled_texts(rows, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    return [(f"{rng.choice(WORDS[label])} day {i}", int(label)) for i, label in enumerate(labels)]


def test_tfidf_baseline_is_fit_on_every_train_row_up_to_its_cap_and_on_a_stated_sample_beyond(monkeypatch):
    train, test = labelled_texts(40, 0), labelled_texts(12, 1)
    test_texts, y_true = [t for t, _ in test], np.array([label for _, label in test])

    def direct_accuracy(rows):
        predicted = baselines.tfidf_logistic_regression_predictions(
            [t for t, _ in rows], [label for _, label in rows], test_texts, seed=7)
        return accuracy_score(y_true, predicted)

    run = baselines_run(train, test)
    baselines.ClassificationBaselines().after_training(run)
    rows = {row["model"]: row for row in run.found["baselines"]["rows"]}
    assert run.found["baselines"]["tfidf_train_rows"] == 40
    assert rows["TF-IDF + logistic regression"]["accuracy"] == pytest.approx(direct_accuracy(train))
    assert "random sample" not in run.checks.markdown()

    monkeypatch.setattr(baselines, "TFIDF_MAX_TRAIN_ROWS", 25)
    sample = baselines.baseline_train_rows(40, 7, 25)
    assert len(sample) == 25 and len(set(sample)) == 25 and list(sample) == sorted(sample) and sample.max() < 40
    assert np.array_equal(sample, baselines.baseline_train_rows(40, 7, 25))  # seeded: the same rows each run
    assert baselines.baseline_train_rows(25, 7, 25) is None
    run = baselines_run(train, test)
    baselines.ClassificationBaselines().after_training(run)
    rows = {row["model"]: row for row in run.found["baselines"]["rows"]}
    assert run.found["baselines"]["tfidf_train_rows"] == 25
    assert rows["TF-IDF + logistic regression"]["accuracy"] == pytest.approx(direct_accuracy([train[i] for i in sample]))
    counts = Counter(label for _, label in train)  # the majority class still counts every train row
    majority = min(label for label, n in counts.items() if n == max(counts.values()))
    assert rows["majority class (from train)"]["accuracy"] == pytest.approx(np.mean(y_true == majority))
    assert "fit on a random sample of 25 of the 40 train rows (seed 7; at most 25)" in run.checks.markdown()


def test_label_balance_counts_each_class_of_each_split():
    from hf_recipes.checks import label_balance_table

    table = label_balance_table({"train": np.array([0, 2, 2, 2]), "test": [1, 1]}, ["neg", "neu", "pos"])
    assert "| neg | 1 (25.0%) | 0 (0.0%) |" in table
    assert "| neu | 0 (0.0%) | 2 (100.0%) |" in table
    assert "| pos | 3 (75.0%) | 0 (0.0%) |" in table


def test_forgetting_tokenizes_a_prefix_of_a_long_file_and_finds_the_same_tokens(tokenizer, monkeypatch):
    from hf_recipes import forgetting

    rng = np.random.default_rng(0)
    words = ["river", "song", "  morning", "sun,", "darling\t", "42", "O'er", "—"]
    lines = [" ".join(rng.choice(words, size=rng.integers(1, 12))) + ("  " if i % 3 else "") for i in range(3000)]
    text = "\n".join(lines) + "\n\n   \n"
    whole = tokenizer(text)["input_ids"]
    calls = []
    monkeypatch.setattr(forgetting, "CUT_MARGIN_TOKENS", 8)

    def counting(texts, **kwargs):  # the tokenizer, recording how much text it was given
        calls.append(len(texts))
        return tokenizer(texts, **kwargs)

    for count in (1, 50, 333, 2000):
        calls.clear()
        ids, truncated = forgetting.leading_tokens(counting, text, count)
        assert ids == whole[:count] and truncated
        assert max(calls) < len(text) / 2  # a prefix, not the whole file
    calls.clear()
    assert forgetting.leading_tokens(counting, text, len(whole)) == (whole, False)
    assert forgetting.leading_tokens(counting, text, len(whole) - 1) == (whole[:-1], True)
    assert forgetting.leading_tokens(counting, "no line break " * 400, 10) == (
        tokenizer("no line break " * 400)["input_ids"][:10], True)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=16)).eval()
    result = text_perplexity(model, tokenizer, text, max_tokens=40)
    blocks = [whole[:16], whole[16:32], whole[32:40]]
    with torch.no_grad():
        losses = [model(input_ids=torch.tensor([b]), labels=torch.tensor([b])).loss.item() * (len(b) - 1) for b in blocks]
    assert result.tokens == 40 and result.truncated
    assert result.loss == pytest.approx(sum(losses) / 37, rel=1e-5)
