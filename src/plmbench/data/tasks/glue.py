"""GLUE: the original glue_data TSV files and the hub's nyu-mll/glue, both mapped to idx/text_a/text_b/label.

The TSVs are read by splitting on tabs, never with a CSV quote character: MRPC, MNLI and QQP sentences contain
unbalanced double quotes that a quoting reader would swallow across lines (GLUE's own scripts use QUOTE_NONE).
Labels use the hub's integer ids, so a model trained on local files scores the same on hub data.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets

from plmbench.data.tasks.errors import BadRows, DataError, TaskConfigError


@dataclass(frozen=True)
class TsvLayout:
    """Where one GLUE task keeps its text and label in the distribution TSV."""

    text_a: str
    text_b: str | None  # None for single-sentence tasks
    label: str
    label_names: tuple[str, ...] | None = None  # string labels, in hub id order; None: the file holds the ids
    columns: tuple[str, ...] | None = (
        None  # names for a header-less file (CoLA); None: the first line is a header
    )


NLI_2 = ("entailment", "not_entailment")

# Column names as in the GLUE download (download_glue_data.py); see REFERENCE.md "GLUE distribution files".
LAYOUTS: dict[str, TsvLayout] = {
    "cola": TsvLayout("sentence", None, "label", columns=("source", "label", "original_label", "sentence")),
    "sst2": TsvLayout("sentence", None, "label"),
    "mrpc": TsvLayout("#1 String", "#2 String", "Quality"),
    "stsb": TsvLayout("sentence1", "sentence2", "score"),
    "qqp": TsvLayout("question1", "question2", "is_duplicate"),
    "mnli": TsvLayout("sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction")),
    "qnli": TsvLayout("question", "sentence", "label", NLI_2),
    "rte": TsvLayout("sentence1", "sentence2", "label", NLI_2),
    "wnli": TsvLayout("sentence1", "sentence2", "label"),  # 0 = not_entailment, 1 = entailment, as on the hub
}

# The hub's text columns per task (nyu-mll/glue); every config also has `label` and `idx`.
HUB_TEXT_COLUMNS: dict[str, tuple[str, str | None]] = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}

GROUP = "first sentences"  # what a dev-only split keeps on one side: all pairs that share text_a (an MNLI premise)
STSB_RANGE = (0.0, 5.0)


def features(task_cfg: Mapping) -> datasets.Features:
    label = datasets.Value("float32") if task_cfg["kind"] == "regression" else datasets.Value("int64")
    return datasets.Features(
        {
            "idx": datasets.Value("int32"),
            "text_a": datasets.Value("string"),
            "text_b": datasets.Value("string"),
            "label": label,
        }
    )


def group_key(row: Mapping) -> str:
    return row["text_a"]


def _layout(task_cfg: Mapping) -> TsvLayout:
    name = task_cfg["name"]
    if name not in LAYOUTS:
        raise TaskConfigError(f"task.name={name!r} is not a GLUE task; allowed: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _parse_label(value: str, layout: TsvLayout, task_cfg: Mapping) -> int | float:
    """The hub's label for one TSV cell; ValueError says what was expected."""
    if task_cfg["kind"] == "regression":
        score = float(value)
        if not STSB_RANGE[0] <= score <= STSB_RANGE[1]:
            raise ValueError(f"score {value!r} outside {STSB_RANGE[0]}..{STSB_RANGE[1]}")
        return score
    if layout.label_names is not None:
        if value not in layout.label_names:
            raise ValueError(f"label {value!r} is not one of {', '.join(layout.label_names)}")
        return layout.label_names.index(value)
    allowed = [str(i) for i in range(int(task_cfg["num_labels"]))]
    if value not in allowed:
        raise ValueError(f"label {value!r} is not one of {', '.join(allowed)}")
    return int(value)


def read_local(path: Path, task_cfg: Mapping, on_bad_row: str) -> list[dict]:
    """Rows of one glue_data TSV (train.tsv, dev.tsv, dev_matched.tsv, ...), in file order.

    `idx` is the 0-based data-row number, as the hub numbers them, so it survives skipped rows.
    """
    layout = _layout(task_cfg)
    bad = BadRows(path, on_bad_row)
    rows: list[dict] = []
    header = list(layout.columns) if layout.columns else None
    data_row = -1
    # Binary lines split on b"\n" only, so a stray \r inside a field cannot split a row, and a decoding error
    # names its own line; utf-8-sig on the first line drops MRPC's byte-order mark.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\n").removesuffix("\r")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not UTF-8 text ({e.reason})", line_no) from None
            if not line:
                continue
            cells = line.split("\t")
            if header is None:
                header = cells
                _require_columns(path, header, layout)
                continue
            data_row += 1
            if len(cells) != len(header):
                expected = f"expected {len(header)} ({', '.join(header)})"
                bad.bad(f"{len(cells)} tab-separated columns, {expected}", line_no)
                continue
            cell = dict(zip(header, cells))
            try:
                label = _parse_label(cell[layout.label].strip(), layout, task_cfg)
            except ValueError as e:
                bad.bad(f"column {layout.label!r}: {e}", line_no)
                continue
            text_b = cell[layout.text_b] if layout.text_b else ""
            rows.append({"idx": data_row, "text_a": cell[layout.text_a], "text_b": text_b, "label": label})
    if header is None:
        raise DataError(path, "the file is empty")
    bad.report()
    return rows


def _require_columns(path: Path, header: list[str], layout: TsvLayout) -> None:
    needed = [c for c in (layout.text_a, layout.text_b, layout.label) if c]
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(path, f"header lacks column(s) {', '.join(missing)}; it has {', '.join(header)}", 1)


def normalise_hub(raw: datasets.DatasetDict, task_cfg: Mapping) -> datasets.DatasetDict:
    """nyu-mll/glue columns (sentence1/premise/question..., label, idx) -> idx/text_a/text_b/label."""
    name = task_cfg["name"]
    if name not in HUB_TEXT_COLUMNS:
        raise TaskConfigError(
            f"task.name={name!r} is not a GLUE task; allowed: {', '.join(HUB_TEXT_COLUMNS)}"
        )
    col_a, col_b = HUB_TEXT_COLUMNS[name]

    def to_schema(row: dict) -> dict:
        return {
            "idx": row["idx"],
            "text_a": row[col_a],
            "text_b": row[col_b] if col_b else "",
            "label": row["label"],
        }

    return datasets.DatasetDict(
        {
            split: ds.map(to_schema, remove_columns=ds.column_names, features=features(task_cfg))
            for split, ds in raw.items()
        }
    )
