"""Entity-level NER scores from the `seqeval` library, with the outputs of the hub's `seqeval` metric.

Loaded by path through `evaluate.load`, so this file stands alone: it may not import plmbench.
Tags are IOB2 ("B-PER", "I-PER", "O").
"""

import re

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB2

_DESCRIPTION = """Entity-level precision, recall and F1 (an entity counts only when its type and its whole span match,
as in the CoNLL shared tasks' conlleval script), per entity type and micro-averaged, plus token accuracy."""

_CITATION = """@misc{seqeval, title={{seqeval}: A Python framework for sequence labeling evaluation},
url={https://github.com/chakki-works/seqeval}, author={Hiroki Nakayama}, year={2018}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of tag sequences, one per sentence (IOB2 strings such as "B-PER", "I-PER", "O").
    references: list of gold tag sequences, each as long as its prediction.
    mode (optional): None scores like conlleval (a stray "I-X" starts an entity); "strict" applies the IOB2 scheme
        exactly (a stray "I-X" is no entity).
    zero_division (optional): value of precision/recall when its denominator is 0 (default 0).
Returns:
    {<type>: {"precision", "recall", "f1", "number"} for each entity type, "overall_precision", "overall_recall",
    "overall_f1", "overall_accuracy"}, fractions in [0, 1].
Examples:
    >>> ner = plmbench.metrics.load("seqeval")
    >>> ner.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""

_IOB2_TAG = re.compile(r"O|[BI]-.+")
_MODES = (None, "strict")


def _check_tags(predictions: list[list[str]], references: list[list[str]]) -> None:
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise ValueError(f"seqeval: sentence {i} has {len(pred)} predicted tags for {len(ref)} gold tags")
        for name, tags in (("predictions", pred), ("references", ref)):
            bad = [tag for tag in tags if not _IOB2_TAG.fullmatch(tag)]
            if bad:
                raise ValueError(
                    f"seqeval: {name} sentence {i} has tag {bad[0]!r}; allowed IOB2: O, B-<type>, I-<type>"
                )


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        tags = datasets.List(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": tags, "references": tags}),
            homepage="https://github.com/chakki-works/seqeval",
        )

    def _compute(self, predictions, references, mode=None, zero_division=0) -> dict:
        if not references:
            raise ValueError("seqeval: no predictions to score")
        if mode not in _MODES:
            raise ValueError(f"seqeval: unknown mode {mode!r}; allowed: None (conlleval), 'strict' (IOB2)")
        _check_tags(predictions, references)
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            output_dict=True,
            mode=mode,
            scheme=IOB2 if mode == "strict" else None,
            zero_division=zero_division,
        )
        overall = report.pop("micro avg")
        report.pop("macro avg")
        report.pop("weighted avg")
        results = {
            entity_type: {
                "precision": float(s["precision"]),
                "recall": float(s["recall"]),
                "f1": float(s["f1-score"]),
                "number": int(s["support"]),
            }
            for entity_type, s in report.items()
        }
        results["overall_precision"] = float(overall["precision"])
        results["overall_recall"] = float(overall["recall"])
        results["overall_f1"] = float(overall["f1-score"])
        results["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return results
