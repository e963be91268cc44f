"""CommonsenseQA (Talmor et al. 2019): the official jsonl files and the hub's tau/commonsense_qa, as RACE-shaped rows.

One question per line: {"answerKey": "A", "id": ..., "question": {"question_concept": ..., "stem": ...,
"choices": [{"label": "A", "text": ...} x 5]}}. Rows take the multiple-choice schema of plmbench.data.tasks.race
(id, article, question, options, label) with no article: CSQA has no passage, and the models answer from the
question alone. question_concept (the ConceptNet concept the question was written about) is kept beside them.

The official test file (test_rand_split_no_answers.jsonl) has no answers: its rows get label -1, as GLUE's test
rows do on the hub. In any other file a row without a valid answerKey is malformed (task.on_bad_row).
"""

import json
from collections.abc import Mapping
from pathlib import Path

import datasets

from plmbench.data.tasks.errors import BadRows, DataError

LETTERS = "ABCDE"
UNLABELED = -1
GROUP = "questions"  # a dev-only split (never needed: the train file is public) keeps questions whole


def features(task_cfg: Mapping | None = None) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "article": datasets.Value("string"),
            "question": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string")),
            "label": datasets.Value("int64"),
            "question_concept": datasets.Value("string"),
        }
    )


def group_key(row: Mapping) -> str:
    return row["id"]


def is_unlabeled(path: Path) -> bool:
    """The official test file, by its name: test_rand_split_no_answers.jsonl."""
    return "no_answers" in path.name


def parse_row(row: object, labeled: bool) -> dict:
    """One jsonl object -> a schema row; ValueError says what is wrong with it."""
    question = row.get("question") if isinstance(row, dict) else None
    if not isinstance(question, dict) or not isinstance(question.get("stem"), str) or "id" not in row:
        raise ValueError("lacks id, question.stem or question.choices")
    choices = question.get("choices")
    if not isinstance(choices, list) or len(choices) != len(LETTERS):
        found = len(choices) if isinstance(choices, list) else "no"
        raise ValueError(f"{found} choices, expected {len(LETTERS)}")
    labels = [choice.get("label") if isinstance(choice, dict) else None for choice in choices]
    if labels != list(LETTERS):
        raise ValueError(f"choice labels {labels}, expected {', '.join(LETTERS)} in order")
    label = UNLABELED
    if labeled:
        answer = row.get("answerKey")
        if answer is None:
            raise ValueError("no answerKey (only the test file is unlabeled)")
        if answer not in labels:
            raise ValueError(f"answerKey {answer!r} is not one of its choices' labels {', '.join(labels)}")
        label = labels.index(answer)
    return {
        "id": str(row["id"]),
        "article": "",
        "question": question["stem"],
        "options": [str(choice.get("text", "")) for choice in choices],
        "label": label,
        "question_concept": str(question.get("question_concept", "")),
    }


def read_local(path: Path, task_cfg: Mapping, on_bad_row: str) -> list[dict]:
    """Rows of one CommonsenseQA jsonl file, in file order."""
    bad = BadRows(path, on_bad_row)
    labeled = not is_unlabeled(path)
    rows = []
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError as error:
                raise DataError(path, f"not UTF-8 text ({error.reason})", number) from None
            if not line:
                continue
            try:
                rows.append(parse_row(json.loads(line), labeled))
            except json.JSONDecodeError as error:
                bad.bad(f"not valid JSON: {error.msg} at column {error.colno}", number)
            except ValueError as error:
                bad.bad(str(error), number)
    bad.report()
    return rows


def normalise_hub(raw: datasets.DatasetDict, task_cfg: Mapping) -> datasets.DatasetDict:
    """tau/commonsense_qa rows (id, question, question_concept, choices {label, text}, answerKey) -> the schema.

    The hub's test split has answerKey '' for every row: label -1, as in the local test file.
    """

    def to_schema(row: dict) -> dict:
        answer = row["answerKey"]
        return {
            "id": row["id"],
            "article": "",
            "question": row["question"],
            "options": list(row["choices"]["text"]),
            "label": list(row["choices"]["label"]).index(answer) if answer else UNLABELED,
            "question_concept": row["question_concept"],
        }

    return datasets.DatasetDict(
        {
            split: ds.map(to_schema, remove_columns=ds.column_names, features=features(task_cfg))
            for split, ds in raw.items()
        }
    )
