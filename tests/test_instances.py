"""Instance creation on WikiText-2: NSP/SOP provenance, lengths, packing, static masks, caching, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from plmbench.data import cache_publish, instances, tokenized_documents
from plmbench.data.instances import build_instances
from plmbench.data.tokenizer import get_tokenizer
from test_tokenizer import ListCorpus, WikiText

MAX_LEN = 128


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLMBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # static masking runs small CPU ops: one thread is faster on a busy machine
        yield
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(shared_data):
    return WikiText(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt")


@pytest.fixture(scope="module")
def wordpiece(corpus):
    return get_tokenizer(corpus, "wordpiece", 2000)


@pytest.fixture(scope="module")
def doc_tokens(corpus, wordpiece):
    """Every document as a list of tokenized sentences, computed here independently of instances.py."""
    tokenizer, _ = wordpiece
    return [[e.ids for e in tokenizer.encode_batch(doc, add_special_tokens=False)] for doc in corpus.documents()]


def segments(row, special):
    """(A, B) token lists of [CLS] A [SEP] B [SEP], checking the layout and the segment ids on the way."""
    ids, types = row["input_ids"], row["token_type_ids"]
    assert ids[0] == special.cls and ids[-1] == special.sep
    first_sep = ids.index(special.sep)
    a, b = ids[1:first_sep], ids[first_sep + 1:-1]
    assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1 if b else 0)
    assert len(row["word_start"]) == len(ids)
    return a, b


def is_slice_of(part, whole):
    """Whether `part` occurs contiguously in `whole` (a byte search over int32 arrays, aligned to tokens)."""
    needle, haystack = np.asarray(part, np.int32).tobytes(), np.asarray(whole, np.int32).tobytes()
    at = haystack.find(needle)
    while at > 0 and at % 4:
        at = haystack.find(needle, at + 1)
    return at >= 0


def from_sentences(doc_tokens, doc, sentences):
    return [t for s in sentences for t in doc_tokens[doc][s]]


def test_nsp_negatives_come_from_another_document(corpus, wordpiece, doc_tokens):
    tokenizer, special = wordpiece
    data, stats = build_instances(corpus, tokenizer, special, sentence_task="nsp", max_seq_len=MAX_LEN, seed=0,
                                  debug=True)
    assert stats["instances"] == len(data) > 1000 and stats["skipped_single_sentence_documents"] == 0
    labels = torch.tensor(data["sentence_label"])
    assert set(labels.tolist()) == {0, 1}  # HF convention: 0 = B follows A, 1 = B is random
    assert 0.45 < labels.float().mean() < 0.65  # half, plus the chunks of one sentence that must be random
    for row in data:
        a, b = segments(row, special)
        assert a and b and len(row["input_ids"]) <= MAX_LEN
        assert is_slice_of(a, from_sentences(doc_tokens, row["doc_a"], row["sent_a"]))
        assert is_slice_of(b, from_sentences(doc_tokens, row["doc_b"], row["sent_b"]))
        if row["sentence_label"] == 0:  # B is the text right after A
            assert row["doc_b"] == row["doc_a"] and row["sent_b"][0] == row["sent_a"][-1] + 1
        else:
            assert row["doc_b"] != row["doc_a"]


def test_sop_negatives_are_positives_swapped(corpus, wordpiece, doc_tokens):
    tokenizer, special = wordpiece
    data, _ = build_instances(corpus, tokenizer, special, sentence_task="sop", max_seq_len=MAX_LEN, seed=0,
                              debug=True)
    labels = torch.tensor(data["sentence_label"])
    assert abs(labels.float().mean() - 0.5) < 0.05
    for row in data:
        a, b = segments(row, special)
        assert row["doc_b"] == row["doc_a"]  # never another document
        first, second = (a, b) if row["sentence_label"] == 0 else (b, a)  # undo the swap
        sent_first, sent_second = (row["sent_a"], row["sent_b"]) if row["sentence_label"] == 0 else \
            (row["sent_b"], row["sent_a"])
        whole = from_sentences(doc_tokens, row["doc_a"], sorted(set(sent_first + sent_second)))
        if sent_first == sent_second:  # a chunk of one sentence, cut in two
            assert is_slice_of(first, whole) and is_slice_of(second, whole)
        else:  # the unswapped pair is contiguous text in order
            assert sent_second[0] == sent_first[-1] + 1
            assert is_slice_of(first, from_sentences(doc_tokens, row["doc_a"], sent_first))
            assert is_slice_of(second, from_sentences(doc_tokens, row["doc_a"], sent_second))


def test_lengths_fit_and_a_tenth_are_short(corpus, wordpiece):
    tokenizer, special = wordpiece
    data, stats = build_instances(corpus, tokenizer, special, sentence_task="none", max_seq_len=MAX_LEN, seed=1,
                                  debug=True)
    assert stats["max_length"] <= MAX_LEN
    assert all(len(ids) <= MAX_LEN for ids in data["input_ids"])
    short = torch.tensor(data["target_len"]) < MAX_LEN - 3
    assert 0.07 < short.float().mean() < 0.13  # short_seq_prob = 0.1, drawn per instance
    assert set(data["sentence_label"]) == {-1}
    lengths = torch.tensor([len(ids) for ids in data["input_ids"]])
    assert lengths[~short].float().mean() > 0.75 * MAX_LEN  # the rest are mostly full (ends of documents aside)
    none_short, _ = build_instances(corpus, tokenizer, special, max_seq_len=MAX_LEN, seed=1, short_seq_prob=0.0,
                                    debug=True)
    assert set(none_short["target_len"]) == {MAX_LEN - 3}


def test_full_sentences_pack_the_corpus_across_documents(corpus, wordpiece, doc_tokens):
    tokenizer, special = wordpiece
    data, _ = build_instances(corpus, tokenizer, special, packing="full_sentences", max_seq_len=MAX_LEN, seed=0)
    inner = [row[1:-1] for row in data["input_ids"]]
    assert all(row[0] == special.cls and row[-1] == special.sep and len(row) <= MAX_LEN for row in data["input_ids"])
    assert all(set(types) == {0} for types in data["token_type_ids"])
    assert sum(special.sep in row for row in inner) > 20  # some instances run on into the next document
    # nothing lost, nothing repeated: the instances are the corpus in order, separators aside
    stream = [t for row in inner for t in row if t != special.sep]
    assert stream == [t for doc in doc_tokens for sentence in doc for t in sentence]
    assert sum(map(len, data["input_ids"])) / len(data) > 0.75 * MAX_LEN  # packed, not one sentence each


def test_causal_blocks_are_exact(corpus, wordpiece, doc_tokens):
    tokenizer, special = wordpiece
    data, _ = build_instances(corpus, tokenizer, special, packing="causal", max_seq_len=64, seed=0)
    stream = [t for doc in doc_tokens for t in [*(t for s in doc for t in s), special.sep]]
    assert len(data) == len(stream) // 64
    assert all(len(ids) == 64 for ids in data["input_ids"])
    assert [t for ids in data["input_ids"] for t in ids] == stream[:len(data) * 64]


def test_static_masking_stores_one_mask_per_copy(corpus, wordpiece):
    tokenizer, special = wordpiece
    plain, _ = build_instances(corpus, tokenizer, special, max_seq_len=MAX_LEN, seed=2, dupe_factor=2)
    static, _ = build_instances(corpus, tokenizer, special, max_seq_len=MAX_LEN, seed=2, dupe_factor=2,
                                static_masking={"rate": 0.15, "mode": "whole_word"})
    assert len(static) == len(plain) and "mlm_labels" in static.column_names
    assert [len(x) for x in static["input_ids"]] == [len(x) for x in plain["input_ids"]]
    original, masked, labels = (pc.list_flatten(data.data.column(name)).to_numpy() for data, name in
                                [(plain, "input_ids"), (static, "input_ids"), (static, "mlm_labels")])
    picked = labels != -100
    assert (labels[picked] == original[picked]).all() and (masked[~picked] == original[~picked]).all()
    real = ~np.isin(original, special.ids())
    assert abs(picked.sum() / real.sum() - 0.15) < 0.01
    assert (masked[picked] == special.mask).mean() > 0.75  # the 80/10/10 replacement happened
    half = len(plain) // 2  # the two copies are cut and masked independently
    assert plain["input_ids"][:half] != plain["input_ids"][half:2 * half]


def test_second_build_reuses_the_cache(corpus, wordpiece):
    tokenizer, special = wordpiece
    first, stats = build_instances(corpus, tokenizer, special, sentence_task="sop", max_seq_len=96, seed=5)
    passes = tokenized_documents.TOKENIZATION_PASSES
    again, again_stats = build_instances(corpus, tokenizer, special, sentence_task="sop", max_seq_len=96, seed=5)
    assert (stats["from_cache"], again_stats["from_cache"]) == (False, True)
    assert tokenized_documents.TOKENIZATION_PASSES == passes  # not even tokenized again
    assert again["input_ids"] == first["input_ids"]
    other, other_stats = build_instances(corpus, tokenizer, special, sentence_task="sop", max_seq_len=96, seed=6)
    assert other_stats["from_cache"] is False and tokenized_documents.TOKENIZATION_PASSES == passes  # tokens are cached too
    assert other["input_ids"] != first["input_ids"]


def test_a_build_that_loses_the_race_to_another_process_uses_its_result(corpus, wordpiece, monkeypatch, tmp_path):
    """Two runs on one cache (parallel jobs of a sweep) built the same tokenized documents: the second one's rename
    onto the first one's folder raised 'Directory not empty' and the run failed."""
    tokenizer, special = wordpiece
    expected, _ = build_instances(corpus, tokenizer, special, sentence_task="sop", max_seq_len=96, seed=5)
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path))
    publish = cache_publish.publish

    def another_process_first(staging, final, **kwargs):
        shutil.copytree(staging, final)  # the same build, finished a moment earlier by another process
        publish(staging, final, **kwargs)

    monkeypatch.setattr(cache_publish, "publish", another_process_first)  # the docs and the instances
    rows, stats = build_instances(corpus, tokenizer, special, sentence_task="sop", max_seq_len=96, seed=5)
    assert stats["from_cache"] is False and rows["input_ids"] == expected["input_ids"]
    built = sorted(p.name for p in (tmp_path / "instances").iterdir())  # no staging folder left behind
    assert len(built) == 2 and built[1].startswith("docs-") and not built[0].startswith(".work")


