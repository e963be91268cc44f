"""Masking statistics on real WordPiece text (>100k tokens): rates, 80/10/10 (ELECTRA 85/15/0), words, n-gram
lengths, specials."""

from __future__ import annotations

import collections

import pytest
import torch

from plmbench.configuration import compose
from plmbench.data.collate import pad_sequences
from plmbench.data.masking import IGNORE_INDEX, Masker
from plmbench.data.tokenizer import get_tokenizer, word_start_mask
from plmbench.lit.pretrain_data import PretrainData
from test_tokenizer import WikiText

LENGTH = 128


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small CPU ops on a shared, busy machine run far faster on one thread than with intra-op spinning."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batch(shared_data, tmp_path_factory):
    """Rows of [CLS] A [SEP] B [SEP] cut from WikiText-2 valid; the last rows padded, as in a real batch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLMBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        corpus = WikiText(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt")
        tokenizer, special = get_tokenizer(corpus, "wordpiece", 2000)
    sentences = [s for doc in corpus.documents() for s in doc]
    ids, starts = [], []
    for encoding in tokenizer.encode_batch(sentences, add_special_tokens=False):
        ids += encoding.ids
        starts += word_start_mask(tokenizer, encoding)
    rows, row_starts, i, half = [], [], 0, (LENGTH - 3) // 2
    while i + 2 * half <= len(ids):
        short = (len(rows) % 7 == 0) * 40  # every 7th row is shorter, so padding is exercised
        a, b = slice(i, i + half), slice(i + half, i + 2 * half - short)
        rows.append([special.cls, *ids[a], special.sep, *ids[b], special.sep])
        row_starts.append([True, *starts[a], True, *starts[b], True])
        i += 2 * half - short
    input_ids = torch.from_numpy(pad_sequences(rows, special.pad, LENGTH))
    word_start = torch.from_numpy(pad_sequences(row_starts, False, LENGTH, bool))
    return input_ids, word_start, special, tokenizer.get_vocab_size()


def candidates(input_ids, special):
    return ~torch.isin(input_ids, torch.tensor(special.ids()))


def word_ids(input_ids, word_start, special):
    """Word number of every candidate (-1 elsewhere), words ending at specials, as the Masker defines them."""
    cand = candidates(input_ids, special)
    prev = torch.nn.functional.pad(cand[:, :-1], (1, 0), value=False)
    start = cand & (word_start | ~prev)
    return torch.where(cand, start.long().cumsum(1), -1)


def test_token_masking_rates_and_80_10_10(batch):
    input_ids, word_start, special, vocab = batch
    cand = candidates(input_ids, special)
    assert cand.sum() > 100_000
    masked, labels = Masker(vocab, special)(input_ids, word_start, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    assert abs(chosen.sum() / cand.sum() - 0.15) < 0.01
    # BERT's budget: exactly max(1, round(15% of the real tokens)) per sequence
    assert torch.equal(chosen.sum(1), torch.round(cand.sum(1) * 0.15).clamp(min=1))
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(masked[~chosen], input_ids[~chosen])
    as_mask = (masked[chosen] == special.mask).float().mean()
    kept = (masked[chosen] == input_ids[chosen]).float().mean()
    random = ((masked[chosen] != special.mask) & (masked[chosen] != input_ids[chosen])).float().mean()
    assert abs(as_mask - 0.8) < 0.01 and abs(random - 0.1) < 0.01 and abs(kept - 0.1) < 0.01
    replaced = masked[chosen][(masked[chosen] != special.mask)]
    assert not torch.isin(replaced, torch.tensor(special.ids())).any()  # random tokens are real tokens
    assert len(torch.unique(replaced)) > 500  # ... drawn from the whole vocabulary


@pytest.mark.parametrize("mode", ["token", "whole_word", "ngram"])
def test_specials_and_padding_never_selected(batch, mode):
    input_ids, word_start, special, vocab = batch
    masked, labels = Masker(vocab, special, mode=mode)(input_ids, word_start, torch.Generator().manual_seed(1))
    is_special = ~candidates(input_ids, special)
    assert is_special.sum() > 1000 and (input_ids == special.pad).sum() > 1000
    assert (labels[is_special] == IGNORE_INDEX).all()
    assert torch.equal(masked[is_special], input_ids[is_special])


@pytest.mark.parametrize("mode", ["whole_word", "ngram"])
def test_words_are_masked_whole(batch, mode):
    input_ids, word_start, special, vocab = batch
    words = word_ids(input_ids, word_start, special)
    assert (~word_start & candidates(input_ids, special)).sum() > 20_000  # plenty of '##' continuation pieces
    _, labels = Masker(vocab, special, mode=mode)(input_ids, word_start, torch.Generator().manual_seed(2))
    chosen = (labels != IGNORE_INDEX).long()
    flat = (words + torch.arange(len(words))[:, None] * LENGTH).clamp(min=0).flatten()  # unique per row
    size = torch.zeros(flat.max() + 1, dtype=torch.long).scatter_add_(0, flat, (words >= 0).long().flatten())
    hits = torch.zeros_like(size).scatter_add_(0, flat, chosen.flatten())
    assert ((hits == 0) | (hits == size)).all()  # every word all in or all out
    assert abs(chosen.sum() / candidates(input_ids, special).sum() - 0.15) < 0.01  # the budget holds on average


def test_ngram_span_lengths_follow_one_over_n(batch):
    input_ids, word_start, special, vocab = batch
    masker = Masker(vocab, special, mode="ngram", max_ngram=3)
    selected, span = masker.select(input_ids, word_start, torch.Generator().manual_seed(3))
    words = word_ids(input_ids, word_start, special)
    counts = collections.Counter()
    for row in range(len(input_ids)):
        taken = span[row][selected[row]]
        for s in taken.unique():
            counts[len(words[row][span[row] == s].unique())] += 1
    total = sum(counts.values())
    assert total > 5000 and set(counts) == {1, 2, 3}
    # ALBERT's own greedy fill also leans to short spans near the budget; the departure here is < 2.5 points
    for n, expected in {1: 6 / 11, 2: 3 / 11, 3: 2 / 11}.items():
        assert abs(counts[n] / total - expected) < 0.025, (n, counts[n] / total)


def test_max_predictions_caps_every_mode(batch):
    input_ids, word_start, special, vocab = batch
    for mode in ("token", "whole_word", "ngram"):
        masker = Masker(vocab, special, mode=mode, max_predictions=5)
        _, labels = masker(input_ids, word_start, torch.Generator().manual_seed(4))
        per_row = (labels != IGNORE_INDEX).sum(1)
        assert per_row.max() <= 5 and per_row.float().mean() > 3.5


def test_generator_makes_masks_reproducible(batch):
    input_ids, word_start, special, vocab = batch
    masker = Masker(vocab, special, mode="ngram")
    one = masker(input_ids[:50], word_start[:50], torch.Generator().manual_seed(7))
    two = masker(input_ids[:50], word_start[:50], torch.Generator().manual_seed(7))
    other = masker(input_ids[:50], word_start[:50], torch.Generator().manual_seed(8))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert not torch.equal(one[1], other[1])


def test_bad_settings_fail_with_the_key(batch):
    input_ids, _, special, vocab = batch
    with pytest.raises(ValueError, match=r"data.masking.mode='span' is not one of token\|whole_word\|ngram"):
        Masker(vocab, special, mode="span")
    with pytest.raises(ValueError, match=r"data.masking.rate=0.0 must be in \(0, 1\]"):
        Masker(vocab, special, rate=0.0)
    with pytest.raises(ValueError, match="needs word_start"):
        Masker(vocab, special, mode="whole_word")(input_ids)


@pytest.mark.parametrize("recipe", ["electra_g25", "electra_g50"])
def test_electra_generator_input_is_85_mask_15_unchanged(batch, recipe):
    """ELECTRA's pretrain_helpers.mask: of the chosen tokens 85% [MASK], 15% unchanged, no random tokens."""
    input_ids, word_start, special, vocab = batch
    cfg = compose("pretrain", [f"+recipe={recipe}", "scale=smoke"])
    masker = Masker(vocab, special, **PretrainData(cfg).masking_options())
    masked, labels = masker(input_ids, word_start, torch.Generator().manual_seed(5))
    chosen = labels != IGNORE_INDEX
    assert abs(chosen.sum() / candidates(input_ids, special).sum() - 0.15) < 0.01
    as_mask = (masked[chosen] == special.mask).float().mean()
    kept = (masked[chosen] == input_ids[chosen]).float().mean()
    random = (masked[chosen] != special.mask) & (masked[chosen] != input_ids[chosen])
    assert chosen.sum() > 15_000 and abs(as_mask - 0.85) < 0.01 and abs(kept - 0.15) < 0.01
    assert not random.any()
