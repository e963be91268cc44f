"""Subword tokenizers trained on the pre-training corpus, cached by content, exported in the Hugging Face format.

Two families, as in the papers: BERT-style WordPiece (BERT, ALBERT, ELECTRA) and GPT-2-style byte-level BPE
(RoBERTa, GPT). Both are real `tokenizers.Tokenizer` objects; the special ids live in `SpecialTokens` so that no
model or feature code hard-codes them. The post-processor adds [CLS]/[SEP] like BERT's tokenizer does, for
fine-tuning features; pre-training instances are assembled by `instances.py`, which encodes with
`add_special_tokens=False`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tokenizers import (
    AddedToken,
    Encoding,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from plmbench import paths

log = logging.getLogger(__name__)

TOKENIZER_VERSION = 2  # bump when training or layout changes, so cached tokenizers are rebuilt (2: canonical ids)

# Names in id order: the ids 0..4 follow the original BERT and RoBERTa vocabularies.
WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
BYTEBPE_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}
ALGORITHMS = ("wordpiece", "bytebpe")
MIN_VOCAB = {"wordpiece": 100, "bytebpe": 256 + len(BYTEBPE_SPECIALS)}  # bytebpe needs the 256 byte symbols
BPE_WORD_MARK = "Ġ"  # what ByteLevel puts in front of a piece that follows a space
PROGRESS = sys.stderr.isatty()  # the trainer's bar on a terminal only: in a log file it is one line per update
MODEL_TYPES = ("bert", "albert", "electra", "roberta", "gpt", "gpt2", "elmo")


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    def ids(self) -> tuple[int, ...]:
        return (self.pad, self.unk, self.cls, self.sep, self.mask)


class Corpus(Protocol):
    name: str
    fingerprint: str

    def documents(self) -> Iterator[list[str]]: ...


def special_token_names(tokenizer: Tokenizer) -> dict[str, str]:
    """{'pad': '[PAD]', ...} for the family `tokenizer` belongs to."""
    return WORDPIECE_SPECIALS if isinstance(tokenizer.model, models.WordPiece) else BYTEBPE_SPECIALS


def special_tokens(tokenizer: Tokenizer) -> SpecialTokens:
    """Looks the special ids up by name, e.g. for a tokenizer loaded back from an exported model."""
    ids = {field: tokenizer.token_to_id(name) for field, name in special_token_names(tokenizer).items()}
    missing = [special_token_names(tokenizer)[f] for f, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return SpecialTokens(**ids)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Content hash of the whole tokenizer (vocab, merges, normalizer...): keys caches built with it."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def tokenizer_key(corpus_fingerprint: str, algorithm: str, vocab_size: int, lowercase: bool) -> str:
    spec = [corpus_fingerprint, algorithm, vocab_size, lowercase, TOKENIZER_VERSION]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def get_tokenizer(
    corpus: Corpus, algorithm: str, vocab_size: int, lowercase: bool = True
) -> tuple[Tokenizer, SpecialTokens]:
    """The tokenizer trained on `corpus`, from cache_root()/tokenizers/<key> when it was trained before."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"tokenizer.algorithm={algorithm!r} is not one of {'|'.join(ALGORITHMS)}")
    if vocab_size < MIN_VOCAB[algorithm]:
        raise ValueError(
            f"tokenizer.vocab_size={vocab_size} is below the minimum {MIN_VOCAB[algorithm]} for {algorithm}"
        )
    key = tokenizer_key(corpus.fingerprint, algorithm, vocab_size, lowercase)
    path = paths.cache_root() / "tokenizers" / key / "tokenizer.json"
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
        return tokenizer, special_tokens(tokenizer)

    log.info("training a %s tokenizer (vocab %d) on corpus %s", algorithm, vocab_size, corpus.name)
    tokenizer, trainer = _untrained(algorithm, vocab_size, lowercase)
    sentences = 0

    def counted_batches() -> Iterator[list[str]]:
        nonlocal sentences
        for batch in _sentence_batches(corpus):
            sentences += len(batch)
            yield batch

    tokenizer.train_from_iterator(counted_batches(), trainer=trainer)
    if sentences == 0:
        raise ValueError(f"corpus {corpus.name!r} has no text to train a tokenizer on")
    if algorithm == "wordpiece":
        _canonical_wordpiece_ids(tokenizer)
    special = special_tokens(tokenizer)
    _set_post_processor(tokenizer, special)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tokenizer.save(str(tmp))
    meta = {"corpus": corpus.name, "corpus_fingerprint": corpus.fingerprint, "algorithm": algorithm,
            "vocab_size": vocab_size, "lowercase": lowercase, "version": TOKENIZER_VERSION}
    (path.parent / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return tokenizer, special


def _untrained(algorithm: str, vocab_size: int, lowercase: bool) -> tuple[Tokenizer, trainers.Trainer]:
    if algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk"], max_input_chars_per_word=100))
        # strip_accents=None follows `lowercase`, as in BERT's uncased/cased vocabularies.
        tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                          strip_accents=None, lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, continuing_subword_prefix="##",
                                            special_tokens=list(WORDPIECE_SPECIALS.values()), show_progress=PROGRESS)
        return tokenizer, trainer
    tokenizer = Tokenizer(models.BPE())  # byte-level: every string is representable, so no unk in the model
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    # RoBERTa's <mask> swallows the space before it, so "a <mask>." masks the word " x" as one piece.
    specials = [AddedToken(t, lstrip=t == BYTEBPE_SPECIALS["mask"], special=True) for t in BYTEBPE_SPECIALS.values()]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=PROGRESS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tokenizer, trainer