def test_num_proc_changes_only_the_speed(shared_data, wordpiece, monkeypatch, tmp_path):
    sections = WikiText(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt", per_section=True, max_docs=60)
    monkeypatch.setattr(instances, "DOCS_PER_UNIT", 8)  # several work units from a small corpus
    tokenizer, special = wordpiece
    kwargs = {"sentence_task": "nsp", "max_seq_len": 64, "seed": 0, "static_masking": {"mode": "ngram"}}
    one, stats = build_instances(sections, tokenizer, special, num_proc=1, **kwargs)
    assert stats["skipped_single_sentence_documents"] > 0  # short sections
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path))
    two, stats_two = build_instances(sections, tokenizer, special, num_proc=2, **kwargs)
    assert stats_two["from_cache"] is False
    assert one.to_dict() == two.to_dict()


def test_one_sentence_documents_are_skipped_and_counted(wordpiece):
    tokenizer, special = wordpiece
    docs = ListCorpus([["A lone sentence."], ["The lobster is blue.", "It lives in the sea."],
                       ["Another single one."], ["Crabs walk sideways.", "They have claws.", "Some are red."]])
    data, stats = build_instances(docs, tokenizer, special, sentence_task="nsp", max_seq_len=32, seed=0, debug=True)
    assert stats["skipped_single_sentence_documents"] == 2 and stats["documents"] == 4
    assert set(data["doc_a"]) <= {1, 3} and set(data["doc_b"]) <= {1, 3}
    _, stats = build_instances(docs, tokenizer, special, sentence_task="none", max_seq_len=32, seed=0)
    assert stats["skipped_single_sentence_documents"] == 0


