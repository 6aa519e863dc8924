"""Metrics shaped for ``Trainer(compute_metrics=...)`` and the recipes' reports.

The task metrics go through ``evaluate``'s interface (``metric.compute(predictions=..., references=...)``) with
metric modules shipped in ``hf_recipes/metric_modules`` (loaded offline with ``evaluate.load`` of their folder;
their arithmetic is scikit-learn's and rouge_score's). ``--metric_names`` adds any other ``evaluate`` metric, by
hub name or local path.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from importlib.resources import files
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction

from hf_recipes.errors import RecipeError, one_line
from hf_recipes.model import ensure_hub_reachable, hub_is_offline

logger = logging.getLogger("hf_recipes")

METRIC_MODULES = files("hf_recipes") / "metric_modules"
# Keys a run writes beside the metrics' own (eval_loss, eval_perplexity, eval_runtime, ...): an added metric never
# takes them.
RUN_KEYS = frozenset({"loss", "perplexity", "runtime", "samples_per_second", "steps_per_second", "epoch"})

# Trainer averages per-batch mean losses, and across processes pairs each batch with the others' (and with the
# samples accelerate repeats to even out the last batches), so its eval loss depends on batch size and process
# count. Metrics that report EXACT_LOSS replace it with the mean over every example (or token) of the split.
EXACT_LOSS = "exact_loss"


def classification_metrics(eval_pred: EvalPrediction, label_names: Sequence[str],
                           extra_metrics: dict[str, Any] | None = None) -> dict[str, float]:
    """Accuracy, macro-F1, per-class precision/recall (keys ``precision_<label>``, ``recall_<label>``), the
    mean cross-entropy over every example, and the scores of ``extra_metrics`` (from :func:`load_metrics`) on the
    predicted and true label ids."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(-1)
    metrics = {
        EXACT_LOSS: float(F.cross_entropy(torch.as_tensor(np.asarray(logits), dtype=torch.float32),
                                          torch.as_tensor(np.asarray(labels), dtype=torch.long))),
        **shipped_metric("classification").compute(predictions=predictions, references=labels,
                                                   label_names=list(label_names)),
    }
    metrics.update(extra_scores(extra_metrics, predictions, labels, taken=metrics.keys() | RUN_KEYS))
    return metrics


