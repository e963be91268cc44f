"""Knowledge-graph triples from `head<TAB>relation<TAB>tail` files (WN18RR, FB15k-237 and their kin), as id tensors.

WN18RR (Dettmers et al. 2018) ships train/valid/test.txt with WordNet synset offsets for entities and 11 relation
names. Ids are given in sorted name order over all three splits, so they do not depend on which split is read first:
link prediction ranks against every entity of the graph, including the ~200 that only valid or test mention.

A malformed line is an error, never skipped: a dropped test triple would silently change the benchmark.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from plmbench.data.tasks.errors import DataError

COLUMNS = ("head", "relation", "tail")
SPLITS = ("train", "valid", "test")


def read_triples(path: str | Path, relations: Collection[str] | None = None) -> list[tuple[str, str, str]]:
    """(head, relation, tail) names of one file, in file order; blank lines are ignored.

    With `relations` given, a relation outside it is an error (e.g. a test relation training never saw).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"no such file; expected one {'<TAB>'.join(COLUMNS)} triple per line")
    known = set(relations) if relations is not None else None
    triples = []
    with open(path, "rb") as f:  # binary: a decoding error names its own line
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\n").removesuffix("\r")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not UTF-8 text ({e.reason})", line_no) from None
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(COLUMNS) or not all(cell.strip() for cell in cells):
                found = f"{len(cells)} tab-separated column(s)" if len(cells) != len(COLUMNS) else "an empty column"
                raise DataError(path, f"{found} in {line!r}, expected 3: {', '.join(COLUMNS)}", line_no)
            head, relation, tail = (cell.strip() for cell in cells)
            if known is not None and relation not in known:
                raise DataError(path, f"unknown relation {relation!r}; known: {', '.join(sorted(known))}", line_no)
            triples.append((head, relation, tail))
    return triples


@dataclass(frozen=True)
class TripleSplits:
    """A graph's splits as (n, 3) int64 tensors of (head, relation, tail) ids, and the names behind the ids."""

    entities: tuple[str, ...]
    relations: tuple[str, ...]
    splits: dict[str, torch.Tensor]
    fingerprint: str  # sha256 of the files' bytes: keys caches of embeddings trained on them

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)


def read_splits(folder: str | Path, splits: tuple[str, ...] = SPLITS) -> TripleSplits:
    """`folder`/{train,valid,test}.txt (the first split named is the training one); the others may only use
    relations that it has."""
    folder = Path(folder)
    train, *others = splits
    named = {train: read_triples(folder / f"{train}.txt")}
    train_relations = {relation for _, relation, _ in named[train]}
    for split in others:
        named[split] = read_triples(folder / f"{split}.txt", relations=train_relations)
    entities = tuple(sorted({name for triples in named.values() for h, _, t in triples for name in (h, t)}))
    relations = tuple(sorted(train_relations))
    entity_id = {name: i for i, name in enumerate(entities)}
    relation_id = {name: i for i, name in enumerate(relations)}
    tensors = {split: torch.tensor([(entity_id[h], relation_id[r], entity_id[t]) for h, r, t in triples],
                                   dtype=torch.long).reshape(-1, 3) for split, triples in named.items()}
    digest = hashlib.sha256()
    for split in splits:
        digest.update(split.encode() + b"\0" + (folder / f"{split}.txt").read_bytes())
    return TripleSplits(entities, relations, tensors, digest.hexdigest()[:16])
