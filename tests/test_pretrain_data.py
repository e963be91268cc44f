"""Held-out sets of pre-training: masked like training rows under static masking (BERT), and NSP/SOP probes
balanced 50/50, also in the batches trainer.limit_val_batches reads."""

import pytest
import torch

from plmbench.configuration import compose
from plmbench.data.masking import IGNORE_INDEX
from plmbench.lit.pretrain_data import PretrainData

BATCH, LIMIT = 16, 2  # trainer.batch_size and the limit_val_batches the sweeps use at small scale


@pytest.fixture(scope="module")
def static_data(tmp_path_factory, shared_data):
    """BERT's static masking (stored masks, dupe_factor 1) on ~400 KB of WikiText-2."""
    root = tmp_path_factory.mktemp("pretrain-data")
    corpus = root / "wiki.txt"
    corpus.write_text((shared_data / "corpus/wikitext-2/raw/valid.txt").read_text(encoding="utf-8")[:400_000])
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PLMBENCH_CACHE", str(root / "cache"))
    cfg = compose("pretrain", [
        "model=bert", "objective=mlm_nsp", "size=tiny", "model.vocab_size=1000", "model.max_positions=64",
        "data.max_seq_len=64", "corpus=files", f"corpus.paths={corpus}", "data.val_fraction=0.25",
        "data.masking.static=true", "data.masking.dupe_factor=1", f"trainer.batch_size={BATCH}", "logger=none"])
    data = PretrainData(cfg)
    data.prepare()
    yield data
    monkeypatch.undo()


def test_static_masking_masks_held_out_rows_like_training_rows(static_data):
    assert "mlm_labels" in static_data.train.column_names  # training rows carry their stored masks
    special = torch.tensor(sorted(set(static_data.special.ids())))
    for name, loader in zip(static_data.val, static_data.val_dataloader()):
        batches = list(loader)
        again = list(loader)  # a fixed mask: the next validation scores the same positions
        assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again)), name
        labels = torch.cat([b["labels"].flatten() for b in batches])
        inputs = torch.cat([b["input_ids"].flatten() for b in batches])
        attention = torch.cat([b["attention_mask"].flatten() for b in batches]).bool()
        chosen = labels != IGNORE_INDEX
        candidates = attention & ~torch.isin(torch.where(chosen, labels, inputs), special)
        rate = (chosen.sum() / candidates.sum()).item()
        assert 0.12 < rate < 0.18, (name, rate)  # ~15% of the tokens are labels, not all of them
        assert (inputs[chosen] == static_data.special.mask).float().mean() > 0.7, name  # mostly [MASK]
        assert not (inputs[~chosen] == static_data.special.mask).any(), name  # unlabelled tokens stay as they were


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_probe_sets_are_balanced_also_in_the_batches_read(static_data, task):
    names = list(static_data.val)
    labels = torch.tensor(static_data.val[task]["sentence_label"])
    assert len(labels) > 4 * BATCH and (labels == 0).sum() == (labels == 1).sum()  # chance is exactly 50%
    loader = static_data.val_dataloader()[names.index(task)]
    read = torch.cat([batch["sentence_label"] for _, batch in zip(range(LIMIT), loader)])
    assert len(read) == LIMIT * BATCH and abs(read.float().mean().item() - 0.5) <= 0.05
