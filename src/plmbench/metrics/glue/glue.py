"""GLUE dev-set metrics, one config per task, with the key names of the hub's `glue` metric.

Loaded by path through `evaluate.load`, so this file stands alone: it may import numpy/scipy/sklearn, not plmbench.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_DESCRIPTION = """GLUE dev metrics (Wang et al., 2019): CoLA Matthews correlation; STS-B Pearson and Spearman; MRPC and
QQP accuracy and F1 of the positive class; SST-2, MNLI (matched/mismatched), QNLI, RTE, WNLI accuracy; AX (the
diagnostic set) the 3-class Matthews correlation R3 that the GLUE leaderboard reports for it."""

_CITATION = """@inproceedings{wang2019glue, title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural
Language Understanding}, author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and
Bowman, Samuel R.}, booktitle={ICLR}, year={2019}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (int), or scores (float) for stsb.
    references: gold labels (int), or scores (float) for stsb.
Returns:
    cola, ax: {"matthews_correlation"}; stsb: {"pearson", "spearmanr"}; mrpc, qqp: {"accuracy", "f1"};
    sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli: {"accuracy"}.
    Accuracy and F1 are fractions in [0, 1], as in the hub's glue metric.
Examples:
    >>> glue = plmbench.metrics.load("glue", "mrpc")
    >>> glue.compute(predictions=[1, 0, 1], references=[1, 1, 1])
    {'accuracy': 0.6666666666666666, 'f1': 0.8}
"""

# Task -> number of classes; None marks the regression task. MNLI and its diagnostic AX are 3-way NLI.
NUM_LABELS = {
    "cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "stsb": None, "mnli": 3, "mnli_matched": 3,
    "mnli_mismatched": 3, "qnli": 2, "rte": 2, "wnli": 2, "ax": 3,
}  # fmt: skip


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def _check_labels(task: str, name: str, values: np.ndarray) -> None:
    """Class ids must lie in 0..n-1: a -1 (unlabelled GLUE test row) or a stray id would skew every metric."""
    bad = values[(values < 0) | (values >= NUM_LABELS[task])]
    if bad.size:
        raise ValueError(f"glue/{task}: {name} hold label {int(bad[0])}; allowed 0..{NUM_LABELS[task] - 1}")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in NUM_LABELS:
            raise ValueError(f"glue: unknown config {self.config_name!r}; allowed: {', '.join(NUM_LABELS)}")
        # float64 for STS-B so Pearson/Spearman see the scores exactly as given.
        dtype = "float64" if NUM_LABELS[self.config_name] is None else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
            ),
            format="numpy",
            homepage="https://gluebenchmark.com/",
        )

    def _compute(self, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
        task = self.config_name
        if len(predictions) == 0:
            raise ValueError(f"glue/{task}: no predictions to score")
        if NUM_LABELS[task] is None:
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        _check_labels(task, "predictions", predictions)
        _check_labels(task, "references", references)
        if task in ("cola", "ax"):
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if task in ("mrpc", "qqp"):
            # F1 of class 1 (paraphrase / duplicate), as GLUE scores it.
            return {
                "accuracy": _accuracy(predictions, references),
                "f1": float(
                    f1_score(references, predictions, pos_label=1, average="binary", zero_division=0.0)
                ),
            }
        return {"accuracy": _accuracy(predictions, references)}
