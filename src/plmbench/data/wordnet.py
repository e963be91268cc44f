"""Read Princeton WordNet 3.0 from its dict files: synsets, polysemy counts, and where a lemma occurs in a sentence.

WordNet is the human-made sense inventory behind the offline proxy tasks (`plmbench.data.tasks.proxy`). Its
`data.<pos>` files hold one synset per line (format: wndb(5WN)):

    offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt p_cnt (pointer)*p_cnt [frames] | gloss

and the gloss is `definition; "example one"; "example two"`. About a hundred glosses break that pattern (a colon
instead of a semicolon, a missing quote); the parser keeps what it can read cleanly and never lets a quote
character into an example.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_SATELLITE = "s"  # adjective satellites are adjectives for every purpose here
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic marker on adjective lemmas, e.g. "galore(ip)"
_EXAMPLE_START = re.compile(r"[;:]\s*(?=\")")  # where the definition ends and quoted examples begin


class WordNetFormatError(ValueError):
    """A WordNet dict file that does not follow the wndb(5WN) format."""


@dataclass(frozen=True)
class Pointer:
    """One wndb(5WN) pointer: a relation from this synset (or one of its words) to another synset (or word)."""

    symbol: str  # '@' hypernym, '~' hyponym, '+' derivationally related form, ... (wninput(5WN))
    offset: int  # the target synset's offset in data.<pos>
    pos: str  # the target's part of speech ('s' -> 'a')
    source: int  # 1-based word number in this synset; 0 for a semantic (synset to synset) pointer
    target: int  # 1-based word number in the target synset; 0 for a semantic pointer


@dataclass(frozen=True)
class Synset:
    offset: int  # byte offset in data.<pos>: unique per pos
    pos: str  # 'n', 'v', 'a', 'r' (satellites 's' -> 'a')
    lemmas: tuple[str, ...]  # underscores -> spaces, in file order
    gloss: str  # definition only, no examples
    examples: tuple[str, ...]  # the quoted example sentences of the gloss, quotes stripped
    pointers: tuple[Pointer, ...] = ()  # in file order; the knowledge graph's edges


def default_root() -> Path:
    """$PLMBENCH_WORDNET_DIR if set (an unpacked dict directory), else the Debian wordnet-base package."""
    if os.environ.get("PLMBENCH_WORDNET_DIR"):
        return Path(os.environ["PLMBENCH_WORDNET_DIR"])
    from plmbench.data.debian import ensure_package  # lazy: only needed when WordNet is not given

    return ensure_package("wordnet-base") / "usr/share/wordnet"


def load_wordnet(root: Path | None = None) -> list[Synset]:
    """All synsets of data.noun, data.verb, data.adj and data.adv under `root`, in that order."""
    return list(_load(Path(root) if root is not None else default_root()))


@lru_cache(maxsize=4)
def _load(root: Path) -> tuple[Synset, ...]:
    synsets = []
    for pos_name in POS_FILES.values():
        path = root / f"data.{pos_name}"
        if not path.is_file():
            raise WordNetFormatError(
                f"{path}: missing; a WordNet 3.0 dict directory holds data.{{noun,verb,adj,adv}}"
            )
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith("  "):  # licence header
                    continue
                try:
                    synsets.append(parse_data_line(line))
                except (ValueError, IndexError) as error:
                    raise WordNetFormatError(
                        f"{path}:{number}: not a wndb(5WN) synset line ({error})"
                    ) from None
    return tuple(synsets)


def parse_data_line(line: str) -> Synset:
    """One synset from one line of a data.<pos> file."""
    fields, _, gloss = line.partition(" | ")
    parts = fields.split()
    pos = parts[2]
    if pos == _SATELLITE:
        pos = "a"
    if pos not in POS_FILES:
        raise ValueError(f"synset type {parts[2]!r} is not one of n, v, a, s, r")
    word_count = int(parts[3], 16)  # w_cnt is two hex digits
    words = parts[4 : 4 + 2 * word_count : 2]
    lemmas = tuple(_ADJ_MARKER.sub("", word).replace("_", " ") for word in words)
    definition, examples = split_gloss(gloss.strip())
    return Synset(offset=int(parts[0]), pos=pos, lemmas=lemmas, gloss=definition, examples=examples,
                  pointers=parse_pointers(parts[4 + 2 * word_count :]))


def parse_pointers(fields: list[str]) -> tuple[Pointer, ...]:
    """`p_cnt (symbol offset pos source/target)*p_cnt ...` -> pointers; what follows them (verb frames) is ignored."""
    count = int(fields[0])  # p_cnt is three decimal digits
    groups = fields[1 : 1 + 4 * count]
    if len(groups) != 4 * count:
        raise ValueError(f"{count} pointers announced, {len(groups) // 4} present")
    pointers = []
    for at in range(0, len(groups), 4):
        symbol, offset, pos, source_target = groups[at : at + 4]
        source, target = divmod(int(source_target, 16), 256)  # 'sstt': two hex digits each
        pointers.append(Pointer(symbol, int(offset), "a" if pos == _SATELLITE else pos, source, target))
    return tuple(pointers)


def load_sense_index(root: Path | None = None) -> dict[tuple[str, str], tuple[int, ...]]:
    """index.<pos>: (lowercased lemma with underscores, pos) -> synset offsets in WordNet's sense order (sense 1 first).

    WordNet numbers senses by their SemCor frequency, so the data files' offset order is not the sense order.
    """
    root = Path(root) if root is not None else default_root()
    senses = {}
    for pos, pos_name in POS_FILES.items():
        path = root / f"index.{pos_name}"
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith("  "):  # licence header
                    continue
                fields = line.split()
                try:  # lemma pos synset_cnt p_cnt [ptr_symbol]*p_cnt sense_cnt tagsense_cnt offset*synset_cnt
                    synset_count = int(fields[2])
                    offsets = tuple(int(offset) for offset in fields[len(fields) - synset_count :])
                    if len(fields) != 6 + int(fields[3]) + synset_count:
                        raise ValueError(f"{len(fields)} fields")
                except (ValueError, IndexError) as error:
                    raise WordNetFormatError(f"{path}:{number}: not a wndb(5WN) index line ({error})") from None
                senses[(fields[0], pos)] = offsets
    return senses


def load_tag_counts(root: Path | None = None) -> dict[tuple[str, str, int], int]:
    """cntlist.rev: (lowercased lemma with underscores, pos, sense number) -> times SemCor tagged that sense.

    A sense missing here was never tagged (count 0). Satellite adjectives (ss_type 5) count as adjectives.
    """
    root = Path(root) if root is not None else default_root()
    counts: dict[tuple[str, str, int], int] = {}
    path = root / "cntlist.rev"
    if not path.is_file():
        return counts  # the counts only order senses across parts of speech; sense numbers still order within one
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:  # sense_key sense_number tag_cnt, with sense_key = lemma%ss_type:lex_filenum:lex_id:head_word:head_id
            key, sense, count = line.split()
            lemma, _, lex_sense = key.partition("%")
            pos = "nvaar"[int(lex_sense[0]) - 1]
        except (ValueError, IndexError) as error:
            raise WordNetFormatError(f"{path}:{number}: not a cntlist.rev line ({error})") from None
        counts[(lemma.lower(), pos, int(sense))] = counts.get((lemma.lower(), pos, int(sense)), 0) + int(count)
    return counts


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """(definition, examples): the definition ends at the first `; "` (or `: "`); each example loses its quotes."""
    boundary = _EXAMPLE_START.search(gloss)
    if boundary is None:
        return gloss.strip().rstrip(";").strip(), ()
    definition = gloss[: boundary.start()].strip()
    examples = []
    for chunk in _EXAMPLE_START.split(gloss[boundary.start() :]):
        pieces = chunk.split('"')
        # `"text" - Author`: the text only; a missing or stray quote (typos in WordNet): every piece.
        for piece in [pieces[1]] if len(pieces) == 3 else pieces:
            piece = piece.strip(" ;")
            if any(char.isalpha() for char in piece):
                examples.append(piece)
    return definition, tuple(examples)


@dataclass(frozen=True)
class Usage:
    """One example sentence of a synset that contains one of its lemmas (or an inflection of it) at `span`."""

    lemma: str  # lowercased
    synset: Synset
    example: str
    span: tuple[int, int]  # character offsets in `example` (and in `sentence`)

    @property
    def word(self) -> tuple[str, str]:
        return self.lemma, self.synset.pos

    @property
    def sentence(self) -> str:
        """The example as a sentence: capitalised, ending in a full stop (offsets unchanged)."""
        text = self.example[0].upper() + self.example[1:]
        return text if text[-1] in ".!?" else text + "."


def usages(synsets: Iterable[Synset], exceptions: Mapping | None = None) -> list[Usage]:
    """Every (lemma, example) of a synset where the example contains the lemma: WordNet's sense-tagged sentences.

    An example often shows only one of its synset's lemmas ('the dog barked all night' has no 'domestic dog'), so
    the lemma a sentence illustrates is the one found in it.
    """
    found = []
    for synset in synsets:
        for example in synset.examples:
            for lemma in dict.fromkeys(lemma.lower() for lemma in synset.lemmas):
                span = find_lemma(example, lemma, synset.pos, exceptions)
                if span:
                    found.append(Usage(lemma, synset, example, span))
    return found


def sense_counts(synsets: list[Synset] | tuple[Synset, ...]) -> dict[tuple[str, str], int]:
    """Polysemy: how many synsets hold each (lowercased lemma, pos); WordNet's index files give the same counts."""
    counts: Counter[tuple[str, str]] = Counter()
    for synset in synsets:
        for lemma in {lemma.lower() for lemma in synset.lemmas}:  # 'Dog' and 'dog' in one synset count once
            counts[(lemma, synset.pos)] += 1
    return dict(counts)


