"""Share of answers equal to their reference, ignoring case and whitespace."""

import evaluate
import numpy as np

from hf_recipes.metric_modules import pair_metric_info

_DESCRIPTION = """Share of predictions equal to their reference after lower-casing and collapsing whitespace runs:
formatting alone does not make an answer wrong. NaN for no predictions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated answers.
    references (list of str): reference answers.
Returns:
    exact_match (float).
Example:
    >>> metric = evaluate.load("hf_recipes/metric_modules/exact_match")
    >>> metric.compute(predictions=[" The  Cat ", "dog"], references=["the cat", "a dog"])
    {'exact_match': 0.5}
"""


def normalize_answer(text):
    return " ".join(text.lower().split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return pair_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "string")

    def _compute(self, predictions, references):
        if not references:
            return {"exact_match": float("nan")}
        matches = [normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references)]
        return {"exact_match": float(np.mean(matches))}
