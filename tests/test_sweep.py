"""The sweep machinery on a micro grid: lineage hashing, skip and resume, the store, the table and the W&B table."""

import json
import re

import pytest

from plmbench.commands import sweep
from plmbench.configuration import compose
from plmbench.lineage import cell_id
from plmbench.sweep.store import ResultsStore


def test_table4_e128_all_shared_is_table5_sop_row():
    t4 = compose("pretrain", ["experiment=albert_table4", "scale=smoke", "embedding=e128", "sharing=all"])
    t5 = compose("pretrain", ["experiment=albert_table5", "scale=smoke", "objective=mlm_sop"])
    assert cell_id(t4) == cell_id(t5)


@pytest.mark.parametrize("change,same", [
    ("impl.compile=true", True), ("logger=csv", True), ("trainer.progress_bar=none", True),
    ("experiment=albert_table5", True), ("trainer.max_steps=301", False), ("seed=1", False),
    ("data.masking.rate=0.2", False), ("sharing=none", False), ("optim.lr=1e-4", False),
])
def test_cell_id_hashes_what_determines_weights_only(change, same):
    base = ["model=albert", "scale=smoke", "sharing=all", "objective=mlm_sop", "embedding=e128"]
    assert (cell_id(compose("pretrain", base)) == cell_id(compose("pretrain", base + [change]))) is same


def test_plan_counts_shared_cells_once():
    _, parts, cells, _ = sweep.plan(["experiment=albert", "scale=smoke"])
    assert len(parts) == 2 and len(cells) == 10  # 8 (Table 4) + 3 (Table 5) - 1 shared
    # the progress line's total: each cell's own unit ids (1 intrinsic + 5 tasks x 1 seed), none shared
    assert all(len(units) == 6 for units in cells.values()) and len(set().union(*cells.values())) == 60


@pytest.fixture
def micro(tmp_path, monkeypatch, shared_data):
    text = (shared_data / "corpus/wikitext-2/raw/valid.txt").read_text(encoding="utf-8")[:400_000]
    (tmp_path / "wiki.txt").write_text(text, encoding="utf-8")
    for name in ("RUNS", "RESULTS"):
        monkeypatch.setenv(f"PLMBENCH_{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path.parent / "sweep-cache"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return ["experiment=micro", "size=tiny", "model.vocab_size=1000", "model.max_positions=128",
            "data.max_seq_len=64", "corpus=files", f"corpus.paths={tmp_path / 'wiki.txt'}", "data.val_fraction=0.25",
            "trainer.max_steps=6", "trainer.batch_size=8", "trainer.val_check_interval=3",
            "trainer.limit_val_batches=1", "trainer.checkpoint_every_n_steps=3", "trainer.progress_bar=none",
            "sweep.task_source=proxy", "sweep.finetune_overrides=['epochs=1','max_train_examples=32','max_eval_examples=32']",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def test_micro_sweep_end_to_end_then_skips_everything(micro, tmp_path, monkeypatch):
    sweep.main(micro)
    store = ResultsStore(tmp_path / "results" / "micro" / "records.jsonl")
    records = store.records()
    assert len(records) == 4 and all(r["status"] == "ok" for r in records), records
    assert {r["task"] for r in records} == {"pretrain", "sst2"}
    assert len({r["cell_id"] for r in records}) == 2 and len({r["unit_id"] for r in records}) == 4
    assert all(r["seed"] == 0 and r["params"]["backbone_params"] > 0 for r in records)
    # Each record carries its own unit's time: a fine-tuning record its fine-tuning (which contains the training
    # loop's span), not a copy of its cell's pre-training, which it keeps apart under pretrain_costs.
    pretrain = {r["cell_id"]: r for r in records if r["task"] == "pretrain"}
    for record in (r for r in records if r["task"] == "sst2"):
        cell = pretrain[record["cell_id"]]
        assert record["pretrain_costs"]["wall_seconds"] == cell["wall_seconds"] > 0
        assert record["wall_seconds"] >= record["finetune"]["wall_seconds"] > 0
        assert record["wall_seconds"] != cell["wall_seconds"]
    # The learning curve (every validation: steps 3 and 6) and the compute behind the pictures beside the table.
    for record in pretrain.values():
        assert [p["step"] for p in record["curve"]] == [3, 6] and all("mlm_acc" in p for p in record["curve"])
        assert record["curve"][-1]["tokens_seen"] == record["tokens_seen"] > record["curve"][0]["tokens_seen"]
        assert record["pretrain_flops"] > record["tokens_seen"]
    for name in ("curves.png", "compute.png"):
        assert (tmp_path / "results" / "micro" / name).stat().st_size > 10_000
    # One table row per cell: its backbone size (all-shared keeps one layer's weights: the smaller) and its SST-2
    # score of one seed, neither missing nor failed.
    table = (tmp_path / "results" / "micro" / "table.md").read_text()
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in table.splitlines())
            if cells[0] in ("all-shared", "not-shared")}
    assert set(rows) == {"all-shared", "not-shared"}, table
    params = {record["axes"]["sharing"]: record["params"]["backbone_params"] for record in pretrain.values()}
    assert params["all"] < params["none"]
    for label, sharing in (("all-shared", "all"), ("not-shared", "none")):
        size, sst2 = rows[label]
        assert float(size) == pytest.approx(params[sharing] / 1e6, rel=0.01), table
        assert re.fullmatch(r"\d+\.\d \(n=1\)", sst2) and 0 <= float(sst2.split()[0]) <= 100, table
    tables = list((tmp_path / "wandb").glob("offline-run-*/files/media/table/*.table.json"))
    assert tables and len(json.loads(tables[-1].read_text())["data"]) == 2
    images = list(tables[-1].parents[2].glob("media/images/*.png"))
    assert {p.name.split("_png")[0] for p in images} == {"table", "curves", "compute"}

    # A second sweep trains nothing: every unit is in the store and no pre-training or fine-tuning starts.
    from plmbench.lit import finetuning, pretraining

    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was run again")

    monkeypatch.setattr(pretraining, "run_pretraining", refuse)
    monkeypatch.setattr(finetuning, "run_finetuning", refuse)
    sweep.main(micro)
    assert len(store.records()) == 4
