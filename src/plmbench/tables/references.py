"""Published tables as data: experiments/<name>.yaml, and what each of their columns measures.

A table file has a title, the source citation, the axes every row shares (`fixed_axes`), the column order and the
rows in the paper's order, each found in our results by its axis values. An experiment file instead lists
`sections: [table, ...]` and renders them in that order (experiments/albert.yaml: Table 4 then Table 5).

A user's published tables live beside their config folder, as ours do beside conf/: for each folder of
PLMBENCH_CONFIG_PATH, its sibling `experiments/` is searched first (a config folder `my-study/conf` gives
`my-study/experiments/<name>.yaml`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from plmbench.paths import shipped, user_config_dirs

EXPERIMENTS_DIR = Path(os.environ.get("PLMBENCH_EXPERIMENTS") or shipped("experiments"))


@dataclass(frozen=True)
class Column:
    """A published column and where our value comes from: `task` records' first present `metrics` key x `factor`."""

    header: str
    task: str | None = None  # None: computed (params from the records' parameter count, avg from other columns)
    metric_keys: tuple[str, ...] = ()
    factor: float = 1.0  # 100 for fractions (accuracy) shown as percent


COLUMNS: dict[str, Column] = {
    "params": Column("Params (M)"),
    "pretrain_pflops": Column("Pre-train PFLOPs"),  # train FLOPs per token x tokens seen, from the cell's records
    "mlm": Column("MLM", "pretrain", ("mlm_acc",), 100.0),
    "nsp": Column("NSP", "pretrain", ("nsp_acc",), 100.0),
    "sop": Column("SOP", "pretrain", ("sop_acc",), 100.0),
    "squad_v1_f1": Column("SQuAD1.1 F1", "squad_v1", ("f1",)),
    "squad_v1_em": Column("SQuAD1.1 EM", "squad_v1", ("exact_match", "exact")),
    # With a no-answer threshold chosen on dev (the paper's protocol) the evaluate module reports best_*.
    "squad_v2_f1": Column("SQuAD2.0 F1", "squad_v2", ("best_f1", "f1")),
    "squad_v2_em": Column("SQuAD2.0 EM", "squad_v2", ("best_exact", "exact")),
    "mnli": Column("MNLI", "mnli", ("accuracy",), 100.0),
    "sst2": Column("SST-2", "sst2", ("accuracy",), 100.0),
    "race": Column("RACE", "race", ("accuracy",), 100.0),
    "rte": Column("RTE", "rte", ("accuracy",), 100.0),
    "cola": Column("CoLA (MCC)", "cola", ("matthews_correlation",), 100.0),
    "mrpc_f1": Column("MRPC F1", "mrpc", ("f1",), 100.0),
    "mrpc_acc": Column("MRPC acc", "mrpc", ("accuracy",), 100.0),
    "stsb": Column("STS-B (Pearson)", "stsb", ("pearson",), 100.0),
    "qqp": Column("QQP F1", "qqp", ("f1",), 100.0),
    "qnli": Column("QNLI", "qnli", ("accuracy",), 100.0),
    "csqa": Column("CSQA dev", "csqa", ("accuracy",), 100.0),  # CommonsenseQA, 5 choices: chance 20%
    "supersense": Column("WordNet supersense", "supersense", ("accuracy",), 100.0),  # lemmas unseen in training
    "supersense_probe": Column("Supersense, frozen probe", "supersense_probe", ("accuracy",), 100.0),  # edge probing
    "avg": Column("Avg"),
    # A model's costs beside a reference model's (distillation: the first row is the teacher)
    "shape": Column("Shape"),
    "params_saved": Column("Params saved (%)"),
    "throughput": Column("Seq/s", "throughput", ("sequences_per_second",)),
    "speedup": Column("Speed-up", "throughput", ("speedup",)),
    "glue": Column("GLUE"),
    "glue_kept": Column("GLUE kept (%)"),
}
GLUE_PARTS = ("cola", "sst2", "mrpc_f1", "stsb", "qqp", "mnli", "qnli", "rte")  # `glue`: the mean of those a table has
# Columns computed from another column against the table's first row: (source column, reduction or share, in %)
RELATIVE = {"params_saved": ("params", "reduction"), "glue_kept": ("glue", "share")}
MODEL_COLUMNS = ("params", "pretrain_pflops", "shape", "params_saved", "throughput", "speedup")  # measured on the model, not on tasks
AVG_PARTS = ("squad_v1_f1", "squad_v1_em", "squad_v2_f1", "squad_v2_em", "mnli", "sst2", "race")
AVG_TOLERANCE = 0.051  # the paper rounds to one decimal, so its Avg may differ from the formula by up to 0.05


def paper_average(values: dict[str, float]) -> float:
    """ALBERT's Avg: mean of SQuAD1.1 (F1+EM)/2, SQuAD2.0 (F1+EM)/2, MNLI, SST-2 and RACE."""
    return ((values["squad_v1_f1"] + values["squad_v1_em"]) / 2 + (values["squad_v2_f1"] + values["squad_v2_em"]) / 2
            + values["mnli"] + values["sst2"] + values["race"]) / 5


