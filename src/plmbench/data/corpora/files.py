"""`corpus=files corpus.paths='glob'`: pre-train on local text files.

Three layouts are understood, detected per file from its first non-empty line (or forced with `format`):
  plain          one document per file (`doc_separator: file`; blank lines separate paragraphs, wrapped lines
                 are joined), or documents separated by blank lines (`doc_separator: blank_line`, BERT's
                 create_pretraining_data input: one sentence or paragraph per line)
  wikitext       WikiText's ` = Title = ` line starts an article; ` = = Section = = ` headings are dropped
  wikiextractor  WikiExtractor's `<doc id=... title=...>` ... `</doc>`; the repeated title line is dropped
Files are read as UTF-8; undecodable bytes become U+FFFD and are counted and logged, never fatal.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from itertools import chain
from pathlib import Path

from plmbench.data.corpora import CorpusConfigError, check_keys, content_fingerprint
from plmbench.data.corpora.sentences import paragraphs_to_sentences

log = logging.getLogger(__name__)

_WIKITEXT_TITLE = re.compile(r" ?= [^=](?:.*[^=])? = ?")  # ' = Title = '; sections have more '=' signs
_WIKIEXTRACTOR_TITLE = re.compile(r'<doc [^>]*title="([^"]*)"')
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # surrogateescape maps each undecodable byte to one of these


def plain_file_documents(lines: Iterable[str]) -> Iterator[list[str]]:
    """The whole file is one document; blank lines end paragraphs, wrapped lines are joined."""
    paragraphs, current = [], []
    for line in chain(lines, [""]):
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    yield paragraphs


def blank_line_documents(lines: Iterable[str]) -> Iterator[list[str]]:
    """Blank lines end documents; every non-blank line is a paragraph (often one sentence)."""
    paragraphs = []
    for line in chain(lines, [""]):
        if line.strip():
            paragraphs.append(line.strip())
        elif paragraphs:
            yield paragraphs
            paragraphs = []


def wikitext_documents(lines: Iterable[str]) -> Iterator[list[str]]:
    """WikiText articles: a ` = Title = ` line starts one; section headings and blank lines are dropped."""
    paragraphs: list[str] = []
    for line in lines:
        stripped = line.strip()
        if _WIKITEXT_TITLE.fullmatch(line.rstrip("\r\n")):
            if paragraphs:
                yield paragraphs
            paragraphs = []
        elif stripped and not (stripped.startswith("= ") and stripped.endswith(" =")):
            paragraphs.append(stripped)
    if paragraphs:
        yield paragraphs


def wikiextractor_documents(lines: Iterable[str]) -> Iterator[list[str]]:
    """WikiExtractor pages: text between `<doc ...>` and `</doc>`, without the title line it repeats."""
    paragraphs: list[str] | None = None
    title = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("<doc "):
            match = _WIKIEXTRACTOR_TITLE.match(stripped)
            paragraphs, title = [], match[1] if match else None
        elif stripped == "</doc>" and paragraphs is not None:
            yield paragraphs
            paragraphs = None
        elif stripped and paragraphs is not None:
            if not paragraphs and stripped == title:
                continue
            paragraphs.append(stripped)
    if paragraphs:  # a file cut off before its last </doc>
        yield paragraphs


# layout name -> parser from a file's lines to documents given as paragraphs
LAYOUTS: dict[str, Callable[[Iterable[str]], Iterator[list[str]]]] = {
    "file": plain_file_documents,
    "blank_line": blank_line_documents,
    "wikitext": wikitext_documents,
    "wikiextractor": wikiextractor_documents,
}
FORMATS = ("auto", "plain", "wikitext", "wikiextractor")
DOC_SEPARATORS = ("file", "blank_line")


def detect_format(first_line: str) -> str:
    """'wikiextractor', 'wikitext' or 'plain', from a file's first non-empty line."""
    if first_line.lstrip().startswith("<doc "):
        return "wikiextractor"
    return "wikitext" if _WIKITEXT_TITLE.fullmatch(first_line.rstrip("\r\n")) else "plain"


class FilesCorpus:
    """Documents from local text files matched by one or more globs (sorted, so the order is reproducible)."""

    def __init__(self, patterns: str | Sequence[str], format: str = "auto", doc_separator: str = "file",
                 name: str = "files"):
        if format not in FORMATS:
            raise CorpusConfigError(f"corpus.format={format!r} is not one of {', '.join(FORMATS)}")
        if doc_separator not in DOC_SEPARATORS:
            raise CorpusConfigError(f"corpus.doc_separator={doc_separator!r} is not one of "
                                    f"{', '.join(DOC_SEPARATORS)}")
        self.name, self.format, self.doc_separator = name, format, doc_separator
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.files = expand_globs(self.patterns)
        self.undecodable_bytes = 0  # of the last full pass over documents()

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the files' bytes in order (not their names) and of the layout settings."""
        return content_fingerprint([f"format={self.format}", f"doc_separator={self.doc_separator}",
                                    *(file_sha256(path) for path in self.files)])

    def documents(self) -> Iterator[list[str]]:
        self.undecodable_bytes, produced = 0, 0
        for path in self.files:
            lines = self._lines(path)
            first = next((line for line in lines if line.strip()), None)
            if first is None:
                continue
            layout = detect_format(first) if self.format == "auto" else self.format
            parse = LAYOUTS[self.doc_separator if layout == "plain" else layout]
            for paragraphs in parse(chain([first], lines)):
                sentences = paragraphs_to_sentences(paragraphs)
                if sentences:
                    produced += 1
                    yield sentences
        if produced == 0:
            raise CorpusConfigError(f"corpus.paths={self.patterns}: no text in {len(self.files)} file(s); "
                                    f"nothing to pre-train on")

    def _lines(self, path: Path) -> Iterator[str]:
        """The file's lines as text, each undecodable byte replaced by U+FFFD, counted and logged per file."""
        bad, first_bad_line = 0, 0
        with path.open("rb") as stream:
            for number, raw in enumerate(stream, start=1):
                line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
                if number == 1:
                    line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not text
                found = len(_UNDECODABLE.findall(line))
                if found:
                    bad, first_bad_line = bad + found, first_bad_line or number
                    line = _UNDECODABLE.sub("\ufffd", line)
                yield line
        if bad:
            self.undecodable_bytes += bad
            log.warning("%s: %d byte(s) are not UTF-8 (first on line %d); replaced with U+FFFD",
                        path, bad, first_bad_line)


def expand_globs(patterns: list[str], key: str = "corpus.paths") -> list[Path]:
    """The files matched by each glob, sorted per glob; `key` names the option in error messages."""
    if not patterns:
        raise CorpusConfigError(f"{key} is required: a glob or list of globs, e.g. {key}='text/*.txt'")
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(match) for match in glob.glob(str(Path(pattern).expanduser()), recursive=True))
        matched = [path for path in matched if path.is_file()]
        if not matched:
            raise CorpusConfigError(f"{key}: {pattern!r} matches no file (relative to {Path.cwd()})")
        files += matched
    return list(dict.fromkeys(files))  # a file matched by two patterns is read once


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def from_config(cfg: Mapping) -> FilesCorpus:
    check_keys(cfg, ["paths", "format", "doc_separator"])
    patterns = cfg.get("paths")
    patterns = patterns if patterns is None or isinstance(patterns, str) else list(patterns)
    return FilesCorpus(patterns or [], format=cfg.get("format") or "auto",
                       doc_separator=cfg.get("doc_separator") or "file", name=cfg.get("name") or "files")
