"""Accuracy, macro-F1 and per-class precision and recall of label ids, computed with scikit-learn."""

import evaluate
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from hf_recipes.metric_modules import pair_metric_info

_DESCRIPTION = """Accuracy, macro-F1 over every label (a label never predicted nor present scores 0), and per label
the precision (`precision_<label>`) and recall (`recall_<label>`)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): true label ids.
    label_names (list of str): the label names in id order; the metrics cover every one of them.
Returns:
    accuracy, macro_f1, precision_<label>, recall_<label> (floats).
Example:
    >>> metric = evaluate.load("hf_recipes/metric_modules/classification")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], label_names=["neg", "pos"])["accuracy"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return pair_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "int64",
                                reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"])

    def _compute(self, predictions, references, label_names):
        label_ids = list(range(len(label_names)))
        precision, recall, _, _ = precision_recall_fscore_support(
            references, predictions, labels=label_ids, zero_division=0
        )
        scores = {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, labels=label_ids, average="macro", zero_division=0)),
        }
        for name, p, r in zip(label_names, precision, recall):
            scores[f"precision_{name}"] = float(p)
            scores[f"recall_{name}"] = float(r)
        return scores