def load_exceptions(root: Path | None = None) -> dict[tuple[str, str], tuple[str, ...]]:
    """Irregular inflections from <pos>.exc: (base lemma, pos) -> inflected forms, e.g. ('run', 'v') -> ('ran',)."""
    root = Path(root) if root is not None else default_root()
    forms: dict[tuple[str, str], list[str]] = {}
    for pos, pos_name in POS_FILES.items():
        path = root / f"{pos_name}.exc"
        if not path.is_file():
            continue  # the .exc files only widen matching; WordNet without them still parses
        for line in path.read_text(encoding="utf-8").splitlines():
            inflected, *bases = line.split()
            for base in bases:
                forms.setdefault((base.replace("_", " "), pos), []).append(inflected.replace("_", " "))
    return {key: tuple(values) for key, values in forms.items()}


def _regular_forms(word: str, pos: str) -> set[str]:
    """The regular English inflections of one word (the inverse of WordNet's morphy suffix rules)."""
    forms = {word}
    if pos in ("n", "v"):
        forms |= {word + "s", word + "es"}
        if word.endswith("y"):
            forms.add(word[:-1] + "ies")
    if pos == "v":
        stems = {word, word + word[-1]}  # consonant doubling: stop -> stopped
        if word.endswith("e"):
            stems.add(word[:-1])
        forms |= {stem + suffix for stem in stems for suffix in ("ed", "ing")} | {word + "d"}
        if word.endswith("y"):
            forms.add(word[:-1] + "ied")
    if pos in ("a", "r"):
        stems = {word, word + word[-1]} | ({word[:-1] + "i"} if word.endswith("y") else set())
        forms |= {stem + suffix for stem in stems for suffix in ("er", "est")} | {word + "r", word + "st"}
    return forms


