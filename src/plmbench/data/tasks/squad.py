"""SQuAD 1.1 / 2.0: the official JSON files and the hub's rajpurkar/squad(_v2), one row per question.

Every answer must sit where its answer_start says (context[start:start + len(text)] == text): span labels are
built from those offsets, so a misaligned answer would teach the model a wrong span. SQuAD 2.0's unanswerable
questions (is_impossible) get empty answer lists, as on the hub; their plausible_answers are not gold and are dropped.
"""

import json
from collections.abc import Mapping
from pathlib import Path

import datasets

from plmbench.data.tasks.errors import BadRows, DataError

GROUP = "articles"  # a dev-only split keeps every question of one Wikipedia article on one side


def features(task_cfg: Mapping | None = None) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": {
                "text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int32")),
            },
        }
    )


def group_key(row: Mapping) -> str:
    return row["title"]


def _field(path: Path, node: Mapping, key: str, where: str):
    """node[key], or a DataError naming the missing key and where it is missing."""
    if not isinstance(node, Mapping) or key not in node:
        raise DataError(path, f"missing key {key!r} (SQuAD JSON: data[].paragraphs[].qas[].answers[])", where)
    return node[key]


def _answers(qa: Mapping, context: str, path: Path) -> tuple[list[str], list[int]] | str:
    """(texts, starts) of one question, or a string saying why the question is malformed."""
    if qa.get("is_impossible", False):
        return [], []
    answers = _field(path, qa, "answers", f"question {qa['id']}")
    if not answers:
        return "answerable question (no is_impossible) without answers"
    texts, starts = [], []
    for answer in answers:
        text = _field(path, answer, "text", f"question {qa['id']}")
        start = _field(path, answer, "answer_start", f"question {qa['id']}")
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            found = context[start : start + len(text)] if isinstance(start, int) else start
            return f"answer {text!r} is not at answer_start {start} (the context has {found!r} there)"
        texts.append(text)
        starts.append(start)
    return texts, starts


def read_local(path: Path, task_cfg: Mapping, on_bad_row: str) -> list[dict]:
    """One row per question of a SQuAD JSON file (train-v1.1.json, dev-v2.0.json, xquad.en.json, ...)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg}", e.lineno) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    bad = BadRows(path, on_bad_row)
    rows: list[dict] = []
    for a, article in enumerate(_field(path, doc, "data", "top level")):
        title = _field(path, article, "title", f"article {a}")
        for p, paragraph in enumerate(_field(path, article, "paragraphs", f"article {title!r}")):
            context = _field(path, paragraph, "context", f"article {title!r} paragraph {p}")
            for qa in _field(path, paragraph, "qas", f"article {title!r} paragraph {p}"):
                qid = _field(path, qa, "id", f"article {title!r} paragraph {p}")
                question = _field(path, qa, "question", f"question {qid}")
                answers = _answers(qa, context, path)
                if isinstance(answers, str):
                    bad.bad(answers, f"question {qid}")
                    continue
                rows.append(
                    {
                        "id": qid,
                        "title": title,
                        "context": context,
                        "question": question,
                        "answers": {"text": answers[0], "answer_start": answers[1]},
                    }
                )
    bad.report()
    return rows


def normalise_hub(raw: datasets.DatasetDict, task_cfg: Mapping) -> datasets.DatasetDict:
    """rajpurkar/squad(_v2) already has this schema; keep only its columns and fix the feature types."""
    columns = list(features())
    return datasets.DatasetDict(
        {split: ds.select_columns(columns).cast(features()) for split, ds in raw.items()}
    )
