"""Faults with real processes: `plmbench pretrain` and `plmbench sweep` killed with SIGKILL and relaunched, a NaN
loss, a results store that cannot be written. Tiny sizes: BERT-tiny, vocabulary 1000, sequences of 64, a 400 KB
slice of WikiText-2, a two-cell grid with one fine-tuning task of 48 rows.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from plmbench.configuration import compose
from plmbench.lit.pretraining import run_pretraining
from plmbench.sweep.store import ResultsStore, StoreError

REPO = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false"}
PRETRAIN = ["model=bert", "objective=mlm", "size=tiny", "model.vocab_size=1000", "model.max_positions=64",
            "data.max_seq_len=64", "corpus=files", "data.val_fraction=0.25", "trainer.batch_size=16",
            "trainer.max_steps=40", "trainer.val_check_interval=20", "trainer.limit_val_batches=2",
            "trainer.checkpoint_every_n_steps=10", "trainer.progress_bar=none", "optim.lr=5e-3", "logger=none"]

# A sweep grid of two cells: an absurd learning rate (NaN at its second step) first, then a sane one.
EXPERIMENT = """# @package _global_
defaults:
  - override /model: bert
  - override /objective: mlm
  - override /size: tiny
  - override /corpus: files
  - override /logger: {logger}
experiment: {{name: {name}, results: {name}}}
model: {{vocab_size: 1000, max_positions: 64}}
data: {{max_seq_len: 64, val_fraction: 0.25}}
corpus: {{paths: {corpus}}}
trainer: {{max_steps: {steps}, batch_size: 16, val_check_interval: 30, limit_val_batches: 2,
          checkpoint_every_n_steps: 10, progress_bar: none}}
optim: {{lr: 5.0e-3, warmup_ratio: 0.1}}
sweep:
  tasks: [glue/rte]
  seeds: [0]
  task_source: local
  finetune_overrides: [data_dir={data}, epochs=1, max_train_examples=32, max_eval_examples=32,
                       task.batch_size=16, task.max_length=64]
{grid}"""
GRID = "hydra:\n  sweeper:\n    params:\n      optim.lr: 1.0e30,5.0e-3\n"
REFERENCE = """title: "{name}: a test grid (no published reference)"
source: "none: a plmbench test grid"
columns: [params, mlm]
rows:
  - {{label: bert, axes: {{model: bert}}, values: {{params: null, mlm: null}}}}
