"""The same seed and config give the same numbers on CPU: pre-training losses and validation, fine-tuning metrics
and their per-epoch history. A different seed gives different numbers, so the comparisons can fail."""

import pytest

from plmbench.configuration import compose
from plmbench.lit.finetuning import run_finetuning
from plmbench.lit.pretraining import run_pretraining
from test_faults import PRETRAIN, slice_corpus, write_rte

SHORT = [*PRETRAIN, "trainer.max_steps=12", "trainer.val_check_interval=6", "trainer.checkpoint_every_n_steps=6"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("determinism")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLMBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "plmbench-cache"))
        yield {"corpus": slice_corpus(shared_data, root), "data": write_rte(root / "tasks")}


def test_pretraining_twice_gives_identical_metrics(inputs, tmp_path):
    overrides = [*SHORT, f"corpus.paths={inputs['corpus']}"]
    first = run_pretraining(compose("pretrain", overrides), tmp_path / "a")
    second = run_pretraining(compose("pretrain", overrides), tmp_path / "b")
    for key in ("step", "first_train_loss", "last_train_loss", "validation", "tokens_seen", "instances"):
        assert first[key] == second[key], key
    other = run_pretraining(compose("pretrain", [*overrides, "seed=1"]), tmp_path / "c")
    assert other["last_train_loss"] != first["last_train_loss"]


def finetune(inputs, run_dir, seed: int) -> dict:
    cfg = compose("finetune", [
        "task=glue/rte", "task.source=local", f"data_dir={inputs['data']}", "init=random", "model=bert", "size=tiny",
        "model.vocab_size=1000", "model.max_positions=64", "corpus=files", f"corpus.paths={inputs['corpus']}",
        "epochs=2", "max_train_examples=32", "max_eval_examples=32", "task.batch_size=8", "task.max_length=64",
        "task.lr=1e-3", "logger=none", "trainer.progress_bar=none", f"seeds=[{seed}]"])
    return run_finetuning(cfg, run_dir)


def test_finetuning_twice_gives_identical_metrics_and_records_its_seed(inputs, tmp_path):
    first, second = finetune(inputs, tmp_path / "a", 0), finetune(inputs, tmp_path / "b", 0)
    for key in ("best", "best_epoch", "primary", "history", "lr"):
        assert first[key] == second[key], key
    assert first["seed"] == 0 and first["seeds"] == [0]
    other = finetune(inputs, tmp_path / "c", 1)
    assert other["seed"] == 1
    assert [e["train_loss"] for e in other["history"]] != [e["train_loss"] for e in first["history"]]