def test_special_token_text_stays_text(wordpiece):
    tokenizer, special = wordpiece
    docs = ListCorpus([["Write [SEP] and [MASK] here.", "Then [CLS] [PAD]."]])
    data, _ = build_instances(docs, tokenizer, special, max_seq_len=64, seed=0, short_seq_prob=0.0)
    (ids,) = data["input_ids"]
    assert ids.count(special.sep) == 2 and ids.count(special.cls) == 1
    assert special.mask not in ids and special.pad not in ids


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_seq_len": 4}, (r"data.max_seq_len=4 is too small for segment_pair \(\[CLS\] A \[SEP\] B \[SEP\]\); "
                          r"the minimum is 5")),
    ({"max_seq_len": 2, "packing": "full_sentences"}, "the minimum is 3"),
    ({"sentence_task": "nsp", "packing": "full_sentences"}, "sentence_task=nsp needs packing=segment_pair"),
    ({"sentence_task": "mlm"}, r"sentence_task='mlm' is not one of none\|nsp\|sop"),
    ({"packing": "doc_sentences"}, "data.packing='doc_sentences' is not one of"),
    ({"short_seq_prob": 1.5}, r"data.short_seq_prob=1.5 must be in \[0, 1\]"),
    ({"packing": "causal", "static_masking": {"rate": 0.15}}, "static masking is for masked-LM"),
    ({"static_masking": {"ratio": 0.15}}, r"static_masking keys \['ratio'\] are not among"),
])
def test_bad_settings_fail_in_one_line(corpus, wordpiece, kwargs, message):
    tokenizer, special = wordpiece
    with pytest.raises(ValueError, match=message) as error:
        build_instances(corpus, tokenizer, special, seed=0, **{"max_seq_len": MAX_LEN, **kwargs})
    assert "\n" not in str(error.value)


def test_empty_or_too_small_corpora_fail_in_one_line(wordpiece):
    tokenizer, special = wordpiece
    with pytest.raises(ValueError, match="corpus 'inline' has no documents"):
        build_instances(ListCorpus([]), tokenizer, special, max_seq_len=MAX_LEN, seed=0)
    with pytest.raises(ValueError, match="has no documents with text"):
        build_instances(ListCorpus([[], []]), tokenizer, special, max_seq_len=MAX_LEN, seed=0)
    with pytest.raises(ValueError, match=r"sentence_task=nsp needs 2\+ documents of 2\+ sentences; .* has 1"):
        build_instances(ListCorpus([["One.", "Two."], ["Alone."]]), tokenizer, special, sentence_task="nsp",
                        max_seq_len=MAX_LEN, seed=0)
