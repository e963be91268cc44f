"""WordNet 3.0 as a knowledge graph: synsets are entities, wndb(5WN) pointers are relations, plus a lemma index.

This is the graph that knowledge-fusion models (ERNIE-style) embed and link text to. Relation names follow WN18 /
WN18RR (Bordes et al. 2013; Dettmers et al. 2018), so triples read from a WN18RR file line up with ours by name.
A lexical pointer (between two words, e.g. derivationally related forms) becomes an edge between their synsets, as
in WN18; the same (head, relation, tail) from several word pairs is one triple.

Entity ids are "<pos>.<8-digit offset>" (e.g. "n.02084071", dog.n.01). Offsets are only unique within a part of
speech (296 collide across parts of speech), so a bare WN18RR offset resolves only where it is unambiguous.

Offsets are those of the dict files read. Debian's wordnet-base rebuilds the database from the lexicographer
sources, and its noun offsets equal Princeton's (and WN18RR's) while most verb and some adjective offsets do not:
link WN18RR verb triples to this graph only with Princeton's own dict files ($PLMBENCH_WORDNET_DIR).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from plmbench.data.tasks.errors import DataError
from plmbench.data.wordnet import (
    POS_FILES,
    Synset,
    default_root,
    load_sense_index,
    load_tag_counts,
    load_wordnet,
)

# wninput(5WN) pointer symbols -> relation names. WN18's 18 names where WN18 has the relation, the same pattern
# elsewhere. `\` is "pertainym" on adjectives and "derived from adjective" on adverbs: one relation, one name.
RELATIONS: dict[str, str] = {
    "@": "_hypernym",
    "~": "_hyponym",
    "@i": "_instance_hypernym",
    "~i": "_instance_hyponym",
    "%m": "_member_meronym",  # head has tail as a member (family Canidae _member_meronym genus Canis)
    "#m": "_member_holonym",
    "%p": "_has_part",
    "#p": "_part_of",
    "%s": "_substance_meronym",
    "#s": "_substance_holonym",
    "+": "_derivationally_related_form",
    ";c": "_synset_domain_topic_of",
    "-c": "_member_of_domain_topic",
    ";r": "_synset_domain_region_of",
    "-r": "_member_of_domain_region",
    ";u": "_synset_domain_usage_of",
    "-u": "_member_of_domain_usage",
    "^": "_also_see",
    "$": "_verb_group",
    "&": "_similar_to",
    "!": "_antonym",
    "=": "_attribute",
    "*": "_entailment",
    ">": "_cause",
    "<": "_participle_of",
    "\\": "_pertainym",
}
RELATION_NAMES: tuple[str, ...] = tuple(dict.fromkeys(RELATIONS.values()))
WN18RR_RELATIONS: tuple[str, ...] = (  # the 11 relations WN18RR keeps (relations.dict order)
    "_hypernym", "_derivationally_related_form", "_instance_hypernym", "_also_see", "_member_meronym",
    "_synset_domain_topic_of", "_has_part", "_member_of_domain_usage", "_member_of_domain_region", "_verb_group",
    "_similar_to",
)  # fmt: skip
POS_ORDER = tuple(POS_FILES)  # n, v, a, r: breaks ties between equally frequent senses of different parts of speech


def entity_id(pos: str, offset: int) -> str:
    return f"{pos}.{offset:08d}"


@dataclass(frozen=True)
class Sense:
    """One sense of a lemma: which entity, and how WordNet ranks it."""

    entity: int  # index into KnowledgeGraph.entities
    pos: str
    number: int  # WordNet's sense number within (lemma, pos); 1 is the most frequent in SemCor
    count: int  # times SemCor tagged this sense (cntlist.rev); 0 when never tagged


@dataclass
class KnowledgeGraph:
    entities: tuple[str, ...]  # entity ids, "n.02084071"
    synsets: tuple[Synset, ...]  # the synset of each entity (lemmas, gloss and examples for linking)
    relations: tuple[str, ...]  # relation names; triples index into it
    triples: np.ndarray  # (n, 3) int64: head entity, relation, tail entity; sorted, no duplicates
    senses: dict[str, tuple[Sense, ...]]  # lowercased lemma, words joined by '_' -> senses, most frequent first
    entity_index: dict[str, int] = field(init=False, repr=False)
    _bare_offsets: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.entity_index = {entity: i for i, entity in enumerate(self.entities)}
        by_offset: dict[str, list[int]] = {}
        for i, entity in enumerate(self.entities):
            by_offset.setdefault(entity.partition(".")[2], []).append(i)
        self._bare_offsets = {offset: found[0] for offset, found in by_offset.items() if len(found) == 1}

    def index(self, entity: str) -> int:
        """The index of "n.02084071", or of a bare WN18RR offset "02084071" when no other part of speech has it."""
        found = self.entity_index.get(entity, self._bare_offsets.get(entity))
        if found is None:
            raise KeyError(f"{entity!r} is not an entity of this graph (nor an unambiguous bare offset)")
        return found

    def relation(self, name: str) -> int:
        return self.relations.index(name)

    def edges(self, head: str, relation: str) -> list[str]:
        """Tail entity ids of (head, relation, *): a reading aid for tests and notebooks, not a fast path."""
        h, r = self.index(head), self.relation(relation)
        rows = self.triples[(self.triples[:, 0] == h) & (self.triples[:, 1] == r)]
        return [self.entities[t] for t in rows[:, 2]]


def load_graph(root: Path | str | None = None) -> KnowledgeGraph:
    """The graph of the WordNet dict files under `root` (default: wordnet.default_root()); cached per root."""
    return _build(Path(root).resolve() if root is not None else default_root().resolve())


@lru_cache(maxsize=2)
def _build(root: Path) -> KnowledgeGraph:
    synsets = tuple(load_wordnet(root))
    entities = tuple(entity_id(s.pos, s.offset) for s in synsets)
    index = {entity: i for i, entity in enumerate(entities)}
    relation_of = {symbol: RELATION_NAMES.index(name) for symbol, name in RELATIONS.items()}
    rows = [
        (head, relation_of[p.symbol], index[entity_id(p.pos, p.offset)])
        for head, synset in enumerate(synsets)
        for p in synset.pointers
        if p.symbol in relation_of  # a symbol outside wninput(5WN) would be a new WordNet: leave it out
    ]
    triples = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1, 3), axis=0)
    return KnowledgeGraph(entities, synsets, RELATION_NAMES, triples, _senses(root, index))


def _senses(root: Path, index: dict[str, int]) -> dict[str, tuple[Sense, ...]]:
    counts = load_tag_counts(root)
    by_lemma: dict[str, list[Sense]] = {}
    for (lemma, pos), offsets in load_sense_index(root).items():
        senses = by_lemma.setdefault(lemma, [])
        for number, offset in enumerate(offsets, start=1):
            senses.append(Sense(index[entity_id(pos, offset)], pos, number, counts.get((lemma, pos, number), 0)))
    # Most frequent first across parts of speech (SemCor counts); WordNet's own order within one.
    return {
        lemma: tuple(sorted(senses, key=lambda s: (-s.count, s.number, POS_ORDER.index(s.pos))))
        for lemma, senses in by_lemma.items()
    }


def read_triples(path: Path | str, relations: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """(head, relation, tail) strings of a WN18RR-style file: one `head<TAB>relation<TAB>tail` per line.

    `relations` are the names allowed (default: WN18RR's 11). A line with another number of columns (a truncated
    download), an empty field or an unknown relation raises DataError naming file:line; blank lines are skipped.
    """
    allowed = tuple(relations) if relations is not None else WN18RR_RELATIONS
    triples = []
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataError(path, f"not UTF-8 text ({error.reason})", number) from None
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != 3 or not all(cell.strip() for cell in cells):
                raise DataError(path, f"{len(cells)} tab-separated columns {cells!r}; expected head, relation, tail",
                                number)
            head, relation, tail = (cell.strip() for cell in cells)
            if relation not in allowed:
                raise DataError(path, f"unknown relation {relation!r}; allowed: {', '.join(allowed)}", number)
            triples.append((head, relation, tail))
    return triples
