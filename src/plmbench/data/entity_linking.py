"""Link words of a text to WordNet synsets: ERNIE's entity-linking step (TAGME over Wikidata there), over WordNet.

1. Words: runs of letters and digits, hyphens and apostrophes inside a word kept ("self-contained", "o'clock"), a
   possessive "'s" dropped.
2. Mentions: left to right, the longest run of up to 4 words, separated only by spaces, that is a WordNet lemma
   (words joined by '_', as WordNet writes them) or an inflection of one. Inflections are WordNet's own: the
   exception lists (<pos>.exc) and the suffix rules of `wordnet.lemma_forms`, which decides every candidate base
   form proposed here, inflecting the head word (the last of a noun or adjective, the first of a verb).
3. Sense: `first` takes the most frequent sense (SemCor counts across parts of speech, then WordNet's sense order);
   `lesk` takes the sense whose gloss and examples share the most words with the text (simplified Lesk,
   Kilgarriff and Rosenzweig 2000), ties going to the more frequent sense.
4. Confidence, `score` in (0, 1]: the chosen sense's share of its method's evidence. For `first`, its share of the
   candidates' SemCor counts, add-one smoothed (a monosemous word scores 1; "dog" 0.8). For `lesk`, a softmax over
   the overlaps (each shared word multiplies a sense's weight by e), so no overlap among k senses scores 1/k.
   Mentions below `min_score` are dropped. Stopwords, single letters and numbers are never mentions on their own
   ("it", "a" and "in" are WordNet nouns), and a multi-word mention needs at least one word that is not a stopword.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from plmbench.data.knowledge_graph import POS_ORDER, KnowledgeGraph, Sense, load_graph
from plmbench.data.wordnet import lemma_forms, load_exceptions

MAX_WORDS = 4
METHODS = ("first", "lesk")
WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*(?:'(?!s\b)[^\W_]+)*")
NO_ENTITY = -1
LINKER_VERSION = 2  # bump when links change, so linked caches are rebuilt (2: ties broken by lemma, not hash order)

# Function words (a closed class): they carry no entity, and Lesk ignores them as evidence.
_STOPWORD_LIST = """
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves also may might must shall upon yet us one ones
"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())

# Morphy's detachment rules, as (ending, replacement): they propose base forms; lemma_forms accepts or rejects them.
SUFFIXES = {
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
          ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""),
          ("d", ""), ("ied", "y")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e"), ("ier", "y"), ("iest", "y")),
    "r": (("er", ""), ("est", "")),
}  # fmt: skip


@dataclass(frozen=True)
class Mention:
    start: int  # character offsets of the surface text in the linked text
    end: int
    surface: str
    synset: str  # entity id, "n.02084071"
    entity: int  # index into KnowledgeGraph.entities
    score: float  # confidence in (0, 1], see the module docstring