"""


# ------------------------------------------------------------------------------------------ shared set-up


def write_rte(folder: Path) -> Path:
    """A tiny RTE in the GLUE layout: 48 train and 32 dev pairs of short real sentences."""
    words = ["the", "a", "dog", "cat", "bird", "man", "woman", "runs", "sleeps", "eats", "big", "small", "red",
             "blue", "house", "tree", "park", "city"]
    rte = folder / "glue" / "RTE"
    rte.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", 48), ("dev", 32)):
        lines = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(rows):
            a = " ".join(words[(i * k) % len(words)] for k in range(1, 7)).capitalize() + "."
            b = " ".join(words[(i + k * 3) % len(words)] for k in range(1, 6)).capitalize() + "."
            lines.append(f"{i}\t{a}\t{b}\t{'entailment' if i % 2 else 'not_entailment'}")
        (rte / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def slice_corpus(shared_data: Path, folder: Path) -> Path:
    path = folder / "wiki.txt"
    path.write_text((shared_data / "corpus/wikitext-2/raw/valid.txt").read_text(encoding="utf-8")[:400_000],
                    encoding="utf-8")
    return path


class Workspace:
    """A folder that plmbench runs in as a user's checkout: its own conf/ (the repo's plus a test experiment),
    experiments/, runs/, results/, W&B and Hydra outputs, and the session's shared cache."""

    def __init__(self, root: Path, corpus: Path, cache: Path, name: str, steps: int = 60, grid: bool = True,
                 logger: str = "none"):
        self.root, self.name = root, name
        shutil.copytree(REPO / "conf", root / "conf")
        data = write_rte(root / "data")
        (root / "conf" / "experiment" / f"{name}.yaml").write_text(EXPERIMENT.format(
            logger=logger, name=name, corpus=corpus, steps=steps, data=data, grid=GRID if grid else ""))
        shutil.copytree(REPO / "experiments", root / "experiments")
        (root / "experiments" / f"{name}.yaml").write_text(REFERENCE.format(name=name))
        self.env = {**os.environ, **ENV, "WANDB_DIR": str(root), "PLMBENCH_CONF": str(root / "conf"), "PLMBENCH_CACHE": str(cache),
                    "PLMBENCH_EXPERIMENTS": str(root / "experiments"), "PLMBENCH_RUNS": str(root / "runs"),
                    "PLMBENCH_RESULTS": str(root / "results")}

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.root / "results" / self.name / "records.jsonl")

    def command(self, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "plmbench.cli", "sweep", f"experiment={self.name}", *overrides]

    def launch(self, log: str, *overrides: str, **env) -> subprocess.Popen:
        with open(self.root / log, "w") as out:
            return subprocess.Popen(self.command(*overrides), cwd=self.root, env={**self.env, **env}, stdout=out,
                                    stderr=subprocess.STDOUT)

    def run(self, *overrides: str, timeout: float = 300, preexec_fn=None, **env) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*overrides), cwd=self.root, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=preexec_fn, check=False)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended (status {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL


def lines_of(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> Path:
    return slice_corpus(shared_data, tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "plmbench-cache"  # the session's: tokenizers, instances (by content)


# ------------------------------------------------------------------------------------------ pre-training


def pretrain(run_dir: Path, corpus: Path, cache: Path, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "plmbench.cli", "pretrain", *PRETRAIN, f"corpus.paths={corpus}",
            f"hydra.run.dir={run_dir}"]
    with open(log, "w") as out:  # a file, not a pipe: nobody reads while we wait for a checkpoint
        return subprocess.Popen(args, cwd=run_dir.parent, env={**os.environ, **ENV, "PLMBENCH_CACHE": str(cache)},
                                stdout=out, stderr=subprocess.STDOUT)


def test_killed_pretraining_resumes_at_its_checkpoint_bit_identical(corpus, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PLMBENCH_CACHE", str(cache))
    expected = run_pretraining(compose("pretrain", [*PRETRAIN, f"corpus.paths={corpus}"]), tmp_path / "uninterrupted")

    run_dir = tmp_path / "killed"
    first = pretrain(run_dir, corpus, cache, tmp_path / "first.log")
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_for(last.exists, first, "checkpoint")
    kill(first)
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < step < 40  # killed mid-way, after a checkpoint

    again = pretrain(run_dir, corpus, cache, tmp_path / "again.log")
    again.wait(300)
    output = (tmp_path / "again.log").read_text()
    assert again.returncode == 0, output[-3000:]
    assert f"resuming from {last}" in output
    assert "GPU available" not in output and "Tip:" not in output  # no per-run Lightning banners (issue 14 item 7)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["resumed_at_steps"] == [step] and expected["resumed_at_steps"] == []
    # Same batches, masks and dropout after the restart: on CPU (one thread, as the uninterrupted run in this
    # process) the numbers are bit-identical.
    for key in ("step", "first_train_loss", "last_train_loss", "validation", "tokens_seen"):
        assert resumed[key] == expected[key], key


def test_last_checkpoint_holds_the_final_step_also_after_a_copied_resume(corpus, cache, tmp_path, monkeypatch):
    """The final step (12: after the validation at 10, before a periodic save) went to last-v1.ckpt, which
    fine-tuning, export and resume never read; so did every save of a run directory copied and resumed."""
    monkeypatch.setenv("PLMBENCH_CACHE", str(cache))
    steps = ["trainer.val_check_interval=5", "trainer.checkpoint_every_n_steps=100"]

    def run(run_dir: Path, max_steps: int) -> dict:
        cfg = compose("pretrain", [*PRETRAIN, f"corpus.paths={corpus}", *steps, f"trainer.max_steps={max_steps}"])
        metrics = run_pretraining(cfg, run_dir)
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
        saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert saved["global_step"] == metrics["step"] == max_steps
        return metrics

    run(tmp_path / "first", 12)
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    assert run(tmp_path / "copy", 16)["resumed_at_steps"] == [12]


def test_sigterm_stops_pretraining_with_143_one_line_and_a_checkpoint_of_that_step(corpus, cache, tmp_path):
    """SIGTERM (SLURM, Docker, `timeout`) ended a run within 2 s with exit status 0, no message, no metrics.json:
    a scheduler counted it a success. Now: exit 143, one line with the step, that step saved, and a relaunch
    resumes from it."""
    run_dir = tmp_path / "run"
    many = [*PRETRAIN, f"corpus.paths={corpus}", f"hydra.run.dir={run_dir}", "trainer.max_steps=100000",
            "trainer.val_check_interval=100000", "trainer.checkpoint_every_n_steps=5"]
    env = {**os.environ, **ENV, "PLMBENCH_CACHE": str(cache)}
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "plmbench.cli", "pretrain", *many], cwd=tmp_path,
                                   env=env, stdout=out, stderr=err)
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_for(last.exists, process, "checkpoint")  # it is training
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 143, (tmp_path / "err.log").read_text()[-3000:]
    lines = (tmp_path / "err.log").read_text().strip().splitlines()  # before it: progress bars of data prep
    line = lines[-1]
    assert line.startswith("plmbench: pretrain stopped by SIGTERM at step "), lines[-5:]
    assert sum("plmbench:" in other for other in lines) == 1 and "Traceback" not in "".join(lines)
    step = int(line.split("at step ")[1].split()[0])
    assert f"of 100000 in {run_dir} (checkpoint saved at this step)" in line
    assert line.endswith("; relaunch the same command to resume from its checkpoint")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == step > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "stopped" and metrics["step"] == step and metrics["stopped_by"] == "SIGTERM"

    many[many.index("trainer.max_steps=100000")] = f"trainer.max_steps={step + 3}"
    again = subprocess.run([sys.executable, "-m", "plmbench.cli", "pretrain", *many], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["status"] == "finished" and resumed["resumed_at_steps"] == [step] and resumed["step"] == step + 3


def test_failed_checkpoint_write_keeps_the_previous_file_without_root(tmp_path):
    """The same guarantee where no tmpfs can be mounted: a file size limit (RLIMIT_FSIZE) makes the real write
    fail part-way, in a child process; the previous checkpoint stays byte for byte and no partial file is left."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"global_step": 5, "w": torch.zeros(10)}, last)
    before = last.read_bytes()
    child = f"""
import resource, signal, torch
from plmbench.lit.checkpoints import AtomicCheckpointIO, CheckpointWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write (EFBIG) instead of a killing signal
resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before)}, resource.RLIM_INFINITY))
try:
    AtomicCheckpointIO().save_checkpoint({{"global_step": 10, "w": torch.zeros(100_000)}}, {str(last)!r})
