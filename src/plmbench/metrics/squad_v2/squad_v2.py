"""Official SQuAD 2.0 evaluation (evaluate-v2.0.py), with the inputs and outputs of the hub's `squad_v2` metric.

Loaded by path through `evaluate.load`, so this file stands alone: it may not import plmbench.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """SQuAD 2.0 (Rajpurkar et al., 2018): exact match and token F1 as in v1.1, where an unanswerable
question's only gold answer is the empty string (scores 1 only for an empty prediction); totals, the HasAns/NoAns
breakdown, and, when predictions carry a no-answer probability, the best scores over null-score thresholds."""

_CITATION = """@inproceedings{rajpurkar2018know, title={Know What You Don't Know: Unanswerable Questions for {SQuAD}},
author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy}, booktitle={ACL}, year={2018}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str, "no_answer_probability": float (optional)};
        "" predicts "no answer". Give no_answer_probability to all predictions or to none.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}};
        empty lists mark an unanswerable question.
    no_answer_threshold: a question whose no_answer_probability exceeds it counts as answered "no answer"
        (official default 1.0, i.e. never).
Returns (percent, except totals and thresholds):
    exact, f1, total; HasAns_exact, HasAns_f1, HasAns_total; NoAns_exact, NoAns_f1, NoAns_total (each group only
    when present); with no_answer_probability: best_exact, best_exact_thresh, best_f1, best_f1_thresh.
"""

_PARTIAL_PROBABILITIES = (
    "squad_v2: no_answer_probability is missing on some predictions; give it to all or none"
)
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse white space: the official order."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def compute_exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def compute_f1(gold: str, prediction: str) -> float:
    """Token F1; unlike v1.1, two empty answers agree fully (that is how "no answer" earns credit)."""
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    num_same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans) -> tuple[float, float]:
    """Official sweep for the threshold t of "abstain when no_answer_probability > t" that scores best.

    Start from answering "no answer" everywhere (credit = number of unanswerable questions), then, in increasing
    order of no-answer probability, switch each question to its predicted answer and keep the best running score.
    """
    score = best_score = sum(1 for qid in qid_to_has_ans if not qid_to_has_ans[qid])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid_to_has_ans[qid]:
            score += scores[qid]
        else:
            score += -1 if preds[qid] else 0
        if score > best_score:
            best_score, best_thresh = score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def _score_group(exact: dict, f1: dict, qids: list[str]) -> dict[str, float]:
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
        "f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
        "total": len(qids),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV2(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        references = {
            "id": datasets.Value("string"),
            "answers": {
                "text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int32")),
            },
        }
        prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        with_prob = {**prediction, "no_answer_probability": datasets.Value("float64")}
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[  # [0] when predictions carry no_answer_probability, else [1]; see _infer_feature_from_example
                datasets.Features({"predictions": with_prob, "references": references}),
                datasets.Features({"predictions": prediction, "references": references}),
            ],
            homepage="https://rajpurkar.github.io/SQuAD-explorer/",
        )

    def _infer_feature_from_example(self, example: dict) -> datasets.Features:
        # evaluate would try each format in turn, but a missing key raises a KeyError it does not catch.
        return self.features[0 if "no_answer_probability" in example["predictions"] else 1]

    def _infer_feature_from_batch(self, batch: dict) -> datasets.Features:
        carried = {"no_answer_probability" in p for p in batch["predictions"]}
        if len(carried) > 1:
            raise ValueError(_PARTIAL_PROBABILITIES)
        return self.features[0 if carried == {True} else 1]

    def _compute(
        self, predictions: list[dict], references: list[dict], no_answer_threshold: float = 1.0
    ) -> dict:
        if not references:
            raise ValueError("squad_v2: no predictions to score")
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        if len(preds) != len(predictions):
            raise ValueError("squad_v2: predictions repeat an id; allowed: one prediction per question id")
        missing = [r["id"] for r in references if r["id"] not in preds]
        if missing:
            raise ValueError(
                f"squad_v2: no prediction for question id {missing[0]!r} ({len(missing)} missing)"
            )
        has_probs = "no_answer_probability" in predictions[0]
        na_probs = {p["id"]: p["no_answer_probability"] if has_probs else 0.0 for p in predictions}
        if None in na_probs.values():
            raise ValueError(_PARTIAL_PROBABILITIES)

        qid_to_has_ans = {r["id"]: bool(r["answers"]["text"]) for r in references}
        exact_raw, f1_raw = {}, {}
        for ref in references:
            golds = [text for text in ref["answers"]["text"] if normalize_answer(text)] or [""]
            pred = preds[ref["id"]]
            exact_raw[ref["id"]] = max(compute_exact(gold, pred) for gold in golds)
            f1_raw[ref["id"]] = max(compute_f1(gold, pred) for gold in golds)

        # Above the threshold the model abstains: credit 1 exactly when the question is unanswerable.
        def thresholded(raw: dict) -> dict:
            return {
                q: float(not qid_to_has_ans[q]) if na_probs[q] > no_answer_threshold else s
                for q, s in raw.items()
            }

        exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
        out = _score_group(exact, f1, list(qid_to_has_ans))
        for prefix, want in (("HasAns", True), ("NoAns", False)):
            qids = [q for q, has in qid_to_has_ans.items() if has is want]
            if qids:
                out.update({f"{prefix}_{k}": v for k, v in _score_group(exact, f1, qids).items()})
        if has_probs:
            probs = {q: na_probs[q] for q in qid_to_has_ans}
            out["best_exact"], out["best_exact_thresh"] = find_best_thresh(
                preds, exact_raw, probs, qid_to_has_ans
            )
            out["best_f1"], out["best_f1_thresh"] = find_best_thresh(preds, f1_raw, probs, qid_to_has_ans)
        return out
