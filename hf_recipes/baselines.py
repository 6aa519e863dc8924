"""What a fine-tuned classifier is read against: the majority class, TF-IDF + logistic regression, and few-shot
prompting of the starting causal LM (each label scored by its log-likelihood)."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline, make_pipeline

from hf_recipes.checks import MAJORITY, Check, RunState, label_balance_table
from hf_recipes.collators import position_ids_from_mask
from hf_recipes.config import DEFAULT_FEW_SHOT_TEMPLATE
from hf_recipes.data import arrow_column, column_values
from hf_recipes.errors import RecipeError
from hf_recipes.forgetting import cached_starting_language_model
from hf_recipes.model import context_length
from hf_recipes.report import markdown_table


def majority_class_predictions(train_labels: Sequence[int], rows: int) -> np.ndarray:
    """Always the most frequent training label (the lowest id among ties)."""
    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    return np.full(rows, values[counts.argmax()])


def tfidf_logistic_regression(seed: int) -> Pipeline:
    """Word uni- and bigrams, sublinear TF-IDF, L2 logistic regression: the usual strong linear text baseline."""
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=1000, random_state=seed),
    )


# The TF-IDF baseline is fit on at most this many train rows (a seeded random sample beyond it): fitting grows
# faster than linearly with rows (90k tweets take about a minute on 2 cores, 1M minutes and GBs), while its accuracy
# settles long before; 20k keeps it a small share of an epoch of the data it samples.
TFIDF_MAX_TRAIN_ROWS = 20_000


def baseline_train_rows(rows: int, seed: int, limit: int = TFIDF_MAX_TRAIN_ROWS) -> np.ndarray | None:
    """Sorted indices of a seeded random sample of ``limit`` train rows, or None when all ``rows`` fit."""
    if rows <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def label_column(dataset) -> np.ndarray:
    """A split's ``labels`` as one array, read from Arrow (no Python list per row)."""
    return arrow_column(dataset, "labels").to_numpy()


def tfidf_logistic_regression_predictions(
    train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str], seed: int
) -> np.ndarray:
    pipeline = tfidf_logistic_regression(seed)
    try:
        pipeline.fit(list(train_texts), list(train_labels))
    except ValueError as err:
        if "empty vocabulary" not in str(err):
            raise
        # Texts without word characters (emoji, symbols): character n-grams still see something.
        pipeline.set_params(tfidfvectorizer__analyzer="char_wb", tfidfvectorizer__ngram_range=(1, 3))
        pipeline.fit(list(train_texts), list(train_labels))
    return pipeline.predict(list(test_texts))


