"""The ``evaluate`` metric modules the recipes report, one folder each (``evaluate.load`` of the folder loads it)."""

import datasets
import evaluate


def pair_metric_info(description: str, inputs_description: str, kind: str, **more) -> evaluate.MetricInfo:
    """The info of a metric of ``predictions`` against ``references``, both of the ``datasets.Value`` ``kind``."""
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind)}),
        **more,
    )
