"""Jane Austen's six novels, from Debian's r-cran-janeaustenr, read without R.

The package stores each novel as a character vector of Project Gutenberg lines in R's lazy-load database:
`data/Rdata.rdx` is a gzip-compressed R serialization of the index (object name -> (offset, length) in the .rdb),
and each .rdb record is a 4-byte big-endian uncompressed length followed by a zlib stream holding one R
serialization. `rdata` parses R serializations, so only the record framing is written here.

One document is one chapter (269 in all), so NSP/SOP can draw "random next" sentences from other documents.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import rdata

from plmbench.data.corpora.sentences import paragraphs_to_sentences
from plmbench.data.debian import ensure_package

PACKAGE = "r-cran-janeaustenr"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"

# janeaustenr's object names in publication order (the order of its austen_books()), with the titles.
NOVELS = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

_CHAPTER = re.compile(r"\s*chapter\s+(\d+|[ivxlc]+)\.?\s*$", re.IGNORECASE)
_VOLUME = re.compile(r"\s*volume\s+(\d+|[ivxlc]+)\.?\s*$", re.IGNORECASE)
# Where the novel's text ends: Gutenberg's end marks, and the Signet editor's note after Northanger Abbey.
_END = re.compile(r"\s*(the end|finis|a note on the text)\s*$", re.IGNORECASE)
_EMPHASIS = re.compile(r"_([^_]+)_")  # Gutenberg marks italics as _word_


class LazyLoadFormatError(ValueError):
    """An R lazy-load database (.rdx/.rdb) that does not have the expected layout."""


def read_lazyload(directory: Path, stem: str = "Rdata") -> dict[str, object]:
    """Every object of the lazy-load database `<directory>/<stem>.rdx/.rdb`, converted to Python by `rdata`."""
    index_path, blob_path = directory / f"{stem}.rdx", directory / f"{stem}.rdb"
    try:
        index = _unserialize(gzip.decompress(index_path.read_bytes()))
    except (OSError, EOFError) as error:  # R writes the index with saveRDS(), i.e. gzip
        raise LazyLoadFormatError(f"{index_path}: not a gzip-compressed R serialization ({error})") from None
    if not isinstance(index, dict) or "variables" not in index:
        raise LazyLoadFormatError(f"{index_path}: no 'variables' entry; not an R lazy-load index")
    if list(index.get("compressed", [True])) != [True]:  # TRUE = zlib; 2 (bzip2) and 3 (xz) carry a type byte
        raise LazyLoadFormatError(f"{index_path}: compression {index['compressed']!r} unsupported; only zlib")
    blob = blob_path.read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        record = blob[int(offset) : int(offset) + int(length)]
        expected = int.from_bytes(record[:4], "big")
        data = zlib.decompress(record[4:])
        if len(data) != expected:
            raise LazyLoadFormatError(f"{blob_path}: object {name!r} inflates to {len(data)} bytes, not {expected}")
        objects[str(name)] = _unserialize(data)
    return objects


def _unserialize(data: bytes) -> object:
    with warnings.catch_warnings():  # rdata warns that a bare serialization (no RDX2 header) "is assumed RDS"
        warnings.simplefilter("ignore", UserWarning)
        return rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"))


def load_novels(root: Path | None = None) -> dict[str, list[str]]:
    """Novel object name -> its lines (NA lines as ''), in publication order; root: the unpacked package."""
    root = Path(root) if root is not None else ensure_package(PACKAGE)
    objects = read_lazyload(root / DATA_DIR)
    missing = [name for name in NOVELS if name not in objects]
    if missing:
        raise LazyLoadFormatError(f"{root / DATA_DIR}: novels {missing} missing; found {sorted(objects)}")
    return {name: [line if isinstance(line, str) else "" for line in objects[name]] for name in NOVELS}


def chapters(lines: Sequence[str]) -> list[list[str]]:
    """The novel's chapters as lists of paragraphs: title page, headings and end marks dropped."""
    found: list[list[str]] = []
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph and found:  # paragraphs before the first chapter are the title page
            text = " ".join(" ".join(paragraph).split())
            found[-1].append(_EMPHASIS.sub(r"\1", text))
        paragraph.clear()

    for line in lines:
        if _END.match(line):
            break
        if _CHAPTER.match(line):
            end_paragraph()
            found.append([])
        elif not line.strip() or _VOLUME.match(line):
            end_paragraph()
        else:
            paragraph.append(line.strip())
    end_paragraph()
    return [chapter for chapter in found if chapter]


def austen_documents(root: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """(id, sentences) per chapter, e.g. ('austen/prideprejudice/001', ['It is a truth ...', ...])."""
    for name, lines in load_novels(root).items():
        for number, paragraphs in enumerate(chapters(lines), start=1):
            yield f"austen/{name}/{number:03d}", paragraphs_to_sentences(paragraphs)
