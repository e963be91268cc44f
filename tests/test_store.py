"""The results store: durable appends, tolerance of a killed write, repair, failure on an unwritable path, secrets."""

import json
import logging
import multiprocessing
import os
import resource
import signal

import pytest

from plmbench.safety import drop_secrets, is_secret_key
from plmbench.sweep.store import ResultsStore, StoreError


def record(unit: str, status: str = "ok", **extra) -> dict:
    return {"experiment": "albert", "unit_id": unit, "status": status, "metrics": {"accuracy": 0.5}, **extra}


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "albert" / "records.jsonl")


def test_append_and_read_back(store):
    store.append(record("a"))
    store.append(record("b", "failed", error="boom"))
    store.append(record("c", "running"))
    store.append(record("a", metrics={"accuracy": 0.7}))  # a retried unit: the later record wins
    assert [r["unit_id"] for r in store.records()] == ["a", "b", "c", "a"]
    assert store.completed_units() == {"a", "b"}
    assert store.latest("a")["metrics"] == {"accuracy": 0.7}
    assert store.latest("zzz") is None
    lines = store.path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["unit_id"] for line in lines)


def test_missing_store_reads_empty(tmp_path):
    assert ResultsStore(tmp_path / "none" / "records.jsonl").records() == []


def test_killed_write_is_skipped_then_repaired(store, caplog):
    store.append(record("a"))
    store.append(record("b"))
    full = json.dumps(record("c")) + "\n"
    with open(store.path, "a") as handle:
        handle.write(full[: len(full) // 2])  # the process died half-way through its write
    with caplog.at_level(logging.WARNING):
        assert [r["unit_id"] for r in store.records()] == ["a", "b"]
    assert "skipped 1 unreadable line" in caplog.text and str(store.path) in caplog.text
    assert store.skipped_lines == [3]

    store.append(record("d"))  # must not be glued onto the partial line
    assert [r["unit_id"] for r in store.records()] == ["a", "b", "d"]

    before = store.path.read_text().splitlines()
    assert store.repair() == 1
    after = store.path.read_text().splitlines()
    assert after == [before[0], before[1], before[3]]  # good lines kept byte for byte
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [r["unit_id"] for r in store.records()] == ["a", "b", "d"]
    assert "unreadable" not in caplog.text
    assert store.repair() == 0


def test_unwritable_location_is_one_clear_error(tmp_path, store):
    store.append(record("a"))
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a regular file where the results directory should be")
    with pytest.raises(StoreError) as caught:
        ResultsStore(blocker / "albert" / "records.jsonl").append(record("x"))
    message = str(caught.value)
    assert "\n" not in message and str(blocker) in message and "ENOTDIR" in message
    assert [r["unit_id"] for r in store.records()] == ["a"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_one_clear_error(store):
    store.append(record("a"))
    os.chmod(store.path.parent, 0o500)
    os.chmod(store.path, 0o400)
    try:
        with pytest.raises(StoreError, match="EACCES"):
            store.append(record("b"))
        assert [r["unit_id"] for r in store.records()] == ["a"]
    finally:
        os.chmod(store.path.parent, 0o700)
        os.chmod(store.path, 0o600)


def test_disk_full_leaves_earlier_records_intact(store):
    """A write cut short by a file size limit (as by a full disk) is taken back; the store stays readable."""
    store.append(record("a"))
    store.append(record("b"))
    before = store.path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG / a short write instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, hard))
    try:
        with pytest.raises(StoreError) as caught:
            store.append(record("big", blob="x" * 10_000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(store.path) in str(caught.value) and "\n" not in str(caught.value)
    assert store.path.read_bytes() == before
    store.append(record("c"))
    assert [r["unit_id"] for r in store.records()] == ["a", "b", "c"]


def _append_many(path: str, worker: int) -> None:
    store = ResultsStore(path)
    for i in range(50):
        store.append(record(f"{worker}-{i}", blob="y" * 5000))  # large lines: interleaving would show


def test_parallel_appends_do_not_interleave(store):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(store.path), w)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(30)
    assert all(p.exitcode == 0 for p in workers)
    assert len(store.records()) == 150 and store.skipped_lines == []


def test_secrets_are_dropped_at_any_depth(store):
    store.append(record("a", config={
        "logger": {"kind": "wandb", "api_key": "SECRET1", "WANDB_API_KEY": "SECRET2"},
        "hub": {"hfToken": "SECRET3", "auth": {"password": "SECRET4"}},
        "steps": [{"client_secret": "SECRET5", "lr": 1e-3}],
        "model": {"tokenizer": "wordpiece", "max_tokens": 512}}, tokens_seen=1000))
    text = store.path.read_text()
    assert "SECRET" not in text
    saved = store.records()[0]
    assert saved["config"]["model"] == {"tokenizer": "wordpiece", "max_tokens": 512}  # not secrets
    assert saved["config"]["logger"] == {"kind": "wandb"} and saved["config"]["steps"] == [{"lr": 1e-3}]
    assert saved["tokens_seen"] == 1000


def test_secret_key_words():
    assert all(is_secret_key(k) for k in ("key", "API_KEY", "accessToken", "db-password", "Secret", "apikey"))
    assert not any(is_secret_key(k) for k in ("tokenizer", "tokens_per_second", "monkey_patch", "keyboard",
                                                   "train_flops_per_token", "flops_per_token_backbone"))
    assert is_secret_key("per_token_secret") and is_secret_key("token_per")
    assert drop_secrets({"a": [{"token": 1}, 2], "b": (3,)}) == {"a": [{}, 2], "b": [3]}


def test_a_record_needs_a_unit_id(store):
    with pytest.raises(ValueError, match="unit_id"):
        store.append({"status": "ok"})