def _canonical_wordpiece_ids(tokenizer: Tokenizer) -> None:
    """Renumbers a trained WordPiece vocabulary: the specials keep ids 0..4, every other piece follows in sorted order.

    The trainer breaks ties between equally frequent merges in hash-map order, which Rust seeds per process: two
    trainings of one corpus gave the same 8,000 pieces with 123 ids swapped, so the same cell trained from two fresh
    clones started from differently indexed embeddings (step-20 loss 8.7183 vs 8.7281). WordPiece encodes by longest
    match in the set, so the order carries nothing but the ids. Byte-level BPE came out identical in every process.
    """
    vocab = tokenizer.get_vocab()
    specials = list(WORDPIECE_SPECIALS.values())
    ordered = specials + sorted(set(vocab) - set(specials))
    model = tokenizer.model
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate(ordered)}, unk_token=model.unk_token,
                                       max_input_chars_per_word=model.max_input_chars_per_word,
                                       continuing_subword_prefix=model.continuing_subword_prefix)


def _set_post_processor(tokenizer: Tokenizer, special: SpecialTokens) -> None:
    """[CLS] A [SEP] B [SEP] with segment ids 0/1: the same layout pre-training instances use, for both families."""
    cls, sep = tokenizer.id_to_token(special.cls), tokenizer.id_to_token(special.sep)
    template = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, special.cls), (sep, special.sep)])
    if isinstance(tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):  # keep ByteLevel's offset trimming too
        template = processors.Sequence([processors.ByteLevel(trim_offsets=True), template])
    tokenizer.post_processor = template


def _sentence_batches(corpus: Corpus, batch: int = 1000) -> Iterator[list[str]]:
    buffer: list[str] = []
    for document in corpus.documents():
        buffer.extend(document)
        if len(buffer) >= batch:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


def word_start_mask(tokenizer: Tokenizer, encoding: Encoding) -> list[bool]:
    """Which pieces begin a word, for whole-word and n-gram masking.

    WordPiece: every piece not prefixed '##'. Byte-level BPE: pieces carrying the 'Ġ' space marker, the first
    piece, and any piece right after a special token. Special tokens count as words of their own.
    """
    tokens, specials = encoding.tokens, encoding.special_tokens_mask
    if isinstance(tokenizer.model, models.WordPiece):
        prefix = tokenizer.model.continuing_subword_prefix
        return [bool(s) or not t.startswith(prefix) for t, s in zip(tokens, specials)]
    after_special = [True] + [bool(s) for s in specials[:-1]]
    return [bool(s) or a or t.startswith(BPE_WORD_MARK) for t, s, a in zip(tokens, specials, after_special)]


def save_hf_tokenizer(
    tokenizer: Tokenizer, special: SpecialTokens, out_dir: str | Path, model_type: str,
    model_max_length: int | None = None,
) -> Path:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json for AutoTokenizer.

    The generic fast-tokenizer class is named on purpose: it loads tokenizer.json as is (normalizer, template
    and all), whereas BertTokenizerFast and friends rebuild parts of the pipeline from their own defaults.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} is not one of {'|'.join(MODEL_TYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    names = {field: tokenizer.id_to_token(i) for field, i in zip(("pad", "unk", "cls", "sep", "mask"), special.ids())}
    special_map = {f"{field}_token": name for field, name in names.items()}
    if not isinstance(tokenizer.model, models.WordPiece):
        special_map |= {"bos_token": names["cls"], "eos_token": names["sep"]}  # RoBERTa/GPT-2 naming
    is_gpt = model_type in ("gpt", "gpt2")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length or 1_000_000_000_000_000_019_884_624_838_656,  # HF's "no limit"
        "model_input_names": ["input_ids", "attention_mask"] if is_gpt else
                             ["input_ids", "token_type_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        "do_lower_case": _lowercases(tokenizer),
        **special_map,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return out


def _lowercases(tokenizer: Tokenizer) -> bool:
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return bool(normalizer.get("lowercase")) or normalizer.get("type") == "Lowercase"
