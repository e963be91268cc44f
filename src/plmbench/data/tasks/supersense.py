"""WordNet supersense probe: which of WordNet's 26 noun lexicographer files (noun.animal, noun.artifact, noun.person,
...) does the [bracketed] noun of a sentence from the embedded corpus belong to?

A probe where knowledge should matter (issue 16): the lemmas of its validation split never occur in its train split,
so fine-tuning cannot memorise a word's class; the model must already know what kind of thing an unseen noun names,
from pre-training or from a knowledge graph (an ERNIE-style model links the noun to its synset).

Labels need no word-sense disambiguation: a target is a word form that can only be a noun with exactly one sense in
WordNet ('animals'; not 'animal', also an adjective, nor 'saying', also say+ing), so its lexicographer file is the
answer whatever the sentence does with it. Sentences come from the novels and the
Bible of the embedded corpus, not from its WordNet glosses, which would spell the answer out. At most
MAX_ROWS_PER_LEMMA rows per lemma, so that a few frequent nouns ('lord', 'heaven') do not fill a split.

Rows take the classification schema (idx, text_a, text_b '', label); `task.proxy` sets the sizes and the seed of
the lemma split. Built rows are cached under cache_root()/wordnet_probe/, keyed by the files and the parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import datasets

from plmbench import paths
from plmbench.data import wordnet
from plmbench.data.corpora.embedded import EmbeddedCorpus
from plmbench.data.tasks import glue
from plmbench.data.tasks.errors import TaskConfigError
from plmbench.data.tasks.proxy import proxy_params

log = logging.getLogger(__name__)

BUILDER_VERSION = 1  # bump when the construction changes: it is part of the cache key
# lexnames(5WN): lex_filenum 3..28 are the noun files; label = lex_filenum - 3.
NOUN_LEXFILES = (
    "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
    "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
)  # fmt: skip
FIRST_NOUN_LEXFILE = 3
EVAL_FRACTION = 0.2  # share of lemmas held out for evaluation, as in the proxy tasks
SOURCES = ("austen", "kjv")  # natural text; the corpus's WordNet documents would state the answer
MAX_ROWS_PER_LEMMA = 4
MAX_WORDS = 50  # longer sentences (KJV's long verses) would be cut at tiny models' max_length
# WordNet holds no closed-class words, so a function word that is also a rare noun ('are' the unit of area,
# 'while', 'might', KJV's 'wherefore') would pass every other test.
FUNCTION_WORDS = frozenset({"a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any",
    "are", "art", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
    "can", "could", "did", "do", "does", "doth", "during", "each", "either", "else", "few", "for", "from", "had",
    "hast", "hath", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into",
    "is", "it", "its", "lest", "may", "me", "might", "mine", "more", "most", "must", "my", "nay", "neither", "no",
    "nor", "not", "now", "o", "of", "off", "oft", "on", "once", "only", "or", "other", "ought", "our", "ours", "out",
    "over", "own", "same", "shall", "shalt", "she", "should", "since", "so", "some", "such", "than", "that", "the",
    "thee", "their", "them", "then", "there", "these", "they", "thine", "this", "those", "thou", "though", "through",
    "thus", "thy", "till", "to", "too", "unto", "up", "upon", "us", "very", "was", "we", "were", "what",
    "whatsoever", "when", "whence", "where", "wherefore", "whereof", "whether", "which", "while", "whilst", "who",
    "whom", "whose", "why", "will", "with", "would", "ye", "yea", "yes", "yet", "you", "your", "yours"})
WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


class ProbeTaskError(TaskConfigError):
    """A WordNet probe that cannot be built as configured."""


def noun_lexfiles(root: Path) -> dict[int, int]:
    """data.noun offset -> lex_filenum (the second field of a wndb(5WN) synset line)."""
    lexfiles = {}
    with (root / "data.noun").open(encoding="utf-8") as lines:
        for line in lines:
            if not line.startswith("  "):  # licence header
                offset, lex_filenum = line.split(" ", 2)[:2]
                lexfiles[int(offset)] = int(lex_filenum)
    return lexfiles


@lru_cache(maxsize=2)  # read-only once built: the tests and a process's builds share it
def target_forms(root: Path) -> dict[str, tuple[str, int]]:
    """{surface form: (lemma, label)} for the forms of one-word, one-sense nouns that can only be that noun.

    A form is kept only if it is no form of any other WordNet word ('animal' is also an adjective, 'saying' also
    say+ing, 'sat' sit's past; 'animals' can only be the noun) and no function word. Proper nouns are left out: the novels' characters share names with WordNet's
    entities without being them (Lydia is an ancient region there, Lucy a fossil hominid). Forms match as written,
    in lower case.
    """
    synsets = wordnet.load_wordnet(root)
    counts, lexfiles, exceptions = wordnet.sense_counts(synsets), noun_lexfiles(root), wordnet.load_exceptions(root)
    words_of: dict[str, set[tuple[str, str]]] = defaultdict(set)  # form -> the WordNet words it inflects
    for lemma, pos in counts:
        if WORD.fullmatch(lemma):
            for form in wordnet.lemma_forms(lemma, pos, exceptions):
                words_of[form].add((lemma, pos))
    forms: dict[str, tuple[str, int]] = {}
    for synset in synsets:
        for spelling in synset.lemmas if synset.pos == "n" else ():
            lemma = spelling.lower()
            if spelling != lemma or not WORD.fullmatch(lemma) or counts[(lemma, "n")] != 1:
                continue
            label = lexfiles[synset.offset] - FIRST_NOUN_LEXFILE
            for form in wordnet.lemma_forms(lemma, "n", exceptions):
                if words_of[form] == {(lemma, "n")} and form not in FUNCTION_WORDS:
                    forms[form] = (lemma, label)
    return forms


def is_held_out(lemma: str, seed: int) -> bool:
    digest = hashlib.sha256(f"supersense:{seed}:{lemma}".encode()).digest()  # stable across processes
    return int.from_bytes(digest[:8], "big") < EVAL_FRACTION * 2**64


def occurrences(sentences: Iterable[str], forms: Mapping[str, tuple[str, int]]) -> dict[str, list[tuple]]:
    """{lemma: [(sentence, start, end, label), ...]}: every target noun found, in corpus order."""
    found: dict[str, list[tuple]] = defaultdict(list)
    for sentence in sentences:
        if len(sentence.split()) > MAX_WORDS:
            continue
        for match in WORD.finditer(sentence):
            if match.group() in forms:  # as written: a capitalised 'Bath' is the town, not the noun
                lemma, label = forms[match.group()]
                found[lemma].append((sentence, match.start(), match.end(), label))
    return found


def build_rows(sentences: Iterable[str], root: Path, train_size: int, eval_size: int, seed: int) -> dict:
    """{'train', 'validation'}: rows with a private `_lemma` column (what tests check disjointness with)."""
    found = occurrences(sentences, target_forms(root))
    out = {}
    for split, size in (("train", train_size), ("validation", eval_size)):
        rng = random.Random(f"supersense:{seed}:{split}")
        pool = []
        for lemma in sorted(found):
            if is_held_out(lemma, seed) == (split == "validation"):
                hits = found[lemma]
                pool += [(lemma, *hit) for hit in rng.sample(hits, min(MAX_ROWS_PER_LEMMA, len(hits)))]
        if len(pool) < size:
            key = "train_size" if split == "train" else "eval_size"
            raise ProbeTaskError(f"supersense {split}: the corpus holds {len(pool)} usable rows, fewer than {size}; "
                                 f"lower task.proxy.{key}")
        rows = []
        for idx, (lemma, sentence, start, end, label) in enumerate(rng.sample(pool, size)):
            text = f"{sentence[:start]}[{sentence[start:end]}]{sentence[end:]}"
            rows.append({"idx": idx, "text_a": text, "text_b": "", "label": label, "_lemma": lemma})
        out[split] = rows
    return out


def cache_dir(params: Mapping, root: Path, corpus: EmbeddedCorpus) -> Path:
    files = sorted((path.name, path.stat().st_size) for path in root.iterdir() if path.is_file())
    blob = json.dumps({"files": files, "corpus": corpus.fingerprint, "params": dict(params),
                       "version": BUILDER_VERSION}, sort_keys=True)
    return paths.cache_root() / "wordnet_probe" / f"supersense-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def load_supersense(task_cfg: Mapping, data_dir: str | Path | None = None) -> datasets.DatasetDict:
    """The probe's train and validation splits, built once and then read from the cache. data_dir is unused."""
    if task_cfg.get("kind") != "classification" or int(task_cfg.get("num_labels", 0)) != len(NOUN_LEXFILES):
        raise ProbeTaskError(f"task {task_cfg.get('name')}: the supersense probe is a classification task with "
                             f"num_labels={len(NOUN_LEXFILES)} (WordNet's noun lexicographer files)")
    params, root = proxy_params(task_cfg, ProbeTaskError), wordnet.default_root().resolve()
    corpus = EmbeddedCorpus(SOURCES)
    target = cache_dir(params, root, corpus)
    if not (target / "dataset_dict.json").is_file():
        sentences = (sentence for document in corpus.documents() for sentence in document)
        splits = build_rows(sentences, root, **params)
        public = {split: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
                  for split, rows in splits.items()}
        built = datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=glue.features(task_cfg))
                                      for split, rows in public.items()})
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        built.save_to_disk(str(scratch))
        try:
            os.replace(scratch, target)  # a reader sees a whole dataset or none
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("supersense probe built under %s", target)
    return datasets.load_from_disk(str(target))