def token_loss_sums(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics`` for causal LMs: per sequence, the summed next-token loss and the number
    of tokens it covers (labels of -100 excluded, as in the model's own loss). Two numbers per sequence instead of
    its logits, so evaluation stores almost nothing."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    targets = labels[:, 1:]
    losses = token_losses(logits[:, :-1].float(), targets)
    return torch.stack([losses.sum(1), targets.ne(-100).sum(1).float()], dim=1)


def token_losses(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each vector of ``scores`` (last dimension: the vocabulary) against its target; 0 where the
    target is -100. Along the contiguous vocabulary dimension: 3x faster on CPU than cross_entropy over [B, V, T]."""
    real = targets.ne(-100)
    picked = scores.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (torch.logsumexp(scores, -1) - picked) * real


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


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference, ignoring case and whitespace (NaN for none)."""
    return shipped_metric("exact_match").compute(predictions=predictions, references=references)["exact_match"]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence of words), computed offline with ``rouge_score``."""
    return shipped_metric("rouge_l").compute(predictions=predictions, references=references)["rouge_l"]


def shipped_metric(name: str):
    """One of the metric modules in ``hf_recipes/metric_modules``, loaded with ``evaluate.load`` of its folder."""
    return load_metric(str(METRIC_MODULES / name))


def load_metrics(names: Sequence[str] | None) -> dict[str, Any]:
    """The ``evaluate`` metric of each name (see :func:`load_metric`), by name."""
    return {name: load_metric(name) for name in names or ()}


@functools.cache
def load_metric(name_or_path: str):
    """An ``evaluate`` metric: a local module (its folder or script) or a metric on the Hugging Face Hub.

    A hub metric comes from ``evaluate``'s cache without a connection when the hub is switched off
    (HF_HUB_OFFLINE=1) or cannot be reached; one that is not cached then is a RecipeError naming it. Loaded once
    per process; ``keep_in_memory`` keeps ``compute`` from writing files.
    """
    import evaluate  # slow to import, and only recipes that score predictions need it

    # evaluate's own rule: a name with at most one "/" that is not on disk is a hub metric (owner/name)
    local = Path(name_or_path).exists() or name_or_path.count("/") > 1 or Path(name_or_path).is_absolute()
    hub_problem = None if local else hub_unavailable()
    try:
        with evaluate_offline(hub_problem is not None):
            return evaluate.load(name_or_path, keep_in_memory=True)
    except FileNotFoundError as err:
        if local:
            raise RecipeError(f"metric '{name_or_path}': {one_line(err)}") from None
        if hub_problem:
            raise RecipeError(f"metric '{name_or_path}' is not in evaluate's cache and {hub_problem}: load it once "
                              "with the hub reachable, or give the path of a local metric module") from None
        raise RecipeError(f"metric '{name_or_path}' is neither a local metric module nor a metric on the "
                          "Hugging Face Hub") from None
    except ImportError as err:
        raise RecipeError(f"metric '{name_or_path}' needs a package that is not installed: {one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - a module's own code may fail in any way; say which metric
        raise RecipeError(f"metric '{name_or_path}' could not be loaded: {type(err).__name__}: {one_line(err)}"
                          ) from None


def hub_unavailable() -> str | None:
    """Why the hub cannot serve a metric, or None when it can."""
    if hub_is_offline():
        return "the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1)"
    try:
        ensure_hub_reachable("a metric")
    except RecipeError:
        return "the Hugging Face Hub cannot be reached"
    return None


@contextlib.contextmanager
def evaluate_offline(offline: bool):
    """``evaluate`` reads only its own HF_EVALUATE_OFFLINE, fixed at import; without it, an absent hub costs
    connection attempts (and their time-outs) before the cache is tried."""
    from evaluate import config

    before = config.HF_EVALUATE_OFFLINE
    config.HF_EVALUATE_OFFLINE = before or offline
    try:
        yield
    finally:
        config.HF_EVALUATE_OFFLINE = before


def extra_scores(metrics: dict[str, Any] | None, predictions, references, taken: Collection[str] = ()
                 ) -> dict[str, float]:
    """The numbers each metric (by name, from :func:`load_metrics`) computes, under its own keys; a key already
    taken (by the recipe's metrics or an earlier metric) is prefixed with the metric's name (a path's last part)."""
    scores: dict[str, float] = {}
    for name, metric in (metrics or {}).items():
        found = single_numbers(metric.compute(predictions=predictions, references=references))
        for key, value in found.items():
            scores[f"{Path(name).stem}_{key}" if key in taken or key in scores else key] = value
    return scores


def single_numbers(found: dict | None) -> dict[str, float]:
    """A metric's results that are one number each; lists, arrays and text cannot go into the metrics files."""
    return {key: float(value) for key, value in (found or {}).items()
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)}


def check_metrics(metrics: dict[str, Any], predictions: list, references: list, inputs: str) -> None:
    """Each metric scores an example of this run's predictions (``inputs`` says what they are), so a metric that
    cannot (e.g. binary-only F1 on three labels) is an error before training rather than after it."""
    for name, metric in metrics.items():
        try:
            found = metric.compute(predictions=predictions, references=references) or {}
        except Exception as err:  # noqa: BLE001 - any failure of the metric's own code
            raise RecipeError(f"metric '{name}' cannot score {inputs}: {type(err).__name__}: {one_line(err)}"
                              ) from None
        kept = single_numbers(found)
        if not kept:
            raise RecipeError(f"metric '{name}' gives no single number for {inputs} (it returns "
                              f"{', '.join(found) or 'nothing'})")
        if len(kept) < len(found):
            logger.warning("Metric %s: %s are not single numbers and are left out of the metrics files", name,
                           ", ".join(key for key in found if key not in kept))