@dataclass(frozen=True)
class ReferenceRow:
    label: str  # as the paper prints it, e.g. "E=768 all-shared", "SOP"
    axes: dict[str, str]  # what tells this row's records apart from the other rows'
    values: dict[str, float]  # published value per column key


@dataclass(frozen=True)
class ReferenceTable:
    name: str  # the file stem, e.g. "albert_table4"
    title: str
    source: str
    columns: list[str]
    rows: list[ReferenceRow]
    fixed_axes: dict[str, str] = field(default_factory=dict)
    setup: str = ""
    scale_mapping: str = ""  # what the row labels mean at a scale other than the paper's

    def row_axes(self, row: ReferenceRow) -> dict[str, str]:
        """All axis values of a row: the table's fixed ones plus the row's own."""
        return {**self.fixed_axes, **row.axes}


def experiments_dir() -> Path:
    return EXPERIMENTS_DIR


def experiments_dirs() -> list[Path]:
    """Where published tables are looked up, first match wins: beside each user config folder, then ours."""
    return [*(directory.parent / "experiments" for directory in user_config_dirs()), EXPERIMENTS_DIR]


def experiment_file(name: str, directories: list[Path] | None = None) -> Path:
    """<name>.yaml from the first folder that has it (else the last folder's: the path an error names)."""
    candidates = [directory / f"{name}.yaml" for directory in directories or experiments_dirs()]
    return next((path for path in candidates if path.is_file()), candidates[-1])


def load_experiment(name: str, root: Path | None = None) -> list[ReferenceTable]:
    """The published tables of an experiment, in render order: its `sections`, or the file itself if it is a table."""
    data, path = _read(name, root)
    if "sections" not in data:
        return [_table(name, data, path)]
    sections = data["sections"]
    if not isinstance(sections, list) or not sections or not all(isinstance(s, str) for s in sections):
        raise ValueError(f"{path}: `sections` must be a non-empty list of table names, got {sections!r}")
    return [load_table(section, root) for section in sections]


def load_table(name: str, root: Path | None = None) -> ReferenceTable:
    data, path = _read(name, root)
    if "sections" in data:
        raise ValueError(f"{path}: lists sections; a table file has `rows` (load it with load_experiment)")
    return _table(name, data, path)


def _read(name: str, root: Path | None) -> tuple[dict, Path]:
    directories = [Path(root)] if root else experiments_dirs()
    path = experiment_file(name, directories)
    if not path.is_file():
        known = sorted({p.stem for directory in directories for p in directory.glob("*.yaml")})
        raise ValueError(f"no published table for experiment={name!r}: {path} does not exist; "
                         f"known: {', '.join(known) or 'none'}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")  # noqa: TRY004 - user input: one-line error
    return data, path


def _table(name: str, data: dict, path: Path) -> ReferenceTable:
    for key in ("title", "source", "columns", "rows"):
        if key not in data:
            raise ValueError(f"{path}: missing key `{key}` (a table needs title, source, columns, rows)")
    columns = list(data["columns"])
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"{path}: unknown column(s) {unknown}; allowed: {', '.join(COLUMNS)}")
    if "avg" in columns and not set(AVG_PARTS) <= set(columns):
        raise ValueError(f"{path}: column avg needs all of {', '.join(AVG_PARTS)}")
    rows = [_row(path, i, entry, columns) for i, entry in enumerate(data["rows"])]
    for kind, keys in (("label", [r.label for r in rows]), ("axes", [tuple(sorted(r.axes.items())) for r in rows])):
        if len(set(keys)) != len(keys):
            raise ValueError(f"{path}: two rows share the same {kind}; each row must be distinct")
    return ReferenceTable(name=name, title=str(data["title"]), source=str(data["source"]), columns=columns,
                          rows=rows, fixed_axes={str(k): str(v) for k, v in (data.get("fixed_axes") or {}).items()},
                          setup=str(data.get("setup", "")), scale_mapping=str(data.get("scale_mapping", "")))


def _row(path: Path, index: int, entry: dict, columns: list[str]) -> ReferenceRow:
    where = f"{path}: rows[{index}]"
    if not isinstance(entry, dict) or not {"label", "axes", "values"} <= set(entry):
        raise ValueError(f"{where}: a row needs label, axes and values")
    values = entry["values"] or {}
    missing = [c for c in columns if c not in values]
    extra = [c for c in values if c not in columns]
    if missing or extra:
        raise ValueError(f"{where} ({entry['label']}): values must cover exactly the columns; "
                         f"missing {missing}, not a column {extra}")
    try:
        values = {c: None if values[c] is None else float(values[c]) for c in columns}  # null: not published
    except (TypeError, ValueError):
        raise ValueError(f"{where} ({entry['label']}): every value must be a number, got {entry['values']}") from None
    # A transcription check: the published Avg must follow from the published columns.
    if values.get("avg") is not None and None not in values.values() and abs(paper_average(values) - values["avg"]) > AVG_TOLERANCE:
        raise ValueError(f"{where} ({entry['label']}): avg {values['avg']} does not match the paper's formula "
                         f"({paper_average(values):.2f}); check the transcription")
    return ReferenceRow(label=str(entry["label"]), axes={str(k): str(v) for k, v in entry["axes"].items()},
                        values=values)
