"""SQuAD answers from start/end logits: the n-best search of BERT's run_squad.py across a question's windows.

For each window, the `n_best` highest start and end logits inside the context form candidate spans (end >= start,
at most `max_answer_length` tokens); a span scores start + end logit and the best over all windows wins. Its text
is cut from the context by the character offsets of its first and last token, so it is exact original text.

SQuAD 2.0 adds the null answer: its score is start + end logit at [CLS], taken from the window where it is lowest
(BERT's choice: the window that is most sure there is an answer). The gap null - best span becomes a no-answer
probability (a sigmoid, so it orders questions as the gap does); the official evaluation then finds the threshold
on that probability that maximises F1 on dev (best_f1_thresh) and the reported scores are the ones at it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from plmbench.data.features import CLS_INDEX


def best_span(start: np.ndarray, end: np.ndarray, context_start: int, n_context: int, n_best: int,
              max_answer_length: int) -> tuple[float, int, int] | None:
    """(score, start, end) of one window's best valid span over its context tokens, or None if it has none."""
    lo, hi = context_start, context_start + n_context  # the context tokens: [lo, hi)
    if n_context == 0:
        return None
    starts = lo + np.argsort(-start[lo:hi], kind="stable")[:n_best]
    ends = lo + np.argsort(-end[lo:hi], kind="stable")[:n_best]
    s, e = np.meshgrid(starts, ends, indexing="ij")
    valid = (e >= s) & (e - s + 1 <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start[s] + end[e], -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), int(s[i, j]), int(e[i, j])


def decode_spans(examples: Iterable[Mapping], features: Sequence[Mapping], start_logits: Sequence[np.ndarray],
                 end_logits: Sequence[np.ndarray], n_best: int = 20, max_answer_length: int = 30,
                 with_null: bool = False) -> list[dict]:
    """One prediction per example: {id, prediction_text} (+ no_answer_probability when with_null).

    examples: rows with `id` and `context`; features: windows with `example_id`, `context_start` and `offsets`
    (character [start, end) of each context token), aligned with start_logits/end_logits (1-D, one per window).
    """
    windows = defaultdict(list)
    for index, feature in enumerate(features):
        windows[feature["example_id"]].append(index)
    predictions = []
    for example in examples:
        best, text, null = None, "", math.inf
        for index in windows.get(example["id"], []):
            feature, start, end = features[index], np.asarray(start_logits[index]), np.asarray(end_logits[index])
            null = min(null, float(start[CLS_INDEX] + end[CLS_INDEX]))
            offsets = feature["offsets"]
            found = best_span(start, end, feature["context_start"], len(offsets), n_best, max_answer_length)
            if found and (best is None or found[0] > best):
                best = found[0]
                first, last = found[1] - feature["context_start"], found[2] - feature["context_start"]
                text = example["context"][offsets[first][0]: offsets[last][1]]
        prediction = {"id": example["id"], "prediction_text": text}
        if with_null:
            gap = null - best if best is not None else math.inf
            prediction["no_answer_probability"] = _sigmoid(gap)
        predictions.append(prediction)
    return predictions


def _sigmoid(x: float) -> float:
    if x == math.inf:
        return 1.0
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def score_with_best_threshold(metric, predictions: list[dict], references: list[dict]) -> dict:
    """squad_v2 scores at the no-answer threshold that maximises F1 on these questions (the official best_f1_thresh).

    Returns the thresholded exact/f1 (and HasAns/NoAns), the threshold as `no_answer_threshold`, and the scores
    when never abstaining as `exact_no_threshold`/`f1_no_threshold`.
    """
    sweep = metric.compute(predictions=predictions, references=references)
    threshold = float(sweep["best_f1_thresh"])  # the sweep answers questions at or below it, as compute does
    scores = metric.compute(predictions=predictions, references=references, no_answer_threshold=threshold)
    return {**scores, "no_answer_threshold": threshold, "best_f1": sweep["best_f1"], "best_exact": sweep["best_exact"],
            "exact_no_threshold": sweep["exact"], "f1_no_threshold": sweep["f1"]}
