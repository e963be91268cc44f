"""Sentence splitting for every corpus: Bling Fire's rule-based splitter, fast and deterministic.

NSP/SOP and segment packing need sentence boundaries; one splitter for all corpora keeps their documents
comparable. The splitter's version enters every corpus fingerprint, so upgrading it invalidates cached
tokenizations instead of silently mixing two segmentations.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version

import blingfire

# Bump the suffix when the way text reaches the splitter changes (e.g. new whitespace handling).
SPLITTER_VERSION = f"blingfire-{version('blingfire')}+plmbench-1"


def text_to_sentences(text: str) -> list[str]:
    """The sentences of one paragraph (line breaks inside it are treated as spaces); [] for blank text."""
    if not text.strip():
        return []
    return [sentence for sentence in blingfire.text_to_sentences(text).split("\n") if sentence.strip()]


def paragraphs_to_sentences(paragraphs: Iterable[str]) -> list[str]:
    """The sentences of a document given as paragraphs, in order; a sentence never spans two paragraphs."""
    return [sentence for paragraph in paragraphs for sentence in text_to_sentences(paragraph)]