except CheckpointWriteError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{last}: cannot write the checkpoint of step 10: File too large (EFBIG)" in result.stdout
    assert "the previous checkpoint is kept" in result.stdout
    assert last.read_bytes() == before and sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


@pytest.fixture
def small_disk(tmp_path):
    """A real, small file system (tmpfs) at tmp_path/disk: a full disk, not a simulated error. Needs root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    yield disk, resize
    subprocess.run(["umount", str(disk)], check=False)


def test_full_disk_never_truncates_a_checkpoint(corpus, cache, tmp_path, small_disk):
    """The save wrote a temporary file in /tmp and copied it over last.ckpt: a disk filling up during the copy
    left a truncated last.ckpt, which a relaunch then failed to load. Now the write goes to a temporary file in
    the checkpoint's own folder, swapped in only when whole."""
    disk, resize = small_disk
    steps = [*PRETRAIN, f"corpus.paths={corpus}", "trainer.max_steps=10", "trainer.val_check_interval=10",
             "trainer.checkpoint_every_n_steps=5"]
    env = {**os.environ, **ENV, "PLMBENCH_CACHE": str(cache)}

    def pretrain_on(run_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "plmbench.cli", "pretrain", *steps, f"hydra.run.dir={run_dir}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)

    probe = pretrain_on(tmp_path / "probe")  # the size of one checkpoint of this model
    assert probe.returncode == 0, probe.stderr[-3000:]
    size = (tmp_path / "probe" / "checkpoints" / "last.ckpt").stat().st_size
    run_dir, last = disk / "run", disk / "run" / "checkpoints" / "last.ckpt"

    def outcome(result: subprocess.CompletedProcess) -> str:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and lines[-1].startswith("plmbench: error: "), result.stderr[-3000:]
        assert "Traceback" not in result.stderr and not list(last.parent.glob(".*partial*"))  # nothing left over
        return lines[-1]

    # A disk with room for half a checkpoint: the first save fails and leaves no file (it left a truncated one).
    resize(size * 3 // 2)
    (disk / "filler").write_bytes(b"\0" * size)
    line = outcome(pretrain_on(run_dir))
    assert f"{last}: cannot write the checkpoint of step 5: No space left on device (ENOSPC)" in line, line
    assert line.endswith("there is no earlier checkpoint") and not last.exists()

    # Room for one checkpoint: step 5 is saved, step 10 cannot be, and step 5 stays whole.
    (disk / "filler").unlink()
    line = outcome(pretrain_on(run_dir))
    assert f"{last}: cannot write the checkpoint of step 10: No space left on device" in line, line
    assert line.endswith("the previous checkpoint is kept")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5

    # Space freed: the relaunch resumes from step 5 and finishes.
    resize(size * 3)
    again = pretrain_on(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_at_steps"] == [5]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 10


# ------------------------------------------------------------------------------------------ sweeps


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory, corpus, cache) -> dict:
    """The grid run three times: killed inside the second cell's pre-training (after a checkpoint), killed between
    units (just after a record), then, after a record torn by a killed write, run to the end."""
    space = Workspace(tmp_path_factory.mktemp("sweep"), corpus, cache, "faults")
    cells = space.root / "runs" / "cells"

    first = space.launch("first.log")
    wait_for(lambda: any(cells.glob("*/checkpoints/last.ckpt")), first, "checkpoint")
    kill(first)
    killed_at = sum(1 for _ in lines_of(space.store.path))

    # The NaN cell fails again whenever it is retried: these relaunches keep its failed units failed
    # (sweep.retry_failed=false), so that the second is killed just after a record of the sane cell.
    second = space.launch("second.log", "sweep.retry_failed=false")
    wait_for(lambda: space.store.path.exists() and len(lines_of(space.store.path)) > killed_at, second, "record")
    kill(second)

    whole = lines_of(space.store.path)[-1]
    with open(space.store.path, "ab") as records:
        records.write(whole[: len(whole) // 2])  # a write killed half-way: the line is cut, no newline
    final = space.run("sweep.retry_failed=false")
    return {"space": space, "killed_at": killed_at, "final": final}


def test_killed_sweep_loses_and_duplicates_no_record(killed_sweep):
    space, final = killed_sweep["space"], killed_sweep["final"]
    assert final.returncode == 0, final.stderr[-3000:]
    store = space.store
    records = store.records()
    units = [record["unit_id"] for record in records]
    assert len(units) == 4 and len(set(units)) == 4  # 2 cells x (pre-training + 1 task): each exactly once
    assert store.skipped_lines == []  # the relaunch repaired the store: the torn line is gone
    raw = space.store.path.read_bytes()
    assert raw.endswith(b"\n") and sum(1 for line in lines_of(space.store.path)) == 4
    assert store.repair() == 0 and [r["unit_id"] for r in store.records()] == units  # nothing left to repair
    assert all(isinstance(r["seed"], int) for r in records)  # the seed of every unit is on its record


def test_killed_sweep_resumes_its_cell_from_the_checkpoint(killed_sweep):
    space = killed_sweep["space"]
    finished = [json.loads(path.read_text()) for path in (space.root / "runs" / "cells").glob("*/metrics.json")]
    assert len(finished) == 1  # the NaN cell never finishes
    metrics = finished[0]
    assert metrics["status"] == "finished" and metrics["step"] == 60
    assert len(metrics["resumed_at_steps"]) == 1 and 0 < metrics["resumed_at_steps"][0] < 60


def test_nan_loss_fails_its_cell_and_the_sweep_goes_on(killed_sweep):
    records = killed_sweep["space"].store.records()
    failed = [r for r in records if r["status"] == "failed"]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(failed) == 2 and len(ok) == 2 and len({r["cell_id"] for r in failed}) == 1
    pretraining = next(r for r in failed if r["task"] == "pretrain")
    assert pretraining["error"].startswith("NonFiniteLossError: non-finite training loss (nan) at step ")
    finetuning = next(r for r in failed if r["task"] != "pretrain")
    assert finetuning["error"] == f"pre-training failed: {pretraining['error']}"
    assert {r["task"] for r in ok} == {"pretrain", "rte"} and ok[1]["metrics"]["accuracy"] >= 0
    assert (killed_sweep["space"].root / "results" / "faults" / "table.md").exists()  # the sweep reached its end


def test_unwritable_results_directory_is_one_line_before_compute(tmp_path):
    """What a sweep calls before its grid runs (commands/sweep.py), so that nothing is trained for nowhere."""
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the results directory should be")  # ENOTDIR, even for root
    with pytest.raises(StoreError) as caught:
        ResultsStore(blocker / "faults" / "records.jsonl").check_writable()
    assert "\n" not in str(caught.value) and str(blocker) in str(caught.value) and "ENOTDIR" in str(caught.value)
    fine = ResultsStore(tmp_path / "results" / "faults" / "records.jsonl")
    fine.check_writable()
    assert fine.records() == [] and fine.path.read_bytes() == b""


def test_full_disk_during_a_sweep_keeps_earlier_records(killed_sweep, tmp_path):
    """A file size limit cuts the first new record short, as a full disk would; the sweep must stop with one line
    naming the store, the records already there must stay byte for byte."""
    space = killed_sweep["space"]
    results = tmp_path / "results"
    shutil.copytree(space.root / "results", results)
    store = ResultsStore(results / "faults" / "records.jsonl")
    store.append({"unit_id": "padding", "status": "ok", "blob": "x" * 60_000})  # larger than any other file the
    before = store.path.read_bytes()  # relaunch writes (configs, logs, a tokenizer), smaller than store + a record

    def file_size_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write instead of a killing signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 200, resource.RLIM_INFINITY))

    result = space.run("sweep.seeds=[0,1]", preexec_fn=file_size_limit, PLMBENCH_RESULTS=str(results))
    assert store.path.read_bytes() == before
    # A StoreError in a cell job stops the whole sweep at once (exit 2, one line), not just that Hydra job while
    # every other cell runs on (commands/sweep.py's _cell_job reports it as a user error).
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot append to {store.path}" in lines[0], result.stderr[-2000:]
