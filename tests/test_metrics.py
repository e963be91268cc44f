"""The local metrics against independent computations: confusion-matrix formulas and scipy for GLUE, hand-worked
SQuAD / SQuAD 2.0 / RACE / NER cases, and gold answers from the real SQuAD files."""

import json
import socket

import numpy as np
import pytest
from scipy.stats import rankdata

from plmbench import metrics

# ---------------------------------------------------------------- loading


def test_load_reads_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a metric tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name, configs in metrics.CONFIGS.items():
        for config in configs:
            module = metrics.load(name, config)
            assert module.name == name and module.config_name == (config or "default")


def test_unknown_name_or_config_fails_with_allowed_list():
    with pytest.raises(
        ValueError, match=r"unknown metric 'bleu'; allowed: glue, squad, squad_v2, race, seqeval, accuracy"
    ):
        metrics.load("bleu")
    with pytest.raises(
        ValueError, match=r"'glue' does not take config 'mnli-m'; allowed: cola, sst2, .*, ax"
    ):
        metrics.load("glue", "mnli-m")
    with pytest.raises(ValueError, match=r"'glue' does not take config None"):
        metrics.load("glue")
    with pytest.raises(ValueError, match=r"'squad' does not take config 'v1'; allowed: no config"):
        metrics.load("squad", "v1")


def test_primary_key_is_returned_by_each_task():
    rng = np.random.default_rng(0)
    for task in metrics.GLUE_TASKS:
        labels = rng.random(20) * 5 if task == "stsb" else rng.integers(0, 2, 20)
        result = metrics.load("glue", task).compute(predictions=labels[::-1], references=labels)
        assert metrics.PRIMARY[task] in result
    assert set(metrics.PRIMARY) == set(metrics.GLUE_TASKS) | {"squad", "squad_v2", "race", "seqeval", "accuracy"}


# ---------------------------------------------------------------- GLUE


