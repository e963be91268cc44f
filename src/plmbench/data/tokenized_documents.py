"""Corpus documents tokenized (and, for knowledge fusion, linked to WordNet) once per corpus and tokenizer, cached
on disk apart from the instances built from them: a new seed, sentence task or length reuses them.

One row per non-empty document: `ids` and `word_start` (and `entities` when linking), one list per non-empty
sentence (DOC_COLUMNS). Text that spells a special token ("[SEP]") is tokenized as text.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from datasets import Dataset, Features, List, Value, load_from_disk
from tokenizers import Tokenizer

from plmbench import paths
from plmbench.data import cache_publish
from plmbench.data.cache_publish import content_hash
from plmbench.data.entity_ids import LinkingSpec, linker_for, sentence_entity_ids
from plmbench.data.tokenizer import Corpus, tokenizer_fingerprint, word_start_mask

TOKENIZED_VERSION = 1  # bump when the tokenized documents change, so their caches are rebuilt
DOC_COLUMNS = ("ids", "word_start", "entities")  # one list per sentence
TOKENIZATION_PASSES = 0  # how often a corpus was tokenized in this process: tests assert caches are reused


def tokenized_documents(corpus: Corpus, tokenizer: Tokenizer, num_proc: int,
                         linking: LinkingSpec | None = None) -> Dataset:
    """One row per non-empty document: `ids` and `word_start` (and `entities` when linking), one list per
    non-empty sentence."""
    global TOKENIZATION_PASSES
    root = paths.cache_root() / "instances"
    identity = [corpus.fingerprint, tokenizer_fingerprint(tokenizer), TOKENIZED_VERSION]
    final = root / f"docs-{content_hash(identity if linking is None else [*identity, linking.key()])}"
    if (final / "dataset" / "state.json").is_file():
        return load_from_disk(str(final / "dataset"))
    if next(iter(corpus.documents()), None) is None:  # datasets cannot build a table from nothing
        raise ValueError(f"corpus {corpus.name!r} has no documents")
    TOKENIZATION_PASSES += 1
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".work-{final.name}-") as work:
        raw = Dataset.from_generator(
            _corpus_rows, features=Features({"sentences": List(Value("string"))}), cache_dir=work,
            gen_kwargs={"corpus": corpus}, fingerprint=f"corpus-{corpus.fingerprint}")
        columns = {"ids": List(List(Value("int32"))), "word_start": List(List(Value("bool")))}
        if linking is not None:
            columns["entities"] = List(List(Value("int32")))
            linker_for(linking)  # WordNet loaded once here, before map() forks its workers, which inherit it
        tokenized = raw.map(
            _tokenize_documents, batched=True, batch_size=256, num_proc=max(1, min(num_proc, len(raw) or 1)),
            remove_columns=["sentences"], fn_kwargs={"tokenizer_json": tokenizer.to_str(), "linking": linking},
            features=Features(columns),
            cache_file_name=str(Path(work) / "tokenized.arrow"), new_fingerprint=f"tok-{final.name}",
            desc=f"tokenizing {corpus.name}")
        if len(tokenized) == 0:
            raise ValueError(f"corpus {corpus.name!r} has no documents with text")
        staging = Path(work) / "out"
        tokenized.save_to_disk(str(staging / "dataset"))
        cache_publish.publish(staging, final, done="dataset/state.json")
    return load_from_disk(str(final / "dataset"))


def _corpus_rows(corpus: Corpus):
    for document in corpus.documents():
        yield {"sentences": document}


def _tokenize_documents(batch: dict, tokenizer_json: str, linking: LinkingSpec | None = None) -> dict:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.encode_special_tokens = True  # "[SEP]" in the text is text, not a separator
    flat = [sentence for document in batch["sentences"] for sentence in document]
    encodings = iter(tokenizer.encode_batch(flat, add_special_tokens=False))
    linker = linker_for(linking) if linking is not None else None
    out: dict[str, list] = {"ids": [], "word_start": []} | ({"entities": []} if linker is not None else {})
    for document in batch["sentences"]:
        encoded = [(text, e) for text, e in ((text, next(encodings)) for text in document) if e.ids]
        if encoded:  # a sentence can normalise to nothing
            out["ids"].append([e.ids for _, e in encoded])
            out["word_start"].append([word_start_mask(tokenizer, e) for _, e in encoded])
            if linker is not None:
                out["entities"].append([sentence_entity_ids(linker, text, e) for text, e in encoded])
    return out
