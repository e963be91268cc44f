"""`corpus=hub`: pre-train on Hugging Face datasets (WikiText-103 by default; Wikipedia + BookCorpus for BERT).

Each entry of `corpus.sources` is one `datasets.load_dataset(path, name, split=..., streaming=corpus.streaming)`
call, read in one of two layouts:
  wikitext   one row per line; a ` = Title = ` line starts an article (WikiText-2/103 raw)
  document   one row per document in `text_column` (Wikipedia); `rows_per_document` > 1 groups consecutive rows
             (BookCorpus has one sentence per row and no book boundaries)
`data_files` reads local files in the same schema (`path: text|json|parquet`), which is how the tests run it.
When the hub cannot be reached the corpus fails at once with a one-line error naming the offline alternatives.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from functools import cached_property
from itertools import islice
from pathlib import Path
from urllib.parse import urlparse

from plmbench.data.corpora import CorpusConfigError, check_keys, content_fingerprint
from plmbench.data.corpora.files import expand_globs, file_sha256, wikitext_documents
from plmbench.data.corpora.sentences import paragraphs_to_sentences

OFFLINE_ALTERNATIVES = ("offline alternatives: corpus=embedded (built by `make data`) or "
                        "corpus=files corpus.paths='path/*.txt'")


class HubUnavailableError(CorpusConfigError):
    """The Hugging Face hub cannot be reached (offline mode or no connection)."""


@dataclass(frozen=True)
class HubSource:
    path: str  # hub dataset id, or a packaged builder (text, json, parquet) used with data_files
    name: str | None = None  # dataset configuration, e.g. wikitext-103-raw-v1
    split: str = "train"
    revision: str | None = None  # a commit or branch; pin it so the fingerprint names fixed content
    data_files: tuple[str, ...] | None = None  # local globs read with `path` as the builder
    text_column: str = "text"
    layout: str = "wikitext"
    rows_per_document: int = 1

    def label(self) -> str:
        return "/".join(part for part in (self.path, self.name, self.split) if part)


def _rows_as_documents(texts: Iterable[str], rows_per_document: int) -> Iterator[list[str]]:
    """Each group of rows is a document; every non-blank line of its text is a paragraph."""
    texts = iter(texts)
    for group in iter(lambda: list(islice(texts, rows_per_document)), []):
        yield [line.strip() for text in group for line in text.splitlines() if line.strip()]


# layout -> parser from the text column (in row order) to documents given as paragraphs
LAYOUTS = {
    "wikitext": lambda texts, source: wikitext_documents(texts),
    "document": lambda texts, source: _rows_as_documents(texts, source.rows_per_document),
}


class HubCorpus:
    """Documents of one or more datasets loaded with `datasets.load_dataset`, read in order."""

    def __init__(self, sources: Mapping[str, HubSource], streaming: bool = False, cache_dir: str | None = None,
                 name: str = "hub"):
        if not sources:
            raise CorpusConfigError("corpus.sources is empty; give at least one dataset (path, name, split)")
        self.name, self.sources, self.streaming = name, dict(sources), streaming
        self.datasets = {key: _load(key, source, streaming, cache_dir) for key, source in self.sources.items()}

    @cached_property
    def fingerprint(self) -> str:
        """Local data files: their bytes. Hub datasets: id, config, split and revision (pin `revision`)."""
        parts = []
        for key, source in self.sources.items():
            parts.append(f"{key}={replace(source, data_files=None)!r}")  # file names do not matter, bytes do
            parts += [file_sha256(path) for path in _local_files(key, source)]
        return content_fingerprint(parts)

    def documents(self) -> Iterator[list[str]]:
        for key, source in self.sources.items():
            texts = _texts(self.datasets[key], source.text_column)
            for paragraphs in LAYOUTS[source.layout](texts, source):
                sentences = paragraphs_to_sentences(paragraphs)
                if sentences:
                    yield sentences


def _texts(dataset, column: str, batch_size: int = 1000) -> Iterator[str]:
    for batch in dataset.iter(batch_size=batch_size):  # batches: far faster than row dicts
        yield from (text or "" for text in batch[column])


def _load(key: str, source: HubSource, streaming: bool, cache_dir: str | None):
    import datasets  # imported on use: heavy, and only corpus=hub needs it

    local = source.data_files is not None or Path(source.path).exists()
    if not local:
        _require_hub(source)
    data_files = {source.split: [str(path) for path in _local_files(key, source)]} if source.data_files else None
    try:
        dataset = datasets.load_dataset(source.path, source.name, split=source.split, data_files=data_files,
                                        revision=source.revision, streaming=streaming, cache_dir=cache_dir)
    except ConnectionError as error:  # datasets' wording for "offline and not cached" and "hub unreachable"
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise HubUnavailableError(f"corpus.sources.{key}: cannot load {source.label()} ({first_line}); "
                                  f"{OFFLINE_ALTERNATIVES}") from None
    columns = dataset.column_names  # None for a stream whose features are unknown until read
    if columns is not None and source.text_column not in columns:
        raise CorpusConfigError(f"corpus.sources.{key}.text_column={source.text_column!r} is not a column of "
                                f"{source.label()}; columns: {', '.join(columns)}")
    return dataset


def _local_files(key: str, source: HubSource) -> list[Path]:
    return expand_globs(list(source.data_files), f"corpus.sources.{key}.data_files") if source.data_files else []


def _require_hub(source: HubSource, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after minutes of retries, when the hub's host does not answer."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return  # datasets looks in its local cache and fails at once when the dataset is not there
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s).close()
    except OSError as error:
        raise HubUnavailableError(f"corpus=hub: {endpoint.hostname} unreachable ({error}) while loading "
                                  f"{source.label()}; set HF_HUB_OFFLINE=1 to use a cached copy, or use "
                                  f"{OFFLINE_ALTERNATIVES}") from None


def _source(key: str, spec: Mapping) -> HubSource:
    allowed = [field.name for field in fields(HubSource)]
    unknown = sorted(set(spec) - set(allowed))
    if unknown or "path" not in spec:
        raise CorpusConfigError(f"corpus.sources.{key}: {'option ' + unknown[0] if unknown else 'path'} "
                                f"{'unknown' if unknown else 'missing'}; allowed: {', '.join(allowed)}")
    values = {name: value for name, value in spec.items() if value is not None}
    data_files = values.get("data_files")
    if data_files is not None:
        values["data_files"] = (data_files,) if isinstance(data_files, str) else tuple(data_files)
    source = HubSource(**values)
    if source.layout not in LAYOUTS:
        raise CorpusConfigError(f"corpus.sources.{key}.layout={source.layout!r} is not one of {', '.join(LAYOUTS)}")
    if source.rows_per_document < 1:
        raise CorpusConfigError(f"corpus.sources.{key}.rows_per_document={source.rows_per_document} must be >= 1")
    return source


def parse_sources(cfg: Mapping) -> dict[str, HubSource]:
    """The validated `corpus.sources` of a hub config node, without loading anything."""
    check_keys(cfg, ["sources", "streaming", "cache_dir"])
    return {str(key): _source(str(key), spec) for key, spec in (cfg.get("sources") or {}).items()}


def from_config(cfg: Mapping) -> HubCorpus:
    return HubCorpus(parse_sources(cfg), streaming=bool(cfg.get("streaming", False)), cache_dir=cfg.get("cache_dir"),
                     name=cfg.get("name") or "hub")