def confusion(refs: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    matrix = np.zeros((k, k))
    np.add.at(matrix, (refs, preds), 1)
    return matrix


def matthews_by_formula(refs: np.ndarray, preds: np.ndarray, k: int) -> float:
    """Gorodkin's R_K from the confusion matrix (binary MCC when k = 2)."""
    c = confusion(refs, preds, k)
    s, correct = c.sum(), np.trace(c)
    p, t = c.sum(axis=0), c.sum(axis=1)
    return (correct * s - p @ t) / np.sqrt((s**2 - p @ p) * (s**2 - t @ t))


def pearson_by_formula(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", metrics.GLUE_TASKS)
def test_glue_matches_independent_formulas(task, seed):
    rng = np.random.default_rng(seed)
    n = 300
    if task == "stsb":
        refs = np.round(rng.random(n) * 5, 1)  # one decimal: ties, as in real STS-B scores
        preds = np.round(refs + rng.normal(0, 1.5, n), 1)
        result = metrics.load("glue", task).compute(predictions=preds, references=refs)
        assert result == pytest.approx(
            {
                "pearson": pearson_by_formula(preds, refs),
                "spearmanr": pearson_by_formula(rankdata(preds), rankdata(refs)),
            }
        )
        return
    k = 3 if task in ("mnli", "mnli_matched", "mnli_mismatched", "ax") else 2
    refs = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.6, refs, rng.integers(0, k, n))  # better than chance
    result = metrics.load("glue", task).compute(predictions=preds.tolist(), references=refs.tolist())
    accuracy = float(np.mean(preds == refs))
    if task in ("cola", "ax"):
        assert result == pytest.approx({"matthews_correlation": matthews_by_formula(refs, preds, k)})
    elif task in ("mrpc", "qqp"):
        (_tn, fp), (fn, tp) = confusion(refs, preds, 2)
        assert result == pytest.approx({"accuracy": accuracy, "f1": 2 * tp / (2 * tp + fp + fn)})
    else:
        assert result == pytest.approx({"accuracy": accuracy})


def test_glue_hand_worked_mrpc_and_cola():
    assert metrics.load("glue", "mrpc").compute(
        predictions=[1, 0, 1, 1], references=[1, 1, 0, 1]
    ) == pytest.approx(
        {"accuracy": 0.5, "f1": 2 / 3}  # tp 2, fp 1, fn 1
    )
    # tp 1 tn 1 fp 1 fn 0: (1 - 0) / sqrt(2 * 1 * 1 * 2) = 0.5
    result = metrics.load("glue", "cola").compute(predictions=[1, 1, 0], references=[1, 0, 0])
    assert result == pytest.approx({"matthews_correlation": 0.5})


def test_glue_rejects_labels_outside_the_task():
    with pytest.raises(ValueError, match=r"glue/rte: references hold label -1; allowed 0\.\.1"):
        metrics.load("glue", "rte").compute(predictions=[0, 1], references=[0, -1])
    with pytest.raises(ValueError, match=r"glue/qqp: predictions hold label 2; allowed 0\.\.1"):
        metrics.load("glue", "qqp").compute(predictions=[2, 1], references=[0, 1])


# ---------------------------------------------------------------- SQuAD v1.1


def squad_refs(golds: list[list[str]]) -> list[dict]:
    return [
        {"id": f"q{i}", "answers": {"text": g, "answer_start": [0] * len(g)}} for i, g in enumerate(golds)
    ]


def squad_preds(texts: list[str], na_probs: list[float] | None = None) -> list[dict]:
    preds = [{"id": f"q{i}", "prediction_text": t} for i, t in enumerate(texts)]
    for pred, prob in zip(preds, na_probs or []):
        pred["no_answer_probability"] = prob
    return preds


def test_squad_hand_worked():
    cases = [  # (prediction, golds, EM, F1) worked by hand
        ("The Eiffel Tower!", ["eiffel tower"], 1, 1.0),  # case, article, punctuation
        ("", ["Paris"], 0, 0.0),  # empty prediction
        ("in Paris, France", ["Paris", "France", "Paris, France"], 0, 0.8),  # best gold: P 2/3, R 1
        ("an apple a day", ["apple day"], 1, 1.0),  # articles a/an dropped
        ("theory", ["ory"], 0, 0.0),  # 'the' only as a whole word
        ("the the cat cat cat", ["cat dog"], 0, 0.4),  # bag overlap 1: P 1/3, R 1/2
    ]
    result = metrics.load("squad").compute(
        predictions=squad_preds([c[0] for c in cases]), references=squad_refs([c[1] for c in cases])
    )
    assert result == pytest.approx({"exact_match": 100 * 2 / 6, "f1": 100 * (1 + 0.8 + 1 + 0.4) / 6})


def test_squad_v1_scores_empty_answers_as_exact_but_zero_f1():
    # The official v1.1 quirk: "" equals the article-only gold "The" after normalising, yet shares no token.
    result = metrics.load("squad").compute(predictions=squad_preds([""]), references=squad_refs([["The"]]))
    assert result == {"exact_match": 100.0, "f1": 0.0}


def test_squad_rejects_mismatched_ids_and_unanswerable():
    refs = squad_refs([["Paris"]])
    with pytest.raises(ValueError, match=r"squad: no prediction for question id 'q0'"):
        metrics.load("squad").compute(predictions=[{"id": "x", "prediction_text": "Paris"}], references=refs)
    with pytest.raises(ValueError, match=r"question 'q0' has no gold answer; SQuAD 2.0 data needs squad_v2"):
        metrics.load("squad").compute(predictions=squad_preds(["Paris"]), references=squad_refs([[]]))


def read_squad(path) -> list[dict]:
    data = json.loads(path.read_text())["data"]
    return [qa for article in data for para in article["paragraphs"] for qa in para["qas"]]


def test_squad_real_xquad_gold_with_noise_scores_100(shared_data):
    questions = read_squad(shared_data / "squad/v1.1/xquad.en.json")
    refs = [
        {
            "id": q["id"],
            "answers": {
                "text": [a["text"] for a in q["answers"]],
                "answer_start": [a["answer_start"] for a in q["answers"]],
            },
        }
        for q in questions
    ]
    # Noise that normalisation must remove: a leading article, upper case, trailing punctuation.
    preds = [{"id": q["id"], "prediction_text": f"THE {q['answers'][0]['text']}."} for q in questions]
    assert len(refs) == 1190
    assert metrics.load("squad").compute(predictions=preds, references=refs) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }


# ---------------------------------------------------------------- SQuAD 2.0

