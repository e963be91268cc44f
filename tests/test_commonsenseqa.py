"""CommonsenseQA: the real files (row and answer counts from MANIFEST.md), the task config, and each malformed row."""

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plmbench.data.tasks import FAMILIES, load_task
from plmbench.data.tasks.commonsenseqa import UNLABELED, read_local
from plmbench.data.tasks.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def csqa_cfg(**overrides) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(REPO / "conf/task/csqa.yaml")), **overrides}


def test_real_files_load_with_official_counts(shared_data):
    data = load_task(csqa_cfg(source="local", eval_splits=["validation", "test"], on_bad_row="error"), shared_data)
    assert {split: len(rows) for split, rows in data.items()} == {"train": 9741, "validation": 1221, "test": 1140}
    assert Counter(data["validation"]["label"]) == {0: 239, 1: 255, 2: 241, 3: 251, 4: 235}  # A..E
    assert Counter(data["train"]["label"]) == {0: 1909, 1: 1973, 2: 1946, 3: 1985, 4: 1928}
    assert set(data["test"]["label"]) == {UNLABELED}
    first = data["train"][0]
    assert first["id"] == "075e483d21c29a511267ef62bedc0461" and first["question_concept"] == "punishing"
    assert first["options"] == ["ignore", "enforce", "authoritarian", "yell at", "avoid"] and first["label"] == 0
    assert first["article"] == "" and first["question"].endswith("the school had made to change?")
    assert all(len(options) == 5 for options in data["validation"]["options"])


def test_official_file_names_are_found_first(tmp_path):
    (tmp_path / "commonsenseqa").mkdir()
    for name, answer in (("train_rand_split", "B"), ("dev_rand_split", "C"), ("train_data", "A")):
        (tmp_path / "commonsenseqa" / f"{name}.jsonl").write_text(json.dumps(row(answer=answer)) + "\n")
    data = load_task(csqa_cfg(source="local"), tmp_path)
    assert (data["train"]["label"], data["validation"]["label"]) == ([1], [2])
    assert FAMILIES["csqa"].features().keys() == data["train"].features.keys()


def row(answer="A", labels="ABCDE", **question) -> dict:
    choices = [{"label": label, "text": f"choice {label}"} for label in labels]
    return {"answerKey": answer, "id": "q1",
            "question": {"question_concept": "dog", "choices": choices, "stem": "What barks?", **question}}


BAD_ROWS = {
    "no answerKey": ({k: v for k, v in row().items() if k != "answerKey"}, "no answerKey"),
    "answer outside the choices": (row(answer="F"), "answerKey 'F' is not one of its choices' labels A, B, C, D, E"),
    "four choices": (row(labels="ABCD"), "4 choices, expected 5"),
    "six choices": (row(labels="ABCDEF"), "6 choices, expected 5"),
    "no stem": ({"answerKey": "A", "id": "q1", "question": {"choices": []}}, "lacks id, question.stem"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_malformed_row_names_file_and_line(tmp_path, case, caplog):
    bad, problem = BAD_ROWS[case]
    path = tmp_path / "dev_rand_split.jsonl"
    path.write_text(json.dumps(row()) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev_rand_split\.jsonl:2: ") as error:
        read_local(path, {}, "error")
    assert problem in str(error.value) and "\n" not in str(error.value)
    assert len(read_local(path, {}, "skip")) == 1  # the default policy: counted, logged, dropped
    assert "skipped 1 malformed row(s)" in caplog.text


def test_invalid_json_and_non_utf8_name_the_line(tmp_path):
    path = tmp_path / "train_rand_split.jsonl"
    path.write_text(json.dumps(row()) + "\n" + json.dumps(row())[:40] + "\n", encoding="utf-8")  # truncated line
    with pytest.raises(DataError, match=r"train_rand_split\.jsonl:2: not valid JSON"):
        read_local(path, {}, "error")
    path.write_bytes(json.dumps(row()).encode() + b"\n\xff\n")
    with pytest.raises(DataError, match=r"train_rand_split\.jsonl:2: not UTF-8 text"):
        read_local(path, {}, "skip")


def test_the_test_file_is_unlabeled_by_name(tmp_path):
    unlabeled = {k: v for k, v in row().items() if k != "answerKey"}
    path = tmp_path / "test_rand_split_no_answers.jsonl"
    path.write_text(json.dumps(unlabeled) + "\n", encoding="utf-8")
    assert [r["label"] for r in read_local(path, {}, "error")] == [UNLABELED]
