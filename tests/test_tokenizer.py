"""Tokenizers trained on real text: special-id layouts, caching, word starts, and the Hugging Face export.

`WikiText` (a tiny real corpus in the Corpus protocol) lives here and is imported by the other data tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blingfire
import pytest

from plmbench.data.tokenizer import (
    SpecialTokens,
    get_tokenizer,
    save_hf_tokenizer,
    special_tokens,
    tokenizer_fingerprint,
    word_start_mask,
)


@dataclass
class WikiText:
    """WikiText-2 raw: one document per article (' = Title = ') or per section, sentences by blingfire."""

    path: Path
    per_section: bool = False
    max_docs: int | None = None
    name: str = "wikitext-2-valid"
    fingerprint: str = field(init=False)

    def __post_init__(self):
        spec = f"{self.per_section}:{self.max_docs}".encode()
        self.fingerprint = hashlib.sha256(self.path.read_bytes() + spec).hexdigest()[:16]

    def documents(self) -> Iterator[list[str]]:
        document: list[str] = []
        count = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            heading = text.startswith("= ") and text.endswith(" =")
            if heading and (self.per_section or not text.startswith("= =")):
                if document:
                    yield document
                    count += 1
                    if self.max_docs is not None and count >= self.max_docs:
                        return
                document = []
            elif text and not heading:
                document.extend(s for s in blingfire.text_to_sentences(text).split("\n") if s.strip())
        if document:
            yield document


@dataclass
class ListCorpus:
    """A corpus given inline, for edge cases."""

    docs: list[list[str]]
    name: str = "inline"
    fingerprint: str = field(init=False)

    def __post_init__(self):
        self.fingerprint = hashlib.sha256(repr(self.docs).encode()).hexdigest()[:16]

    def documents(self) -> Iterator[list[str]]:
        yield from self.docs


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLMBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield WikiText(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt")


SENTENCE = "The European lobster, Homarus gammarus, is blue."
PAIR = "It is a naïve species of clawed lobster."


def test_wordpiece_is_bert_style(corpus):
    tokenizer, special = get_tokenizer(corpus, "wordpiece", 2000)
    assert special == SpecialTokens(pad=0, unk=1, cls=2, sep=3, mask=4)
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.get_vocab_size() == 2000
    encoding = tokenizer.encode(SENTENCE, PAIR)
    a_len = len(tokenizer.encode(SENTENCE, add_special_tokens=False).ids)
    assert encoding.ids[0] == special.cls and encoding.ids[a_len + 1] == special.sep == encoding.ids[-1]
    assert encoding.type_ids == [0] * (a_len + 2) + [1] * (len(encoding.ids) - a_len - 2)
    assert any(t.startswith("##") for t in encoding.tokens)  # a 2000-piece vocab splits words
    assert tokenizer.decode(encoding.ids) == "the european lobster, homarus gammarus, is blue. it is a naive species " \
                                             "of clawed lobster."  # lower-cased, accents stripped (uncased BERT)


def test_bytebpe_is_roberta_style(corpus):
    tokenizer, special = get_tokenizer(corpus, "bytebpe", 2000)
    assert special == SpecialTokens(pad=1, unk=3, cls=0, sep=2, mask=4)
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    text = "Naïve 😀 lobsters — ünïcödé"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert special.unk not in ids  # bytes cover everything
    assert tokenizer.decode(ids).strip() == text.lower()
    encoding = tokenizer.encode(SENTENCE)
    assert (encoding.ids[0], encoding.ids[-1]) == (special.cls, special.sep)


def test_trained_tokenizer_is_cached_by_content(corpus, caplog):
    first, _ = get_tokenizer(corpus, "wordpiece", 2000)
    with caplog.at_level(logging.INFO, logger="plmbench.data.tokenizer"):
        again, special = get_tokenizer(corpus, "wordpiece", 2000)
    assert not [r for r in caplog.records if "training" in r.getMessage()]  # loaded, not retrained
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(first)
    assert special_tokens(again) == special
    cased, _ = get_tokenizer(corpus, "wordpiece", 2000, lowercase=False)
    assert tokenizer_fingerprint(cased) != tokenizer_fingerprint(first)
    assert cased.encode("Lobster", add_special_tokens=False).tokens != first.encode("Lobster",
                                                                                   add_special_tokens=False).tokens


@pytest.mark.parametrize("algorithm", ["wordpiece", "bytebpe"])
def test_word_starts_count_the_words(corpus, algorithm):
    """WikiText separates every word and punctuation mark by a space, so word starts = whitespace words."""
    tokenizer, _ = get_tokenizer(corpus, algorithm, 2000)
    sentences = [s for doc in corpus.documents() for s in doc][:300]
    for sentence, encoding in zip(sentences, tokenizer.encode_batch(sentences, add_special_tokens=False)):
        starts = word_start_mask(tokenizer, encoding)
        assert len(starts) == len(encoding.ids)
        if algorithm == "wordpiece":  # BertPreTokenizer also splits "@.@" into three words
            expected = len(tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(sentence)))
        else:
            expected = len(sentence.split())
        assert sum(starts) == expected, (sentence, encoding.tokens)
    encoding = tokenizer.encode(SENTENCE, PAIR)  # with specials: they count as words of their own
    starts = word_start_mask(tokenizer, encoding)
    assert all(s for s, special in zip(starts, encoding.special_tokens_mask) if special)


@pytest.mark.parametrize(("algorithm", "model_type"), [("wordpiece", "bert"), ("bytebpe", "roberta"),
                                                       ("bytebpe", "gpt2")])
def test_autotokenizer_loads_the_export(corpus, tmp_path, algorithm, model_type):
    transformers = pytest.importorskip("transformers")
    tokenizer, special = get_tokenizer(corpus, algorithm, 2000)
    out = save_hf_tokenizer(tokenizer, special, tmp_path / "export", model_type, model_max_length=128)
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf("Lobsters are blue.", "They live in the sea.")["input_ids"] == \
        tokenizer.encode("Lobsters are blue.", "They live in the sea.").ids
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == special.ids()
    assert hf.model_max_length == 128
    assert ("token_type_ids" in hf("x")) == (model_type != "gpt2")
    if algorithm == "bytebpe":
        assert (hf.bos_token_id, hf.eos_token_id) == (special.cls, special.sep)


def test_errors_are_one_line(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"tokenizer.algorithm='sentencepiece' is not one of wordpiece\|bytebpe"):
        get_tokenizer(corpus, "sentencepiece", 2000)
    with pytest.raises(ValueError, match=r"tokenizer.vocab_size=200 is below the minimum 261 for bytebpe"):
        get_tokenizer(corpus, "bytebpe", 200)
    for algorithm in ("wordpiece", "bytebpe"):
        with pytest.raises(ValueError, match="corpus 'inline' has no text to train a tokenizer on"):
            get_tokenizer(ListCorpus([[], []]), algorithm, 1000)
    tokenizer, special = get_tokenizer(corpus, "wordpiece", 2000)
    with pytest.raises(ValueError, match="model_type='t5' is not one of"):
        save_hf_tokenizer(tokenizer, special, tmp_path, "t5")


TRAIN_IN_FRESH_PROCESS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_tokenizer import WikiText
from pathlib import Path
from plmbench.data.tokenizer import get_tokenizer
tokenizer, _ = get_tokenizer(WikiText(Path(sys.argv[2])), sys.argv[3], 1000)
print(json.dumps(tokenizer.get_vocab(), sort_keys=True))
"""


@pytest.mark.parametrize("algorithm", ["wordpiece", "bytebpe"])
def test_training_gives_the_same_ids_in_every_process(shared_data, tmp_path, algorithm):
    # Rust seeds its hash maps per process, and the WordPiece trainer breaks frequency ties in hash-map order: before
    # the ids were made canonical, processes gave the same pieces under different ids. (A tie at the vocabulary's
    # edge can still swap a piece: on this file at 2,000 or 6,000 pieces, not at 1,000, 1,500, 3,000 or 4,000.)
    vocabularies = []
    for run in range(3):
        env = os.environ | {"PLMBENCH_CACHE": str(tmp_path / f"cache{run}")}  # trained afresh, not loaded
        out = subprocess.run([sys.executable, "-c", TRAIN_IN_FRESH_PROCESS, str(Path(__file__).parent),
                              str(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt"), algorithm],
                             env=env, capture_output=True, text=True, check=True)
        vocabularies.append(json.loads(out.stdout.splitlines()[-1]))
    assert len(vocabularies[0]) == 1000
    assert vocabularies[1] == vocabularies[0] and vocabularies[2] == vocabularies[0]