class EntityLinker:
    def __init__(self, graph: KnowledgeGraph, exceptions: dict, method: str = "first", min_score: float = 0.0):
        if method not in METHODS:
            raise ValueError(f"entity linking method {method!r} is not one of {', '.join(METHODS)}")
        self.graph, self.method, self.min_score = graph, method, min_score
        self.exceptions = exceptions
        self.bases_of: dict[str, list[tuple[str, str]]] = {}  # inflected form -> (base lemma, pos), from .exc
        for (base, pos), forms in exceptions.items():
            for form in forms:
                self.bases_of.setdefault(form.lower(), []).append((base.lower(), pos))
        self._candidates: dict[str, tuple[Sense, ...]] = {}  # surface phrase -> senses: words repeat in a corpus
        self._signatures: dict[int, frozenset[str]] = {}

    @classmethod
    def from_wordnet(cls, root: Path | str | None = None, **options) -> EntityLinker:
        return cls(load_graph(root), load_exceptions(root), **options)

    # --------------------------------------------------------------------------------------------- mentions

    def link(self, text: str) -> list[Mention]:
        """The linked mentions of `text`, left to right, none overlapping."""
        words = list(WORD.finditer(text))
        context = None  # Lesk's bag of words, built on first need
        mentions, i = [], 0
        while i < len(words):
            for n in range(min(MAX_WORDS, len(words) - i), 0, -1):
                span = words[i : i + n]
                if n > 1 and any(text[a.end() : b.start()].strip() for a, b in itertools.pairwise(span)):
                    continue  # punctuation between the words: not one phrase
                senses = self.senses(" ".join(w.group().lower() for w in span))
                if senses:
                    break
            else:
                i += 1
                continue
            if self.method == "lesk" and context is None:
                context = content_words(w.group() for w in words)
            own = content_words(w.group() for w in span)
            sense, score = self.choose(senses, (context or frozenset()) - own)
            start, end = span[0].start(), span[-1].end()
            if score >= self.min_score:
                entity = sense.entity
                mentions.append(Mention(start, end, text[start:end], self.graph.entities[entity], entity, score))
            i += n
        return mentions

    def senses(self, phrase: str) -> tuple[Sense, ...]:
        """Candidate senses of a lowercased surface phrase (words separated by single spaces), most frequent first."""
        if phrase not in self._candidates:
            if len(self._candidates) > 1_000_000:
                self._candidates.clear()  # a bound on memory over a long corpus
            self._candidates[phrase] = self._lookup(phrase)
        return self._candidates[phrase]

    def _lookup(self, phrase: str) -> tuple[Sense, ...]:
        words = phrase.split(" ")
        if all(w in STOPWORDS for w in words) or (len(words) == 1 and (len(phrase) < 2 or not _has_letter(phrase))):
            return ()
        found: dict[int, Sense] = {}
        # The phrase as a lemma first, then its base forms in sorted order: senses that tie on count, sense number
        # and POS keep this order. Set order would depend on Python's per-process string hashing ('woods' linked
        # to the forest in one process and to wood, the material, in another).
        for lemma, pos in sorted(self.base_forms(words), key=lambda form: (form[0] != phrase, form)):
            for sense in self.graph.senses.get(lemma.replace(" ", "_"), ()):
                if sense.pos == pos:
                    found.setdefault(sense.entity, sense)
        return tuple(sorted(found.values(), key=lambda s: (-s.count, s.number, POS_ORDER.index(s.pos))))

    def base_forms(self, words: list[str]) -> set[tuple[str, str]]:
        """(lemma, pos) pairs of which `words` is the lemma itself or an inflection, by WordNet's rules."""
        phrase = " ".join(words)
        proposed = {(phrase, pos) for pos in POS_ORDER} | set(self.bases_of.get(phrase, ()))
        for pos in POS_ORDER:
            head = 0 if pos == "v" else len(words) - 1  # as lemma_forms inflects
            for base in self._head_bases(words[head], pos):
                proposed.add((" ".join(words[:head] + [base] + words[head + 1 :]), pos))
        return {
            (lemma, pos)
            for lemma, pos in proposed
            if lemma.replace(" ", "_") in self.graph.senses
            and (lemma == phrase or phrase in lemma_forms(lemma, pos, self.exceptions))
        }

    def _head_bases(self, word: str, pos: str) -> set[str]:
        bases = {base for base, base_pos in self.bases_of.get(word, ()) if base_pos == pos}
        for ending, replacement in SUFFIXES[pos]:
            if word.endswith(ending) and len(word) > len(ending) + 1:
                stem = word[: -len(ending)]
                bases.add(stem + replacement)
                if len(stem) > 2 and stem[-1] == stem[-2] and not replacement:
                    bases.add(stem[:-1])  # stopped -> stop, bigger -> big
        return bases

    # --------------------------------------------------------------------------------------------- senses

    def choose(self, senses: Sequence[Sense], context: frozenset[str]) -> tuple[Sense, float]:
        """(sense, confidence) by the linker's method, from candidates ordered most frequent first."""
        if self.method == "first":
            weights = [sense.count + 1 for sense in senses]
            return senses[0], weights[0] / sum(weights)
        overlaps = [len(self.signature(sense.entity) & context) for sense in senses]
        best = max(range(len(senses)), key=lambda k: (overlaps[k], -k))  # ties: the more frequent sense
        return senses[best], 1.0 / sum(math.exp(o - overlaps[best]) for o in overlaps)

    def signature(self, entity: int) -> frozenset[str]:
        """Lesk's evidence for a synset: the content words of its gloss and examples."""
        if entity not in self._signatures:
            synset = self.graph.synsets[entity]
            self._signatures[entity] = content_words(WORD.findall(" ".join((synset.gloss, *synset.examples))))
        return self._signatures[entity]


def content_words(words: Iterable[str]) -> frozenset[str]:
    """Lowercased words that are not stopwords, a plural 's' dropped, so 'buns' meets 'bun'."""
    out = set()
    for word in words:
        word = word.lower()
        if word not in STOPWORDS and len(word) > 1 and _has_letter(word):
            out.add(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word)
    return frozenset(out)


def _has_letter(text: str) -> bool:
    return any(char.isalpha() for char in text)


# --------------------------------------------------------------------------------------------------- alignment


def align_to_subwords(mentions: Iterable[Mention], offsets: Sequence[tuple[int, int]]) -> list[int]:
    """One entity index per sub-word token, ERNIE's alignment: a mention's entity sits on the FIRST token that
    overlaps it; every other token gets NO_ENTITY (-1). `offsets` are a HF `tokenizers` Encoding's (start, end)
    character offsets into the same text; special tokens, which cover no character ((0, 0)), never take one."""
    entities = [NO_ENTITY] * len(offsets)
    for mention in mentions:
        for position, (start, end) in enumerate(offsets):
            if start < end and start < mention.end and end > mention.start:
                if entities[position] == NO_ENTITY:
                    entities[position] = mention.entity
                break
    return entities


# --------------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class LinkingReport:
    sentences: int
    words: int
    linked_words: int  # words inside a linked mention
    mentions: int
    seconds: float

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds else float("inf")

    @property
    def coverage(self) -> float:
        """The share of words that lie inside a linked mention."""
        return self.linked_words / self.words if self.words else 0.0

    def __str__(self) -> str:
        return (f"{self.sentences} sentences, {self.words} words: {self.mentions} mentions cover "
                f"{self.coverage:.1%} of words; {self.sentences_per_second:,.0f} sentences/s")


def linking_report(texts: Iterable[str], linker: EntityLinker | None = None) -> LinkingReport:
    """Throughput and coverage of `linker` (default: `first` sense over the default WordNet) on `texts`."""
    linker = linker or EntityLinker.from_wordnet()
    sentences = words = linked = count = 0
    seconds = 0.0  # linking only, not the counting below
    for text in texts:
        began = time.perf_counter()
        mentions = linker.link(text)
        seconds += time.perf_counter() - began
        spans = [(w.start(), w.end()) for w in WORD.finditer(text)]
        sentences, words, count = sentences + 1, words + len(spans), count + len(mentions)
        linked += sum(any(m.start <= start and end <= m.end for m in mentions) for start, end in spans)
    return LinkingReport(sentences, words, linked, count, seconds)
