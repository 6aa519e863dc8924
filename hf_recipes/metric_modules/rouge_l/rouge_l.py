"""Mean ROUGE-L F1 (longest common subsequence of words), computed offline with rouge_score."""

import evaluate
import numpy as np
from rouge_score import rouge_scorer

from hf_recipes.metric_modules import pair_metric_info

_DESCRIPTION = """Mean over the pairs of the ROUGE-L F1 of each prediction against its reference (rouge_score's
tokenizer: lower case, words of letters and digits, no stemming). NaN for no predictions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated answers.
    references (list of str): reference answers.
Returns:
    rouge_l (float).
Example:
    >>> metric = evaluate.load("hf_recipes/metric_modules/rouge_l")
    >>> metric.compute(predictions=["the cat sat"], references=["the cat"])
    {'rouge_l': 0.8}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
    def _info(self):
        return pair_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "string",
                                codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"])

    def _compute(self, predictions, references):
        if not references:
            return {"rouge_l": float("nan")}
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        return {"rouge_l": float(np.mean([scorer.score(r, p)["rougeL"].fmeasure
                                          for p, r in zip(predictions, references)]))}