V2_GOLDS = [["Denver Broncos", "Broncos"], ["1996"], [], [], ["New York City"]]
V2_PREDS = ["the Broncos", "", "", "Paris", "New York"]
# Per question EM 1,0,1,0,0 and F1 1,0,1,0,0.8; questions 2 and 3 are unanswerable.
V2_PLAIN = {
    "exact": 40.0, "f1": 56.0, "total": 5,
    "HasAns_exact": 100 / 3, "HasAns_f1": 60.0, "HasAns_total": 3,
    "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
}  # fmt: skip


def test_squad_v2_hand_worked_without_probabilities():
    result = metrics.load("squad_v2").compute(
        predictions=squad_preds(V2_PREDS), references=squad_refs(V2_GOLDS)
    )
    assert result == pytest.approx(V2_PLAIN)


def test_squad_v2_best_threshold_by_hand():
    na_probs = [0.1, 0.8, 0.9, 0.6, 0.2]
    result = metrics.load("squad_v2").compute(
        predictions=squad_preds(V2_PREDS, na_probs), references=squad_refs(V2_GOLDS)
    )
    # Sweep from "abstain everywhere" (2 correct): q0 +1 -> 3 at 0.1; q4 +0 (EM) / +0.8 (F1) at 0.2; then q3 -1,
    # q1 +0, q2 +0. Best EM 3/5 at 0.1; best F1 3.8/5 at 0.2.
    best = {"best_exact": 60.0, "best_exact_thresh": 0.1, "best_f1": 76.0, "best_f1_thresh": 0.2}
    assert result == pytest.approx({**V2_PLAIN, **best})


def test_squad_v2_no_answer_threshold_abstains_strictly_above_it():
    squad_v2 = metrics.load("squad_v2")
    preds, refs = squad_preds(V2_PREDS, [0.1, 0.8, 0.9, 0.6, 0.2]), squad_refs(V2_GOLDS)
    # At 0.5, q1, q2, q3 abstain: q1 (answerable) scores 0, q2 and q3 (unanswerable) score 1.
    result = squad_v2.compute(predictions=preds, references=refs, no_answer_threshold=0.5)
    assert result["exact"] == pytest.approx(60.0) and result["f1"] == pytest.approx(76.0)
    assert result["NoAns_exact"] == result["NoAns_f1"] == 100.0
    assert result["HasAns_f1"] == pytest.approx(60.0)
    # At 0.6, q3's probability equals the threshold, so q3 keeps its wrong answer "Paris".
    result = squad_v2.compute(predictions=preds, references=refs, no_answer_threshold=0.6)
    assert result["exact"] == pytest.approx(40.0) and result["NoAns_exact"] == 50.0


def test_squad_v2_omits_absent_group_and_rejects_partial_probabilities():
    result = metrics.load("squad_v2").compute(predictions=squad_preds(["x"]), references=squad_refs([["x"]]))
    assert result == {"exact": 100.0, "f1": 100.0, "total": 1, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
                      "HasAns_total": 1}  # fmt: skip
    preds = squad_preds(["x", ""], [0.5])
    with pytest.raises(ValueError, match="no_answer_probability is missing on some predictions"):
        metrics.load("squad_v2").compute(predictions=preds, references=squad_refs([["x"], []]))


def test_squad_v2_real_dev_subset(shared_data):
    questions = read_squad(shared_data / "squad/v2.0/dev-v2.0_subset_haystack_small.json")
    refs = [
        {
            "id": q["id"],
            "answers": {
                "text": [a["text"] for a in q["answers"]],
                "answer_start": [a["answer_start"] for a in q["answers"]],
            },
        }
        for q in questions
    ]
    # Answer every question: the gold text where there is one, else the plausible (wrong) answer, with a no-answer
    # probability that separates the two perfectly, so the best threshold recovers a perfect score.
    preds = [{"id": q["id"], "prediction_text": (q["answers"] or q["plausible_answers"])[0]["text"],
              "no_answer_probability": float(q["is_impossible"])} for q in questions]  # fmt: skip
    result = metrics.load("squad_v2").compute(predictions=preds, references=refs)
    assert (result["total"], result["HasAns_total"], result["NoAns_total"]) == (626, 293, 333)
    assert result["exact"] == pytest.approx(100 * 293 / 626) and result["NoAns_exact"] == 0.0
    assert (result["best_exact"], result["best_exact_thresh"]) == (100.0, 0.0)
    assert (result["best_f1"], result["best_f1_thresh"]) == (100.0, 0.0)


