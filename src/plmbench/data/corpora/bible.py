"""The King James Bible, from Debian's bible-kjv (the `bible` reader) and bible-kjv-text (its data file).

`bible.data` is in the program's own compressed format, so the package's own reader decodes it: with
pretty-printing toggled off (`-f`) it prints one verse per line as `<Book><chapter>:<verse> <text>`, and
"Gen1:1-Rev22:21" is the whole text. The reader looks for bible.data in its working directory first.

One document is one chapter (1,189 in all); its sentences are the verses as split by the sentence splitter.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

from plmbench.data.corpora.sentences import text_to_sentences
from plmbench.data.debian import MissingSourceError, ensure_package

READER_PACKAGE, TEXT_PACKAGE = "bible-kjv", "bible-kjv-text"
READER, DATA_DIR = "usr/bin/bible", "usr/lib"
WHOLE_TEXT = "Gen1:1-Rev22:21"
_VERSE = re.compile(r"(?P<book>\d?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.+)")


class BibleFormatError(ValueError):
    """Output of the `bible` reader that is not one `<Book><chapter>:<verse> <text>` per line."""


def kjv_verses(reader_root: Path | None = None, text_root: Path | None = None) -> Iterator[tuple[str, int, int, str]]:
    """(book abbreviation, chapter, verse, text) for all 31,102 verses, in canonical order."""
    reader = (Path(reader_root) if reader_root else ensure_package(READER_PACKAGE)) / READER
    data_dir = (Path(text_root) if text_root else ensure_package(TEXT_PACKAGE)) / DATA_DIR
    try:
        done = subprocess.run([str(reader), "-f", WHOLE_TEXT], cwd=data_dir, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False, timeout=300)
    except OSError as error:  # e.g. a non-x86-64 machine or a missing libreadline
        raise MissingSourceError(f"{reader}: cannot run the KJV reader ({error}); use corpus.sources without "
                                 f"'kjv', or corpus=files / corpus=hub") from None
    if done.returncode != 0:
        raise MissingSourceError(f"{reader} {WHOLE_TEXT} exited {done.returncode} in {data_dir}: "
                                 f"{done.stderr.strip() or done.stdout.strip()[:200]}")
    for number, line in enumerate(done.stdout.splitlines(), start=1):
        match = _VERSE.fullmatch(line)
        if match is None:
            raise BibleFormatError(f"{reader} output line {number}: {line[:80]!r} is not '<Book><ch>:<v> <text>'")
        yield match["book"], int(match["chapter"]), int(match["verse"]), match["text"]


def bible_documents(reader_root: Path | None = None, text_root: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """(id, sentences) per chapter, e.g. ('kjv/Ge/001', ['In the beginning God created ...', ...])."""
    verses = kjv_verses(reader_root, text_root)
    for (book, chapter), chapter_verses in groupby(verses, key=lambda verse: (verse[0], verse[1])):
        yield f"kjv/{book}/{chapter:03d}", [sentence for *_, text in chapter_verses for sentence in text_to_sentences(text)]