def lemma_forms(
    lemma: str, pos: str, exceptions: Mapping[tuple[str, str], tuple[str, ...]] | None = None
) -> list[str]:
    """Lowercased surface forms of a lemma, longest first: itself, its regular and its irregular inflections.

    Inflection falls on the head: the last word of a noun or adjective ('attorneys general' is in noun.exc), the
    first of a verb ('took a breath' comes from took -> take in verb.exc).
    """
    exceptions = exceptions or {}
    words = lemma.lower().split(" ")
    head = 0 if pos == "v" else len(words) - 1
    heads = _regular_forms(words[head], pos) | set(exceptions.get((words[head], pos), ()))
    forms = {" ".join(words[:head] + [form] + words[head + 1 :]) for form in heads}
    forms |= {form.lower() for form in exceptions.get((lemma.lower(), pos), ())}
    return sorted(forms, key=lambda form: (-len(form), form))  # longest first: 'dogs' wins over 'dog'


def find_lemma(
    sentence: str, lemma: str, pos: str, exceptions: Mapping[tuple[str, str], tuple[str, ...]] | None = None
) -> tuple[int, int] | None:
    """(start, end) of the first whole-word occurrence of `lemma` or an inflection of it in `sentence`, else None.

    `exceptions` is `load_exceptions()`: without it only regular inflections match.
    """
    lowered = sentence.lower()
    if len(lowered) != len(sentence):  # lower() changed the length: offsets would not map back
        return None
    best = None
    for form in lemma_forms(lemma, pos, exceptions):
        start = lowered.find(form)
        while start != -1:
            end = start + len(form)
            if not (_in_word(lowered, start - 1) or _in_word(lowered, end)):
                if best is None or start < best[0]:
                    best = (start, end)
                break
            start = lowered.find(form, start + 1)
    return best


def _in_word(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] in "-_")
