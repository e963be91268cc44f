"""The offline `embedded` corpus: Jane Austen, the King James Bible and WordNet's glosses, built from Debian packages.

`make data` (or `python -m plmbench.data.corpora.embedded`) writes `data_root()/embedded/`:
  corpus.jsonl     one document per line: {"id", "source", "sentences": [...]}
  MANIFEST.json    sources (Debian package, version, .deb sha256, licence), counts per source, fingerprint
  MANIFEST.md      the same for people, with the licence notices
  licenses/        each package's Debian copyright file (WordNet's licence asks for its notice on every copy)
It needs no Hugging Face hub, so every experiment can run on a machine that only reaches a Debian mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from pathlib import Path

from tqdm.auto import tqdm

from plmbench import paths
from plmbench.data.corpora import CorpusConfigError, check_keys, content_fingerprint
from plmbench.data.corpora.austen import austen_documents
from plmbench.data.corpora.bible import bible_documents
from plmbench.data.corpora.sentences import SPLITTER_VERSION
from plmbench.data.debian import ensure_package, package_record

CORPUS_FILE, MANIFEST_JSON, MANIFEST_MD = "corpus.jsonl", "MANIFEST.json", "MANIFEST.md"
SYNSETS_PER_DOCUMENT = 50  # consecutive synsets of one POS share a lexicographer file, so a document is on-topic
WORDNET_NOTICE = ("> WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use, "
                  "copy, modify and distribute this software and database and its documentation for any purpose "
                  "and without fee or royalty is hereby granted (full terms and disclaimer: "
                  "`licenses/wordnet-base.copyright`).")


def wordnet_documents(root: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """(id, sentences) per run of 50 synsets of one POS: each synset gives 'lemmas: gloss' and its examples."""
    from plmbench.data.wordnet import load_wordnet  # on use: the module belongs to the WordNet proxy tasks

    for pos, synsets in groupby(load_wordnet(root), key=lambda synset: synset.pos):
        for number, chunk in enumerate(batched(synsets, SYNSETS_PER_DOCUMENT), start=1):
            sentences = [text for synset in chunk if synset.gloss
                         for text in (f"{', '.join(synset.lemmas)}: {synset.gloss}", *synset.examples)]
            yield f"wordnet/{pos}/{number:04d}", sentences


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter); itertools.batched needs Python 3.12."""
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk


@dataclass(frozen=True)
class Source:
    description: str
    packages: tuple[str, ...]  # Debian packages the text comes from
    licence: str
    documents: Callable[[], Iterator[tuple[str, list[str]]]]


SOURCES: dict[str, Source] = {
    "austen": Source("Jane Austen's six novels (Project Gutenberg text via the R package janeaustenr), "
                     "one document per chapter", ("r-cran-janeaustenr",),
                     "novels: public domain; janeaustenr: MIT (c) 2016-2017 Julia Silge", austen_documents),
    "kjv": Source("King James Bible (1611, Authorized Version), one document per chapter, verses as sentences",
                  ("bible-kjv", "bible-kjv-text"),
                  "text: public domain (Crown copyright expired outside the UK); reader: GPL-2+", bible_documents),
    "wordnet": Source(f"WordNet 3.0 glosses and example sentences, {SYNSETS_PER_DOCUMENT} synsets of one "
                      "part of speech per document", ("wordnet-base",),
                      "WordNet 3.0 licence: WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.",
                      wordnet_documents),
}


