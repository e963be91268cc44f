"""Per-token entity ids of a tokenized sentence, for ERNIE-style fusion: link the text, align to sub-words.

ERNIE (thunlp/ERNIE pretrain_data/) links raw Wikipedia text with TAGME and keeps one entity id per token, the
entity on the first token of its mention and -1 elsewhere ("Q123 Q123 Q123 -> d[Q123] -1 -1" in
code/create_instances.py); here the linker is data/entity_linking.py over WordNet and the alignment its
`align_to_subwords`. Ids are rows of the entity table (KnowledgeGraph.entities indices, models/entity_table.py).

A LinkingSpec is what enters the instance cache keys: the sense choice, the confidence cut-off and the WordNet
files (by names and sizes, not by path, so a moved checkout keeps its caches).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Encoding

from plmbench.data.entity_linking import LINKER_VERSION, EntityLinker, align_to_subwords
from plmbench.data.wordnet import default_root


@dataclass(frozen=True)
class LinkingSpec:
    method: str  # "first" or "lesk" (entity_linking.METHODS)
    min_score: float  # mentions below this confidence are dropped
    root: str  # the WordNet dict directory

    @classmethod
    def from_knowledge(cls, knowledge: Mapping | None) -> LinkingSpec | None:
        """From the `knowledge` config node; None when fusion is off (instances then carry no entity ids)."""
        if not knowledge or not knowledge.get("enabled"):
            return None
        linking = dict(knowledge.get("linking") or {})
        root = knowledge.get("wordnet_dir") or default_root()
        return cls(str(linking.get("method", "first")), float(linking.get("min_score", 0.0)),
                   str(Path(root).resolve()))

    def key(self) -> dict:
        return {"method": self.method, "min_score": self.min_score, "wordnet": wordnet_fingerprint(Path(self.root)),
                "linker": LINKER_VERSION}


def wordnet_fingerprint(root: Path) -> str:
    """The dict files' names and sizes: a different WordNet gives a different key (as the probe's cache does)."""
    files = sorted((path.name, path.stat().st_size) for path in Path(root).iterdir() if path.is_file())
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


@lru_cache(maxsize=2)
def linker_for(spec: LinkingSpec) -> EntityLinker:
    """One linker per process (datasets' map workers build their own): loading WordNet is the slow part."""
    return EntityLinker.from_wordnet(spec.root, method=spec.method, min_score=spec.min_score)


def sentence_entity_ids(linker: EntityLinker, text: str, encoding: Encoding) -> list[int]:
    """One entity id per token of `encoding` (the tokenization of `text`): ERNIE's first-sub-word alignment."""
    return align_to_subwords(linker.link(text), encoding.offsets)
