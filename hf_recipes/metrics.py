"""Metrics that work offline (scikit-learn), shaped for ``Trainer(compute_metrics=...)``."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from transformers import EvalPrediction


# Trainer averages per-batch mean losses, and across processes pairs each batch with the others' (and with the
# samples accelerate repeats to even out the last batches), so its eval loss depends on batch size and process
# count. Metrics that report EXACT_LOSS replace it with the mean over every example (or token) of the split.
EXACT_LOSS = "exact_loss"


def classification_metrics(eval_pred: EvalPrediction, label_names: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro-F1, per-class precision/recall (keys ``precision_<label>``, ``recall_<label>``) and the
    mean cross-entropy over every example."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(-1)
    label_ids = list(range(len(label_names)))
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, predictions, labels=label_ids, zero_division=0
    )
    metrics = {
        EXACT_LOSS: float(F.cross_entropy(torch.as_tensor(np.asarray(logits), dtype=torch.float32),
                                          torch.as_tensor(np.asarray(labels), dtype=torch.long))),
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=label_ids, average="macro", zero_division=0)),
    }
    for name, p, r in zip(label_names, precision, recall):
        metrics[f"precision_{name}"] = float(p)
        metrics[f"recall_{name}"] = float(r)
    return metrics


def token_loss_sums(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics`` for causal LMs: per sequence, the summed next-token loss and the number
    of tokens it covers (labels of -100 excluded, as in the model's own loss). Two numbers per sequence instead of
    its logits, so evaluation stores almost nothing."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    targets = labels[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return torch.stack([losses.sum(1), targets.ne(-100).sum(1).float()], dim=1)


def mean_token_loss(eval_pred: EvalPrediction) -> dict[str, float]:
    """The mean loss over every predicted token of the split, from :func:`token_loss_sums`."""
    sums = np.asarray(eval_pred.predictions, dtype=np.float64).reshape(-1, 2)
    return {EXACT_LOSS: float(sums[:, 0].sum() / max(sums[:, 1].sum(), 1))}


def add_perplexity(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Perplexity is exp of the mean token loss; overflow reads as infinity rather than an error."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(loss) if loss < 700 else float("inf")
    return metrics


def normalize_answer(text: str) -> str:
    """Lower case, whitespace runs collapsed: formatting alone does not make an answer wrong."""
    return " ".join(text.lower().split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after :func:`normalize_answer`."""
    if not references:
        return float("nan")
    return float(np.mean([normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references)]))


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence of words), computed offline with ``rouge_score``."""
    from rouge_score import rouge_scorer

    if not references:
        return float("nan")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]))