# ---------------------------------------------------------------- RACE


def test_race_overall_and_per_level_by_hand():
    preds, refs = [0, 1, 2, 3, 0, 1], [0, 1, 3, 3, 1, 1]
    levels = ["middle", "middle", "high", "high", "high", "high"]
    result = metrics.load("race").compute(predictions=preds, references=refs, levels=levels)
    assert result == pytest.approx({"accuracy": 4 / 6, "accuracy_middle": 1.0, "accuracy_high": 0.5})
    only_high = metrics.load("race").compute(predictions=preds[2:], references=refs[2:], levels=levels[2:])
    assert only_high == pytest.approx({"accuracy": 0.5, "accuracy_high": 0.5})
    assert metrics.load("race").compute(predictions=preds, references=refs) == pytest.approx(
        {"accuracy": 4 / 6}
    )


def test_accuracy_over_five_options_equals_a_count_by_hand():
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 5, size=1221), rng.integers(0, 5, size=1221)  # CSQA dev's size, 5 options
    right = sum(int(p) == int(r) for p, r in zip(preds, refs))  # an independent count, in plain Python
    scores = metrics.load("accuracy").compute(predictions=preds, references=refs, num_labels=5)
    assert scores == {"accuracy": pytest.approx(right / 1221)}
    assert metrics.load("accuracy").compute(predictions=[4, 0, 25], references=[4, 1, 25]) == pytest.approx(
        {"accuracy": 2 / 3}
    )  # no num_labels: any index >= 0 (a 26-class probe)


def test_accuracy_rejects_unlabeled_rows_and_indices_past_num_labels():
    with pytest.raises(ValueError, match=r"accuracy: references hold index -1; allowed 0 or more"):
        metrics.load("accuracy").compute(predictions=[0], references=[-1])
    with pytest.raises(ValueError, match=r"accuracy: predictions hold index 5; allowed 0\.\.4"):
        metrics.load("accuracy").compute(predictions=[5], references=[0], num_labels=5)
    with pytest.raises(ValueError, match="no predictions"):
        metrics.load("accuracy").compute(predictions=[], references=[])


def test_race_rejects_bad_options_and_levels():
    with pytest.raises(ValueError, match=r"race: predictions hold option 4; allowed 0\.\.3"):
        metrics.load("race").compute(predictions=[4], references=[0])
    with pytest.raises(ValueError, match=r"race: unknown level 'college'; allowed: middle, high"):
        metrics.load("race").compute(predictions=[0], references=[0], levels=["college"])
    with pytest.raises(ValueError, match=r"race: 1 levels for 2 predictions"):
        metrics.load("race").compute(predictions=[0, 1], references=[0, 1], levels=["high"])


# ---------------------------------------------------------------- NER (seqeval)


def test_seqeval_entity_scores_by_hand():
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "O"]]
    preds = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O", "O"]]
    # Gold entities PER, LOC, ORG(2 tokens); predicted PER, ORG, ORG(1 token): only PER matches in type and span.
    result = metrics.load("seqeval").compute(predictions=preds, references=refs)
    assert {t: result.pop(t) for t in ("PER", "LOC", "ORG")} == {
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1},
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1},
    }
    assert result == pytest.approx(
        {"overall_precision": 1 / 3, "overall_recall": 1 / 3, "overall_f1": 1 / 3, "overall_accuracy": 6 / 8}
    )


def test_seqeval_strict_mode_drops_entities_that_start_with_i():
    preds, refs = [["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]
    ner = metrics.load("seqeval")
    assert (
        ner.compute(predictions=preds, references=refs)["overall_f1"] == 1.0
    )  # conlleval reads I- as a start
    assert ner.compute(predictions=preds, references=refs, mode="strict")["overall_f1"] == 0.0


def test_seqeval_rejects_non_iob2_tags_and_ragged_sentences():
    ner = metrics.load("seqeval")
    with pytest.raises(ValueError, match=r"predictions sentence 0 has tag 'PER'; allowed IOB2"):
        ner.compute(predictions=[["PER", "O"]], references=[["B-PER", "O"]])
    with pytest.raises(ValueError, match=r"sentence 0 has 1 predicted tags for 2 gold tags"):
        ner.compute(predictions=[["O"]], references=[["B-PER", "O"]])
