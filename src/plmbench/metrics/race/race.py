"""RACE accuracy, overall and per school level (middle = RACE-M, high = RACE-H).

Loaded by path through `evaluate.load`, so this file stands alone: it may not import plmbench.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """RACE (Lai et al., 2017): multiple-choice reading comprehension with four options; the metric is
accuracy, reported overall and for the middle-school (RACE-M) and high-school (RACE-H) parts."""

_CITATION = """@inproceedings{lai2017race, title={{RACE}: Large-scale ReAding Comprehension Dataset From Examinations},
author={Lai, Guokun and Xie, Qizhe and Liu, Hanxiao and Yang, Yiming and Hovy, Eduard}, booktitle={EMNLP},
year={2017}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: chosen option index per question (int, 0..3).
    references: gold option index per question (int, 0..3).
    levels (optional, passed to compute): "middle" or "high" per question, in the same order. It is a compute
        argument, not a column, so give it for all questions at once in `compute`.
Returns:
    {"accuracy", "accuracy_middle", "accuracy_high"} as fractions in [0, 1]; a level absent from `levels` is left
    out, and without `levels` only "accuracy" is returned.
Examples:
    >>> race = plmbench.metrics.load("race")
    >>> race.compute(predictions=[0, 1, 2], references=[0, 1, 3], levels=["middle", "high", "high"])
    {'accuracy': 0.6666666666666666, 'accuracy_middle': 1.0, 'accuracy_high': 0.5}
"""

NUM_OPTIONS = 4
LEVELS = ("middle", "high")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Race(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
            homepage="https://www.cs.cmu.edu/~glai1/data/race/",
        )

    def _compute(self, predictions: np.ndarray, references: np.ndarray, levels=None) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("race: no predictions to score")
        for name, values in (("predictions", predictions), ("references", references)):
            bad = values[(values < 0) | (values >= NUM_OPTIONS)]
            if bad.size:
                raise ValueError(f"race: {name} hold option {int(bad[0])}; allowed 0..{NUM_OPTIONS - 1}")
        correct = predictions == references
        scores = {"accuracy": float(correct.mean())}
        if levels is None:
            return scores
        levels = np.asarray(levels, dtype=object)
        if len(levels) != len(correct):
            raise ValueError(
                f"race: {len(levels)} levels for {len(correct)} predictions; give one level per question"
            )
        unknown = set(levels) - set(LEVELS)
        if unknown:
            raise ValueError(f"race: unknown level {min(map(str, unknown))!r}; allowed: {', '.join(LEVELS)}")
        for level in LEVELS:
            in_level = levels == level
            if in_level.any():
                scores[f"accuracy_{level}"] = float(correct[in_level].mean())
        return scores