def build_embedded(force: bool = False) -> dict:
    """Build data_root()/embedded (unless a complete build is there and not `force`); return its manifest."""
    out = paths.data_root() / "embedded"
    if not force and (out / MANIFEST_JSON).is_file() and (out / CORPUS_FILE).is_file():
        manifest = json.loads((out / MANIFEST_JSON).read_text(encoding="utf-8"))
        if manifest.get("splitter") == SPLITTER_VERSION:  # else the sentences were cut by another splitter
            return manifest
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_JSON).unlink(missing_ok=True)  # the manifest is written last: its presence means complete
    counts, digest = _write_corpus(out / CORPUS_FILE)
    packages = [package_record(name) for source in SOURCES.values() for name in source.packages]
    _copy_licences(out, packages)
    totals = {key: sum(count[key] for count in counts.values()) for key in ("documents", "sentences", "words")}
    manifest = {
        "name": "embedded",
        "file": CORPUS_FILE,
        "sha256": digest,
        "splitter": SPLITTER_VERSION,
        "fingerprint": content_fingerprint([digest]),
        "sources": {name: {"description": source.description, "licence": source.licence,
                           "packages": [record for record in packages if record["package"] in source.packages],
                           **counts[name]} for name, source in SOURCES.items()},
        "total": totals,
    }
    _write_atomic(out / MANIFEST_MD, render_manifest(manifest))
    _write_atomic(out / MANIFEST_JSON, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_corpus(path: Path) -> tuple[dict[str, dict[str, int]], str]:
    """Stream every source's documents into `path` (atomically); per-source counts and the file's sha256."""
    counts = {name: {"documents": 0, "sentences": 0, "words": 0} for name in SOURCES}
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as stream:
        try:
            for name, source in SOURCES.items():
                # A bar on a terminal (tqdm's disable=None), silent in logs: the build takes a minute or two.
                for doc_id, sentences in tqdm(source.documents(), desc=f"corpus: {name}", unit=" docs", disable=None):
                    if not sentences:
                        continue
                    line = json.dumps({"id": doc_id, "source": name, "sentences": sentences}, ensure_ascii=False)
                    data = (line + "\n").encode("utf-8")
                    stream.write(data)
                    digest.update(data)
                    count = counts[name]
                    count["documents"] += 1
                    count["sentences"] += len(sentences)
                    count["words"] += sum(len(sentence.split()) for sentence in sentences)
        except BaseException:
            os.unlink(stream.name)
            raise
    _publish(stream.name, path)
    return counts, digest.hexdigest()


def _copy_licences(out: Path, packages: list[dict]) -> None:
    (out / "licenses").mkdir(exist_ok=True)
    for record in packages:
        name = record["package"]
        shutil.copyfile(ensure_package(name) / "usr/share/doc" / name / "copyright",
                        out / "licenses" / f"{name}.copyright")


def _write_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as stream:
        stream.write(text)
    _publish(stream.name, path)


def _publish(temporary: str, path: Path) -> None:
    """Move a finished temporary file into place atomically, readable by all like any data file."""
    os.chmod(temporary, 0o644)  # NamedTemporaryFile creates 0600
    os.replace(temporary, path)


def render_manifest(manifest: Mapping) -> str:
    """MANIFEST.md: what the embedded corpus holds, where it came from, and under which licences."""
    lines = ["# Embedded pre-training corpus", "",
             ("Built offline from Debian packages by `make data` (`plmbench.data.corpora.embedded`). "
              f"File: `{manifest['file']}` (sha256 `{manifest['sha256']}`), one JSON document per line."), "",
             f"Fingerprint: `{manifest['fingerprint']}` (content hash + sentence splitter `{manifest['splitter']}`).",
             "", "| source | contents | Debian packages | licence | documents | sentences | words |",
             "|---|---|---|---|---:|---:|---:|"]
    for name, source in manifest["sources"].items():
        packages = ", ".join(f"{record['package']} {record['version']}" for record in source["packages"])
        lines.append(f"| {name} | {source['description']} | {packages} | {source['licence']} | "
                     f"{source['documents']:,} | {source['sentences']:,} | {source['words']:,} |")
    total = manifest["total"]
    lines += [f"| **total** | | | | {total['documents']:,} | {total['sentences']:,} | {total['words']:,} |", "",
              ("Words are whitespace-separated tokens. Each package's full Debian copyright file is in "
               "`licenses/`; WordNet's licence requires its notice on every copy, including derived ones such as "
               "this corpus:"), "", WORDNET_NOTICE, ""]
    return "\n".join(lines)


class EmbeddedCorpus:
    """Documents of data_root()/embedded/corpus.jsonl (built on first use), optionally from some sources only."""

    def __init__(self, sources: Sequence[str] | None = None, name: str = "embedded"):
        self.sources = tuple(sources) if sources is not None else tuple(SOURCES)
        unknown = [source for source in self.sources if source not in SOURCES]
        if unknown or not self.sources:
            raise CorpusConfigError(f"corpus.sources={list(self.sources)} must be a non-empty subset of "
                                    f"{', '.join(SOURCES)}")
        self.name = name
        manifest = build_embedded()
        self.path = paths.data_root() / "embedded" / manifest["file"]
        self.fingerprint = content_fingerprint([manifest["sha256"], "sources=" + ",".join(sorted(self.sources))])

    def records(self) -> Iterator[dict]:
        """{'id', 'source', 'sentences'} per document of the selected sources, in file order."""
        with self.path.open(encoding="utf-8") as lines:
            for record in map(json.loads, lines):
                if record["source"] in self.sources:
                    yield record

    def documents(self) -> Iterator[list[str]]:
        return (record["sentences"] for record in self.records())


def from_config(cfg: Mapping) -> EmbeddedCorpus:
    check_keys(cfg, ["sources"])
    sources = cfg.get("sources")
    return EmbeddedCorpus(list(sources) if sources is not None else None, name=cfg.get("name") or "embedded")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the offline embedded corpus and print its manifest.")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    print(json.dumps(build_embedded(force=parser.parse_args().force), indent=2))
