"""Pre-training corpora: one Hydra group (`corpus=embedded|files|hub`), one protocol.

A corpus yields documents as ordered lists of sentences (what NSP/SOP and segment packing need) and carries a
fingerprint: a content hash plus the sentence splitter's version, so caches keyed on it (tokenizers, tokenized
instances) go stale exactly when the text or its segmentation changes.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from plmbench.data.corpora.sentences import SPLITTER_VERSION


class CorpusConfigError(ValueError):
    """A `corpus` config node that names an unknown kind or option, or an input the corpus cannot read."""


@runtime_checkable
class Corpus(Protocol):
    name: str
    fingerprint: str  # content hash of the text + splitter version

    def documents(self) -> Iterator[list[str]]:
        """Each document is an ordered list of sentences (non-empty strings)."""
        ...


# kind -> module defining `from_config(cfg) -> Corpus`; imported on use, so `datasets` loads only for corpus=hub.
BUILDERS: dict[str, str] = {
    "embedded": "plmbench.data.corpora.embedded",
    "files": "plmbench.data.corpora.files",
    "hub": "plmbench.data.corpora.hub",
}

COMMON_KEYS = ("kind", "name")


def build_corpus(cfg: Mapping) -> Corpus:
    """The corpus described by a Hydra `corpus` node (`cfg.kind` picks the builder)."""
    kind = cfg.get("kind")
    if kind not in BUILDERS:
        raise CorpusConfigError(f"corpus.kind={kind!r} is not one of {', '.join(BUILDERS)}")
    return importlib.import_module(BUILDERS[kind]).from_config(cfg)


def check_keys(cfg: Mapping, allowed: Iterable[str]) -> None:
    """Reject options a corpus does not understand: a typo should fail loudly, not be ignored."""
    allowed = set(allowed) | set(COMMON_KEYS)
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise CorpusConfigError(f"corpus.{unknown[0]} is not an option of corpus.kind={cfg.get('kind')!r}; "
                                f"allowed: {', '.join(sorted(allowed))}")


def content_fingerprint(parts: Iterable[bytes | str]) -> str:
    """sha256 over length-prefixed parts (bytes of the text, settings that shape documents) + SPLITTER_VERSION."""
    digest = hashlib.sha256()
    for part in [*parts, SPLITTER_VERSION]:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
