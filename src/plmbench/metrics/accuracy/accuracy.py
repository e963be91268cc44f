"""Plain accuracy over label or option indices, for any number of them (CommonsenseQA's 5 options, a probe's classes).

RACE's module checks four options and scores school levels; this one knows nothing of the task, so a multiple-choice
task with N options or a classification task with N classes needs no module of its own.
Loaded by path through `evaluate.load`, so this file stands alone: it may not import plmbench.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Accuracy: the fraction of predictions equal to their reference (chosen option or class index)."""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted option or class index per example (int >= 0).
    references: gold index per example (int >= 0); an unlabeled row (-1, as in CommonsenseQA's test file) is refused.
    num_labels (optional, passed to compute): the number of options or classes; indices must then be below it.
Returns:
    {"accuracy"} as a fraction in [0, 1].
Examples:
    >>> accuracy = plmbench.metrics.load("accuracy")
    >>> accuracy.compute(predictions=[0, 4, 2], references=[0, 4, 3], num_labels=5)
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
        )

    def _compute(self, predictions: np.ndarray, references: np.ndarray, num_labels=None) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("accuracy: no predictions to score")
        allowed = "0 or more (-1 marks an unlabeled row)" if num_labels is None else f"0..{int(num_labels) - 1}"
        for name, values in (("predictions", predictions), ("references", references)):
            bad = values[(values < 0) | ((values >= int(num_labels)) if num_labels is not None else False)]
            if bad.size:
                raise ValueError(f"accuracy: {name} hold index {int(bad[0])}; allowed {allowed}")
        return {"accuracy": float((predictions == references).mean())}
