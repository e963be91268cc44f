"""CoNLL-2003 NER: the original column files and the hub's eriktks/conll2003, one row per sentence.

The distribution files (eng.train, eng.testa = dev, eng.testb = test) hold one token per line with four
space-separated columns, token POS chunk NER; a blank line ends a sentence and a "-DOCSTART- -X- -X- O" line starts
a document. Their NER tags are IOB1 (a type's first token is I-, B- only where two entities of one type touch);
every source is normalised to IOB2 (each entity starts with B-), the scheme seqeval scores and the hub uses.

Schema: id (the sentence's 0-based number in its file, as the hub numbers them), document (its document's number;
-1 on the hub, which drops -DOCSTART-), tokens, tags (IOB2 strings).
This module is a task family for plmbench.data.tasks (features, read_local, normalise_hub, group_key, GROUP).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from plmbench.data.tasks.errors import BadRows, DataError, TaskConfigError

GROUP = "documents"  # a dev-only split keeps every sentence of one news story on one side
DOCSTART = "-DOCSTART-"
COLUMNS = 4  # token POS chunk NER
_TAG = re.compile(r"O|[BI]-[A-Za-z]+")


def features(task_cfg: Mapping | None = None) -> datasets.Features:
    return datasets.Features({
        "id": datasets.Value("string"),
        "document": datasets.Value("int32"),
        "tokens": datasets.List(datasets.Value("string")),
        "tags": datasets.List(datasets.Value("string")),
    })


def group_key(row: Mapping) -> str:
    return str(row["document"])


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """An I-X that does not continue an entity of type X (after O, another type, or at the start) becomes B-X.
    IOB2 input comes back unchanged."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = f"B-{tag[2:]}"
        out.append(tag)
        previous = tag
    return out


def _labels(task_cfg: Mapping) -> list[str]:
    labels = list(task_cfg.get("labels") or [])
    if not labels or "O" not in labels:
        raise TaskConfigError(f"task.labels={labels!r}: list the IOB2 tags, O first (e.g. [O, B-PER, I-PER, ...])")
    return labels


class _Sentences:
    """Collects one file's sentences, applying the bad-row policy to a sentence with a malformed line."""

    def __init__(self, labels: list[str], bad: BadRows):
        self.labels, self.bad = set(labels), bad
        self.rows: list[dict] = []
        self.tokens: list[str] = []
        self.tags: list[str] = []
        self.first_line = 0
        self.problem: tuple[str, int] | None = None
        self.document = -1
        self.number = 0  # sentences seen, kept or not, so ids match the file's (and the hub's) numbering

    def add(self, cells: list[str], line_no: int) -> None:
        if not self.tokens and self.problem is None:
            self.first_line = line_no
        if len(cells) != COLUMNS:
            self.problem = self.problem or (f"{len(cells)} columns, expected {COLUMNS} (token POS chunk NER)", line_no)
        elif not _TAG.fullmatch(cells[3]):
            self.problem = self.problem or (f"NER tag {cells[3]!r} is not O, B-<type> or I-<type>", line_no)
        else:
            self.tokens.append(cells[0])
            self.tags.append(cells[3])

    def end(self) -> None:
        if not self.tokens and self.problem is None:
            return
        number, self.number = self.number, self.number + 1
        tags = iob1_to_iob2(self.tags)
        unknown = sorted(set(tags) - self.labels)
        if self.problem is None and unknown:
            self.problem = (f"tag {unknown[0]} is not one of task.labels", self.first_line)
        if self.problem is not None:
            self.bad.bad(f"sentence {number}: {self.problem[0]}", self.problem[1])
        else:
            self.rows.append({"id": str(number), "document": self.document, "tokens": self.tokens, "tags": tags})
        self.tokens, self.tags, self.problem = [], [], None


def read_local(path: Path, task_cfg: Mapping, on_bad_row: str) -> list[dict]:
    """The sentences of one CoNLL-2003 column file (eng.train, eng.testa, eng.testb, or train.txt/valid.txt/test.txt),
    tags converted to IOB2."""
    bad = BadRows(path, on_bad_row)
    sentences = _Sentences(_labels(task_cfg), bad)
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                cells = line.split()
                if not cells:
                    sentences.end()
                elif cells[0] == DOCSTART:
                    sentences.end()
                    sentences.document += 1
                else:
                    sentences.add(cells, line_no)
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    sentences.end()
    bad.report()
    return sentences.rows


def normalise_hub(raw: datasets.DatasetDict, task_cfg: Mapping) -> datasets.DatasetDict:
    """eriktks/conll2003 rows (id, tokens, pos_tags, chunk_tags, ner_tags as ClassLabel ids or strings) -> the
    schema above, tags as IOB2 strings."""
    labels = set(_labels(task_cfg))
    out = {}
    for split, ds in raw.items():
        feature = ds.features["ner_tags"].feature
        names = feature.names if isinstance(feature, datasets.ClassLabel) else None

        def to_schema(row: dict, names=names, split=split) -> dict:
            tags = iob1_to_iob2([names[t] for t in row["ner_tags"]] if names else row["ner_tags"])
            unknown = sorted(set(tags) - labels)
            if unknown:
                raise DataError(f"hub:{task_cfg['hub']['path']}/{split}", f"tag {unknown[0]} is not one of "
                                f"task.labels", f"sentence {row['id']}")
            return {"id": str(row["id"]), "document": -1, "tokens": row["tokens"], "tags": tags}

        out[split] = ds.map(to_schema, remove_columns=ds.column_names, features=features())
    return datasets.DatasetDict(out)


def load_hub(task_cfg: Mapping) -> datasets.DatasetDict:
    """The hub's CoNLL-2003 through datasets.load_dataset, normalised.

    eriktks/conll2003 (formerly `conll2003`) is a loading script, which datasets >= 4 no longer runs; the hub's
    automatic Parquet export of it (revision refs/convert/parquet, task.hub.revision) holds the same rows.
    """
    hub = task_cfg["hub"]
    raw = datasets.load_dataset(hub["path"], hub.get("name"), revision=hub.get("revision"))
    wanted = ["train", *task_cfg["eval_splits"]]
    missing = [s for s in wanted if s not in raw]
    if missing:
        raise TaskConfigError(f"task.eval_splits: {hub['path']} has no split(s) {', '.join(missing)}; "
                              f"it has {', '.join(raw)}")
    return normalise_hub(datasets.DatasetDict({s: raw[s] for s in wanted}), task_cfg)
