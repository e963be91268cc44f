"""Official SQuAD v1.1 evaluation (evaluate-v1.1.py), with the inputs and outputs of the hub's `squad` metric.

Loaded by path through `evaluate.load`, so this file stands alone: it may not import plmbench.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """SQuAD v1.1 (Rajpurkar et al., 2016): exact match and token-level F1 after normalising answers
(lower-case, drop punctuation, drop the articles a/an/the, collapse white space), the max over the gold answers of each
question, averaged over questions and reported in percent."""

_CITATION = """@inproceedings{rajpurkar2016squad, title={{SQuAD}: 100,000+ Questions for Machine Comprehension of
Text}, author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy}, booktitle={EMNLP},
year={2016}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
Returns:
    {"exact_match": float, "f1": float}, both in percent (0..100).
Examples:
    >>> squad = plmbench.metrics.load("squad")
    >>> squad.compute(predictions=[{"id": "q1", "prediction_text": "the Eiffel Tower"}],
    ...               references=[{"id": "q1", "answers": {"text": ["Eiffel Tower"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse white space: the official order."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 of the bags of normalised tokens; v1.1 scores 0 when nothing overlaps (also when both are empty)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _predictions_by_id(predictions: list[dict], references: list[dict]) -> dict[str, str]:
    """Match predictions to questions by id: every question needs exactly one prediction."""
    by_id = {p["id"]: p["prediction_text"] for p in predictions}
    if len(by_id) != len(predictions):
        raise ValueError("squad: predictions repeat an id; allowed: one prediction per question id")
    missing = [r["id"] for r in references if r["id"] not in by_id]
    if missing:
        raise ValueError(f"squad: no prediction for question id {missing[0]!r} ({len(missing)} missing)")
    return by_id


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": {
                            "text": datasets.List(datasets.Value("string")),
                            "answer_start": datasets.List(datasets.Value("int32")),
                        },
                    },
                }
            ),
            homepage="https://rajpurkar.github.io/SQuAD-explorer/",
        )

    def _compute(self, predictions: list[dict], references: list[dict]) -> dict[str, float]:
        if not references:
            raise ValueError("squad: no predictions to score")
        by_id = _predictions_by_id(predictions, references)
        exact = f1 = 0.0
        for ref in references:
            golds = ref["answers"]["text"]
            if not golds:
                raise ValueError(
                    f"squad: question {ref['id']!r} has no gold answer; SQuAD 2.0 data needs squad_v2"
                )
            pred = by_id[ref["id"]]
            exact += max(exact_match_score(pred, gold) for gold in golds)
            f1 += max(f1_score(pred, gold) for gold in golds)
        return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}
