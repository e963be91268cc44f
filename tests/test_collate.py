"""The batch collator: padding, attention mask, dynamic/static MLM labels, causal labels, DataLoader use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from plmbench.data.collate import PretrainCollator, pad_sequences
from plmbench.data.instances import build_instances
from plmbench.data.masking import IGNORE_INDEX, Masker
from plmbench.data.tokenizer import get_tokenizer
from test_tokenizer import WikiText

CONF = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "pretrain.yaml")


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLMBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small CPU ops: one thread beats intra-op spinning on a busy shared machine
        corpus = WikiText(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt", max_docs=8)
        tokenizer, special = get_tokenizer(corpus, "wordpiece", 2000)
        pairs, _ = build_instances(corpus, tokenizer, special, sentence_task="nsp", max_seq_len=64, seed=0)
        yield tokenizer, special, corpus, pairs
        torch.set_num_threads(threads)


def test_pad_sequences_matches_a_plain_loop():
    rows = [[5, 6, 7], [], [8], list(range(10, 20))]
    expected = np.full((4, 12), -1)
    for i, row in enumerate(rows):
        expected[i, :len(row)] = row
    assert np.array_equal(pad_sequences(rows, -1, 12), expected)
    assert pad_sequences([[True, False]], False, 3, bool).tolist() == [[True, False, False]]


def test_dynamic_masking_pads_and_masks_afresh(setup):
    tokenizer, special, _, pairs = setup
    rows = [pairs[i] for i in range(32)]
    collate = PretrainCollator(special, Masker(tokenizer.get_vocab_size(), special),
                               generator=torch.Generator().manual_seed(0))
    batch = collate(rows)
    lengths = torch.tensor([len(r["input_ids"]) for r in rows])
    assert batch["input_ids"].shape == (32, lengths.max())
    assert torch.equal(batch["attention_mask"].sum(1), lengths)
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (batch["input_ids"][padding] == special.pad).all() and (batch["labels"][padding] == IGNORE_INDEX).all()
    assert (batch["token_type_ids"][padding] == 0).all()
    assert batch["sentence_label"].tolist() == [r["sentence_label"] for r in rows]
    for i, row in enumerate(rows):  # unmasked positions are the instance, and the types are carried over
        kept = batch["labels"][i, :len(row["input_ids"])] == IGNORE_INDEX
        assert torch.equal(batch["input_ids"][i, :len(row["input_ids"])][kept], torch.tensor(row["input_ids"])[kept])
        assert batch["token_type_ids"][i, :len(row["input_ids"])].tolist() == row["token_type_ids"]
    assert not torch.equal(collate(rows)["labels"], batch["labels"])  # a new mask every time


def test_pad_to_gives_static_shapes(setup):
    tokenizer, special, _, pairs = setup
    collate = PretrainCollator(special, Masker(tokenizer.get_vocab_size(), special), pad_to=64)
    batch = collate([pairs[0], pairs[1]])
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (2, 64), "token_type_ids": (2, 64), "attention_mask": (2, 64), "labels": (2, 64),
        "sentence_label": (2,)}
    with pytest.raises(ValueError, match=r"an instance has \d+ tokens, more than pad_to=8 \(data.max_seq_len\)"):
        PretrainCollator(special, None, pad_to=8)([pairs[0]])


def test_one_segment_type_gives_every_token_segment_zero(setup):
    """RoBERTa (type_vocab_size 1) pre-trains on segment pairs too (objective mlm): its only segment is 0."""
    _, special, _, pairs = setup
    rows = [pairs[i] for i in range(8)]
    assert any(1 in row["token_type_ids"] for row in rows)  # the instances do carry segment B
    batch = PretrainCollator(special, None, segments=False)(rows)
    assert (batch["token_type_ids"] == 0).all()


def test_static_masks_come_from_the_instances(setup):
    tokenizer, special, corpus, _ = setup
    static, _ = build_instances(corpus, tokenizer, special, max_seq_len=64, seed=0, static_masking={"rate": 0.15})
    rows = [static[i] for i in range(16)]
    batch = PretrainCollator(special, None)(rows)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["labels"][i, :n].tolist() == row["mlm_labels"] and (batch["labels"][i, n:] == -100).all()
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
    assert torch.equal(PretrainCollator(special, None)(rows)["labels"], batch["labels"])  # static: same mask
    with pytest.raises(ValueError, match="static masks"):
        PretrainCollator(special, Masker(tokenizer.get_vocab_size(), special))(rows)


def test_causal_labels_are_the_inputs(setup):
    tokenizer, special, corpus, _ = setup
    blocks, _ = build_instances(corpus, tokenizer, special, packing="causal", max_seq_len=32, seed=0)
    batch = PretrainCollator(special, None, pad_to=40)([blocks[0], blocks[1]])
    assert torch.equal(batch["labels"][:, :32], batch["input_ids"][:, :32])
    assert (batch["labels"][:, 32:] == IGNORE_INDEX).all() and (batch["sentence_label"] == -1).all()


def test_dataloader_with_workers_and_the_data_config(setup):
    tokenizer, special, _, pairs = setup
    masking = CONF.masking
    masker = Masker(tokenizer.get_vocab_size(), special, rate=masking.rate, mode=masking.mode,
                    max_ngram=masking.max_ngram, max_predictions=masking.max_predictions)
    loader = torch.utils.data.DataLoader(pairs, batch_size=16, num_workers=2, shuffle=True,
                                         collate_fn=PretrainCollator(special, masker, pad_to=CONF.max_seq_len))
    batches = list(loader)
    assert sum(len(b["input_ids"]) for b in batches) == len(pairs)
    labels = torch.cat([b["labels"].flatten() for b in batches])
    real = torch.cat([b["attention_mask"].flatten() for b in batches]).sum() - 3 * len(pairs)  # minus CLS/SEP/SEP
    assert abs((labels != IGNORE_INDEX).sum() / real - masking.rate) < 0.02
