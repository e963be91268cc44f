"""RACE: the original RACE/{train,dev,test}/{middle,high}/N.txt files and the hub's ehovy/race, one row per question.

Each .txt file is one JSON object: an article with parallel lists questions/options/answers (answers are letters
A-D). A question's id is "<file id>-<question number>" (e.g. "high10024.txt-0"), built the same way from both
sources, and its level comes from the folder (local) or the file id's prefix (hub).
"""

import json
from collections.abc import Mapping
from pathlib import Path

import datasets

from plmbench.data.tasks.errors import BadRows, DataError, TaskConfigError

LETTERS = "ABCD"
LEVELS = ("middle", "high")
GROUP = "articles"  # a dev-only split keeps every question of one article (file) on one side


def features(task_cfg: Mapping | None = None) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "article": datasets.Value("string"),
            "question": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string")),
            "label": datasets.Value("int64"),
            "level": datasets.Value("string"),
        }
    )


def group_key(row: Mapping) -> str:
    return row["id"].rsplit("-", 1)[0]


def question_id(file_id: str, number: int) -> str:
    return f"{file_id}-{number}"


def _file_order(path: Path) -> tuple[int, str]:
    """Numeric order of RACE's N.txt names (2.txt before 10.txt), so ids and splits do not depend on the OS."""
    return (int(path.stem), "") if path.stem.isdigit() else (0, path.stem)


def _levels(task_cfg: Mapping) -> list[str]:
    levels = list(task_cfg.get("levels") or LEVELS)
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise TaskConfigError(
            f"task.levels: unknown level(s) {', '.join(unknown)}; allowed: {', '.join(LEVELS)}"
        )
    return levels


def _read_file(path: Path, level: str, bad: BadRows) -> list[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg}", e.lineno) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    missing = [
        k for k in ("article", "questions", "options", "answers") if not isinstance(doc, dict) or k not in doc
    ]
    if missing:
        raise DataError(
            path, f"missing key(s) {', '.join(missing)}; a RACE file has article, questions, options, answers"
        )
    questions, options, answers = doc["questions"], doc["options"], doc["answers"]
    if not len(questions) == len(options) == len(answers):
        raise DataError(
            path, f"{len(questions)} questions, {len(options)} option lists and {len(answers)} answers"
        )
    file_id = doc.get("id") or f"{level}{path.name}"  # RACE's own ids look like "high10024.txt"
    rows = []
    for i, (question, opts, answer) in enumerate(zip(questions, options, answers)):
        if len(opts) != len(LETTERS):
            bad.bad(f"{len(opts)} options, expected {len(LETTERS)}", f"question {i}")
            continue
        if answer not in LETTERS:
            bad.bad(
                f"answer {answer!r} is not one of the option letters {', '.join(LETTERS)}", f"question {i}"
            )
            continue
        rows.append(
            {
                "id": question_id(file_id, i),
                "article": doc["article"],
                "question": question,
                "options": list(opts),
                "label": LETTERS.index(answer),
                "level": level,
            }
        )
    return rows


def read_local(split_dir: Path, task_cfg: Mapping, on_bad_row: str) -> list[dict]:
    """One row per question of RACE/<split>/<level>/*.txt for the task's levels (middle, high or both)."""
    rows: list[dict] = []
    for level in _levels(task_cfg):
        folder = split_dir / level
        files = sorted(folder.glob("*.txt"), key=_file_order) if folder.is_dir() else []
        if not files:
            raise DataError(folder, f"no RACE .txt files (expected {split_dir}/{level}/N.txt)")
        for path in files:
            bad = BadRows(path, on_bad_row)
            rows.extend(_read_file(path, level, bad))
            bad.report()
    return rows


def normalise_hub(raw: datasets.DatasetDict, task_cfg: Mapping) -> datasets.DatasetDict:
    """ehovy/race rows (example_id, article, answer, question, options) -> the RACE schema above.

    The hub gives each question its file's example_id, with the questions of a file in a row; the question
    number is the position within that run, which reproduces the local ids.
    """
    out = {}
    for split, ds in raw.items():
        file_ids = list(ds["example_id"])
        numbers = [0] * len(file_ids)
        for i in range(1, len(file_ids)):
            numbers[i] = numbers[i - 1] + 1 if file_ids[i] == file_ids[i - 1] else 0

        def to_schema(row: dict, i: int, numbers: list[int] = numbers) -> dict:
            level = "middle" if row["example_id"].startswith("middle") else "high"
            return {
                "id": question_id(row["example_id"], numbers[i]),
                "article": row["article"],
                "question": row["question"],
                "options": row["options"],
                "label": LETTERS.index(row["answer"]),
                "level": level,
            }

        out[split] = ds.map(to_schema, with_indices=True, remove_columns=ds.column_names, features=features())
    return datasets.DatasetDict(out)
