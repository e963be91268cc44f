"""Relaunches and neighbours, with real processes and files: where a run directory may be, where records land under
`hydra.job.chdir=true`, failed units and unreadable checkpoints at a relaunch, and two sweeps on one results folder.
Tiny sizes, as in test_faults.py: BERT-tiny, vocabulary 1000, sequences of 64, one cell of 30 steps, one RTE unit.
"""

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plmbench.configuration import compose
from plmbench.lineage import unit_id
from plmbench.lit.pretraining import run_pretraining
from test_faults import ENV, PRETRAIN, Workspace, slice_corpus, wait_for, write_rte

SHORT = {"trainer.max_steps": "4", "trainer.val_check_interval": "4", "trainer.checkpoint_every_n_steps": "2"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> Path:
    return slice_corpus(shared_data, tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "plmbench-cache"  # the session's: tokenizers, instances (by content)


def overrides(corpus: Path, **changes: str) -> list[str]:
    """PRETRAIN with `changes` ({key: value}, dots as in the override) replacing its values (Hydra refuses a key
    given twice)."""
    values = dict(o.split("=", 1) for o in PRETRAIN) | SHORT | {"corpus.paths": str(corpus)} | changes
    return [f"{key}={value}" for key, value in values.items()]


def pretrain(cwd: Path, cache: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plmbench.cli", "pretrain", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, **ENV, "PLMBENCH_CACHE": str(cache)})


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plmbench: error: "), result.stderr[-3000:]
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ where runs go


def test_job_chdir_keeps_records_and_cells_where_plmbench_runs(corpus, cache, tmp_path):
    """hydra.job.chdir=true moved each job into multirun/<...>/<job>/, and the relative roots with it: cells and
    records landed there and the table read "from 0 records". The roots now stay where the user runs plmbench."""
    space = Workspace(tmp_path, corpus, cache, "chdir", steps=30, grid=False)
    for name in ("PLMBENCH_RUNS", "PLMBENCH_RESULTS"):
        del space.env[name]  # the default roots, runs/ and results/, relative to where plmbench runs
    result = space.run("hydra.job.chdir=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted((r["task"], r["status"]) for r in space.store.records()) == [("pretrain", "ok"), ("rte", "ok")]
    assert len(list((tmp_path / "runs" / "cells").iterdir())) == 1
    scattered = [p for p in (tmp_path / "multirun").rglob("*") if p.name in ("records.jsonl", "cells", "units")]
    assert scattered == []
    assert "from 2 records" in result.stdout, result.stdout[-2000:]


def test_pretrain_refuses_a_folder_of_the_users_files(corpus, cache, tmp_path):
    """hydra.run.dir=<a folder of the user's> overwrote its config.yaml and tokenizer.json."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("learning_rate: 0.1  # my own project's settings\n")
    (mine / "tokenizer.json").write_text('{"my": "vocabulary"}\n')
    before = tree(mine)
    line = one_error_line(pretrain(tmp_path, cache, [*overrides(corpus), f"hydra.run.dir={mine}"]))
    assert line == (f"plmbench: error: hydra.run.dir={mine}: its config.yaml is not a plmbench run's; give a new or "
                    f"empty folder: a run writes config.yaml and tokenizer/ there")
    assert tree(mine) == before and not (mine / ".hydra").exists()  # untouched: Hydra wrote nothing either

    notes = tmp_path / "notes"  # no config.yaml at all
    notes.mkdir()
    (notes / "todo.txt").write_text("read the ALBERT paper\n")
    line = one_error_line(pretrain(tmp_path, cache, [*overrides(corpus), f"hydra.run.dir={notes}"]))
    assert f"hydra.run.dir={notes}: not empty (todo.txt) and not a plmbench run (no config.yaml)" in line
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_pretrain_relaunch_resumes_its_run_and_refuses_another_shape(corpus, cache, tmp_path):
    """A relaunch of the same run resumes it (it may train on to more steps); one with another model shape
    rewrote the run's config.yaml before failing on its checkpoint. Now it is refused before anything is written."""
    run = tmp_path / "run"
    first = pretrain(tmp_path, cache, [*overrides(corpus), f"hydra.run.dir={run}"])
    assert first.returncode == 0, first.stderr[-3000:]
    before = tree(run)

    other = pretrain(tmp_path, cache, [*overrides(corpus, **{"model.num_layers": "2"}), f"hydra.run.dir={run}"])
    line = one_error_line(other)
    assert line == (f"plmbench: error: hydra.run.dir={run}: a plmbench run of another config (model.num_layers: "
                    f"4 -> 2); relaunch it with its own settings (only trainer.max_steps may change), or give this "
                    f"run a new folder")
    assert tree(run) == before  # config.yaml, .hydra/, the checkpoint: byte for byte

    # The resume reads the run's own tokenizer, not the cache's: as if this run's pieces had other ids (a tokenizer
    # trained on another machine or by an older version), which the resumed run must keep.
    own = run / "tokenizer" / "tokenizer.json"
    layout = json.loads(own.read_text())
    vocab = layout["model"]["vocab"]
    vocab["the"], vocab["of"] = vocab["of"], vocab["the"]
    own.write_text(json.dumps(layout))
    again = pretrain(tmp_path, cache, [*overrides(corpus, **{"trainer.max_steps": "6"}), f"hydra.run.dir={run}"])
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["step"] == 6 and metrics["resumed_at_steps"] == [4]
    resumed_vocab = json.loads(own.read_text())["model"]["vocab"]
    assert (resumed_vocab["the"], resumed_vocab["of"]) == (vocab["the"], vocab["of"])


# ------------------------------------------------------------------------------------------ relaunches


def test_unreadable_checkpoint_is_set_aside_and_the_run_restarts(corpus, cache, tmp_path, monkeypatch, caplog):
    """A zero-byte last.ckpt (what a crash can leave) failed every relaunch with a bare EOFError."""
    monkeypatch.setenv("PLMBENCH_CACHE", str(cache))
    cfg = compose("pretrain", overrides(corpus))
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    run_pretraining(cfg, run)
    whole = last.read_bytes()
    for damaged, what in ((b"", "zero bytes"), (whole[: len(whole) // 2], f"{len(whole) // 2} bytes, ")):
        last.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="plmbench.lit.pretraining"):
            metrics = run_pretraining(cfg, run)
        assert metrics["status"] == "finished" and metrics["step"] == 4 and metrics["resumed_at_steps"] == []
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4
        aside = max(last.parent.glob("last.ckpt.corrupt-*"), key=lambda p: p.stat().st_mtime_ns)
        assert aside.read_bytes() == damaged  # kept for a look, beside the new checkpoint
        assert f"{last}: unreadable ({what}" in caplog.text
        assert f"set aside as {aside.name}; the run restarts from step 0" in caplog.text
    assert len(list(last.parent.glob("last.ckpt.corrupt-*"))) == 2


def test_relaunch_retries_failed_units_unless_told_not_to(corpus, cache, tmp_path):
    """A failed unit was final: after the cause was fixed (the disk freed, a file put back) a relaunch trained
    nothing and the table stayed "failed"; a zero-byte checkpoint in a finished cell failed every new unit."""
    space = Workspace(tmp_path, corpus, cache, "retry", steps=30, grid=False)
    shutil.rmtree(tmp_path / "data" / "glue")  # the task's files are missing: its unit fails
    first = space.run()
    assert first.returncode == 0, first.stderr[-3000:]
    assert [(r["task"], r["status"]) for r in space.store.records()] == [("pretrain", "ok"), ("rte", "failed")]

    write_rte(tmp_path / "data")  # the files are back
    kept = space.run("sweep.retry_failed=false")
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert "[sweep] 1 failed unit(s) kept failed (sweep.retry_failed=false)" in kept.stdout
    assert len(space.store.records()) == 2

    again = space.run()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[sweep] 1 failed unit(s) run again (sweep.retry_failed=false keeps them failed)" in again.stdout
    records = space.store.records()
    assert [(r["task"], r["status"]) for r in records] == [("pretrain", "ok"), ("rte", "failed"), ("rte", "ok")]
    assert records[1]["unit_id"] == records[2]["unit_id"]  # the same unit, retried; the table reads the latest

    # A zero-byte checkpoint in the finished cell: a new unit (seed 1) needs it, so the cell trains again.
    (cell,) = (tmp_path / "runs" / "cells").iterdir()
    last = cell / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    more = space.run("sweep.seeds=[0,1]")
    assert more.returncode == 0, more.stderr[-3000:]
    assert f"{last}: unreadable (zero bytes); set aside as last.ckpt.corrupt-" in more.stdout + more.stderr
    new = space.store.records()[3:]
    assert [(r["task"], r["seed"], r["status"]) for r in new] == [("rte", 1, "ok")], new
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 30
    assert json.loads((cell / "metrics.json").read_text())["resumed_at_steps"] == []


# ------------------------------------------------------------------------------------------ two sweeps


@contextlib.contextmanager
def holding(folder: Path):
    """This test process holds `folder`'s lock, as another sweep running that cell or unit would."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def planned_units(space: Workspace) -> dict[str, list[str]]:
    """{cell id: its unit ids}, as the sweep plans them with the workspace's configs."""
    code = ("import json, sys; from plmbench.commands.sweep import plan; "
            "print(json.dumps({c: sorted(u) for c, u in plan(sys.argv[1:])[2].items()}))")
    out = subprocess.run([sys.executable, "-c", code, f"experiment={space.name}"], cwd=space.root, env=space.env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cell_or_unit_another_process_holds_is_skipped_then_picked_up(corpus, cache, tmp_path):
    space = Workspace(tmp_path, corpus, cache, "held", steps=30, grid=False)
    ((cell, units),) = planned_units(space).items()
    pretraining = unit_id(cell, {"name": "pretrain"}, 0, {})
    (task_unit,) = set(units) - {pretraining}
    cell_dir = tmp_path / "runs" / "cells" / cell

    with holding(cell_dir):
        skipped = space.run()
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert (f"[sweep] cell {cell}: held by another process (pid {os.getpid()}); skipped, a later relaunch runs it"
            in skipped.stdout), skipped.stdout[-2000:]
    assert space.store.records() == [] and sorted(p.name for p in cell_dir.iterdir()) == [".lock"]  # not written

    with holding(tmp_path / "runs" / "units" / task_unit):
        partly = space.run()
    assert partly.returncode == 0, partly.stderr[-3000:]
    assert f"[sweep] unit {task_unit} (glue/rte, seed 0): held by another process (pid {os.getpid()})" in partly.stdout
    assert [r["unit_id"] for r in space.store.records()] == [pretraining]

    final = space.run()
    assert final.returncode == 0, final.stderr[-3000:]
    records = space.store.records()
    assert [r["unit_id"] for r in records] == [pretraining, task_unit] and all(r["status"] == "ok" for r in records)


def test_two_sweeps_on_one_results_folder_train_each_unit_once(corpus, cache, tmp_path):
    """Two sweeps on one results folder trained every unit twice into the same cell folder (8 records for 4
    units). The second, started while the first trains its first cell, now skips what the first holds."""
    space = Workspace(tmp_path, corpus, cache, "twice", steps=120, grid=False)
    experiment = tmp_path / "conf" / "experiment" / "twice.yaml"
    experiment.write_text(experiment.read_text() + "hydra:\n  sweeper:\n    params:\n      optim.lr: 5.0e-3,4.0e-3\n")
    cells = tmp_path / "runs" / "cells"
    first = space.launch("first.log")
    wait_for(lambda: any(cells.glob("*/checkpoints/last.ckpt")), first, "checkpoint")  # it is in a cell
    second = space.launch("second.log")
    statuses = first.wait(600), second.wait(600)
    logs = {name: (tmp_path / name).read_text() for name in ("first.log", "second.log")}
    assert statuses == (0, 0), {name: text[-3000:] for name, text in logs.items()}
    records = space.store.records()
    units = [r["unit_id"] for r in records]
    assert len(units) == 4 and len(set(units)) == 4 and all(r["status"] == "ok" for r in records), records
    for metrics in (json.loads(path.read_text()) for path in cells.glob("*/metrics.json")):
        assert metrics["status"] == "finished" and metrics["step"] == 120
        assert metrics["resumed_at_steps"] == []  # one process trained each cell from start to end