def score_row(model: str, y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> dict:
    labels = list(range(num_labels))
    return {
        "model": model,
        "rows": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro-F1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


# ---- few-shot prompting ------------------------------------------------------------------------------------
def pick_demonstrations(train_labels: Sequence[int], k: int, seed: int) -> list[int]:
    """``k`` train rows, the classes taken in turn (every class shows once k reaches the number of classes), each
    class's rows in a seeded random order; the demonstrations themselves are then shuffled."""
    labels = np.asarray(train_labels)
    rng = np.random.default_rng(seed)
    queues = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    picked: list[int] = []
    while len(picked) < k and any(queues.values()):
        for queue in queues.values():
            if queue and len(picked) < k:
                picked.append(int(queue.pop(0)))
    rng.shuffle(picked)
    return picked


def flat(text: str) -> str:
    return " ".join(text.split())


def few_shot_prompts(
    texts: Sequence[str], demonstrations: Sequence[tuple[str, str]], template: str = DEFAULT_FEW_SHOT_TEMPLATE
) -> list[str]:
    """One prompt per text: the labelled demonstrations, then the text with its label left for the model."""
    prefix = "".join(template.format(text=flat(t)) + f" {word}\n\n" for t, word in demonstrations)
    return [prefix + template.format(text=flat(t)) for t in texts]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, leaving at least one token of each."""
    shortest = min(len(s) for s in sequences) - 1
    first = sequences[0]
    length = 0
    while length < shortest and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


@torch.no_grad()
def label_log_likelihoods(model, tokenizer, prompts: Sequence[str], label_words: Sequence[str],
                          batch_size: int = 16, reuse_prefix: bool = True) -> np.ndarray:
    """``[prompt, label]`` log-likelihood of " <label word>" following each prompt: the summed log-probabilities
    of the word's tokens. A prompt too long for the model keeps its end (the text being labelled).

    The demonstrations every few-shot prompt starts with are run through the model once and their keys and values
    reused for every text (``reuse_prefix``), which makes k-shot scoring cost about what 0-shot does.
    """
    words = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in label_words]
    longest = max(len(w) for w in words)
    room = context_length(model.config) - longest
    prompt_ids = [ids[-room:] for ids in tokenizer(list(prompts), verbose=False)["input_ids"]]
    if any(not ids for ids in prompt_ids):
        raise RecipeError("few-shot scoring needs a non-empty prompt for every text")
    # Every label word one token long (" positive", " negative" for GPT-2): one pass per prompt scores them all.
    single = longest == 1
    sequences = [(i, None, ids) for i, ids in enumerate(prompt_ids)] if single else [
        (i, j, ids + w) for i, ids in enumerate(prompt_ids) for j, w in enumerate(words)]
    scores = np.zeros((len(prompt_ids), len(words)))
    was_training = model.training
    model.eval()
    # Any id does under the mask; EOS is one the starting model has a row for (a classifier's own pad token is not)
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    order = sorted(range(len(sequences)), key=lambda s: len(sequences[s][2]))
    keep = 1 if single else longest + 1
    try:
        shared = common_prefix_length([ids for _, _, ids in sequences]) if reuse_prefix else 0
        prefix_cache = None
        if shared >= 8:  # below that, the cache bookkeeping costs more than it saves
            prefix = torch.tensor([sequences[0][2][:shared]], device=model.device)
            prefix_cache = model(input_ids=prefix, use_cache=True).past_key_values
        else:
            shared = 0
        for start in range(0, len(order), batch_size):
            batch = [sequences[s] for s in order[start:start + batch_size]]
            rests = [ids[shared:] for _, _, ids in batch]
            width = max(len(rest) for rest in rests)
            # Left padding (after the shared prefix) lines up every sequence's end, so only the last positions'
            # logits are computed; the mask hides the padding and positions count real tokens only.
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=model.device)
            mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests],
                                device=model.device)
            inputs = {"input_ids": input_ids, "attention_mask": mask,
                      "position_ids": position_ids_from_mask(mask)[:, shared:], "logits_to_keep": keep}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                inputs["past_key_values"] = cache
            log_probs = torch.log_softmax(model(**inputs).logits.float(), dim=-1)
            for row, (i, j, _) in enumerate(batch):
                if single:
                    scores[i] = log_probs[row, -1, [w[0] for w in words]].cpu().numpy()
                else:
                    word = words[j]
                    # logits at position p predict token p + 1: the word's tokens are predicted by the positions
                    # just before them, the last of which is second to last in the sequence.
                    steps = log_probs[row, keep - 1 - len(word): keep - 1]
                    scores[i, j] = float(steps.gather(1, torch.tensor(word, device=steps.device)[:, None]).sum())
    finally:
        model.train(was_training)
    return scores


def few_shot_predictions(
    model,
    tokenizer,
    texts: Sequence[str],
    label_words: Sequence[str],
    demonstrations: Sequence[tuple[str, str]] = (),
    template: str = DEFAULT_FEW_SHOT_TEMPLATE,
    batch_size: int = 16,
) -> np.ndarray:
    """The label id whose word the model finds most likely after each prompt."""
    prompts = few_shot_prompts(texts, demonstrations, template)
    return label_log_likelihoods(model, tokenizer, prompts, label_words, batch_size).argmax(1)


def few_shot_label_words(label_names: list[str] | None, words: list[str] | None) -> list[str]:
    """The word each label is scored by: --few_shot_label_words, else the label names when they are words."""
    if words:
        if len(words) != len(label_names):
            raise RecipeError(f"few_shot_label_words has {len(words)} words for {len(label_names)} labels "
                              f"({', '.join(label_names)})")
        return list(words)
    if any(not name.strip() or name.strip().lstrip("-").isdigit() for name in label_names):
        raise RecipeError(f"labels {', '.join(label_names)} are not words a language model can be asked for; "
                          "give one word per label with --few_shot_label_words")
    return [name.strip() for name in label_names]


class ClassificationBaselines(Check):
    """Label balance per split, and the fine-tuned accuracy against the majority class, TF-IDF + logistic
    regression and (when asked) few-shot prompting, all on the test split (validation without one)."""

    name = "classification baselines"

    def applies(self, run: RunState) -> bool:
        return run.args.checks.classification_baselines

    def after_training(self, run: RunState) -> None:
        prepared, args = run.prepared, run.args
        names, text = prepared.label_names, args.data.text_column
        labels = {split: label_column(dataset) for split, dataset in prepared.datasets.items()}
        run.checks.add("Label balance", label_balance_table(labels, names))

        split = "test" if "test" in prepared.datasets else "validation"
        texts, y_true = column_values(prepared.raw[split], text), labels[split]
        train, train_labels = prepared.raw["train"], labels["train"]
        sample = baseline_train_rows(len(train), args.training.seed, TFIDF_MAX_TRAIN_ROWS)
        if sample is not None:
            train, train_labels = train.select(sample), train_labels[sample]
        scored = run.scored
        y_fine_tuned = np.asarray(scored.predictions[0] if isinstance(scored.predictions, tuple)
                                  else scored.predictions).argmax(-1)
        rows = [
            score_row(MAJORITY, y_true, majority_class_predictions(labels["train"], len(y_true)), len(names)),
            score_row("TF-IDF + logistic regression", y_true, tfidf_logistic_regression_predictions(
                column_values(train, text), train_labels, texts, args.training.seed), len(names)),
        ]
        notes = [] if sample is None else [
            f"TF-IDF + logistic regression: fit on a random sample of {len(sample):,} of the "
            f"{len(prepared.raw['train']):,} train rows (seed {args.training.seed}; at most {TFIDF_MAX_TRAIN_ROWS:,})."]
        if args.checks.few_shot_k is not None:
            few_rows, note = self.few_shot_rows(run, texts, y_true, y_fine_tuned)
            rows += few_rows
            notes.append(note)
        rows.append(score_row("fine-tuned", y_true, y_fine_tuned, len(names)))
        run.found["baselines"] = {"split": split, "rows": rows,
                                  "tfidf_train_rows": len(train_labels)}
        run.checks.add(f"Baselines on the {split} split", "\n\n".join([markdown_table(rows), *notes]))

    @staticmethod
    def few_shot_rows(run: RunState, texts, y_true, y_fine_tuned):
        start_lm, reason = cached_starting_language_model(run)
        if start_lm is None:
            return [], f"Few-shot baseline: does not apply ({reason})."
        prepared, args = run.prepared, run.args
        options, names, seed = args.checks, prepared.label_names, args.training.seed
        words = few_shot_label_words(names, options.few_shot_label_words)
        rows_scored = min(len(texts), options.few_shot_max_samples or len(texts))
        scored_note = (f"scored on all {rows_scored:,} rows" if rows_scored == len(texts) else
                       f"scored on the first {rows_scored:,} of {len(texts):,} rows (`few_shot_max_samples`)")
        texts, y_true = texts[:rows_scored], y_true[:rows_scored]
        train = prepared.raw["train"]
        train_labels = label_column(prepared.datasets["train"])
        lm = start_lm.to(run.trainer.args.device)
        rows = []
        try:
            for k in options.few_shot_k:
                shots = [(train[i][args.data.text_column], words[train_labels[i]])
                         for i in pick_demonstrations(train_labels, k, seed)]
                predicted = few_shot_predictions(lm, prepared.tokenizer, texts, words, shots, options.few_shot_template,
                                                 batch_size=args.training.per_device_eval_batch_size)
                rows.append(score_row(f"starting LM, {k}-shot prompt", y_true, predicted, len(names)))
        finally:
            start_lm.to("cpu")
        if rows_scored < len(y_fine_tuned):
            rows.append(score_row(f"fine-tuned (same first {rows_scored} rows)", y_true,
                                  y_fine_tuned[:rows_scored], len(names)))
        note = (f"Few-shot: `{args.model.model_name_or_path}` as a plain language model; each label is scored by "
                f"the log-likelihood of its word ({', '.join(repr(w) for w in words)}) after the prompt; "
                f"k examples from train, classes in turn, seed {seed}; {scored_note}.")
        return rows, note
