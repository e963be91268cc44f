"""An installed plmbench (issue 18): the wheel carries conf/ and experiments/, runs from any directory without the
clone, and takes a user's own experiment from a folder named by PLMBENCH_CONFIG_PATH.

The wheel is built from a copy of the sources and installed with --no-deps into a temporary folder. Every command
runs with `python -S` and PYTHONPATH=<that folder>:<the venv's site-packages>: -S skips the .pth files, so the
clone's src/ (which the venv's editable install puts on sys.path) is not importable at all, and the conf/ and
experiments/ read are the package's own (checked). Storage (runs/, results/, .cache/, data/) lands where it runs.
27-40 s on this project's 2 cores while other benchmarks ran on them (load 2.4-3.6): part of `make test`.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from plmbench.configuration import CONF_DIR, compose
from plmbench.errors import UserError
from plmbench.paths import shipped
from plmbench.tables.references import experiment_file

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "conf", "experiments")

# ALBERT Table 4's parameter column (millions), as tests/test_describe.py checks it in the source tree.
TABLE4_PARAMS = {
    ("e768", "all"): 31, ("e768", "attention"): 83, ("e768", "ffn"): 57, ("e768", "none"): 108,
    ("e128", "all"): 12, ("e128", "attention"): 64, ("e128", "ffn"): 38, ("e128", "none"): 89,
}

# Two cells of 6 steps, fine-tuned on 32 rows: enough to train, record and render a table.
TINY = ["scale=smoke", "model.vocab_size=1000", "model.max_positions=128", "data.max_seq_len=64", "corpus=files",
        "corpus.paths=text/corpus.txt", "corpus.doc_separator=blank_line", "data.val_fraction=0.25",
        "trainer.max_steps=6", "trainer.batch_size=8", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "trainer.checkpoint_every_n_steps=3", "trainer.progress_bar=none", "logger=csv",
        "sweep.finetune_overrides=['epochs=1','max_train_examples=32','max_eval_examples=32']"]

USER_EMBEDDING = """\
# @package model
embedding_size: 16   # a value plmbench's conf/embedding/ does not have
"""
USER_TASK = """\
# @package task
# SST-2's settings (metric, labels, fine-tuning budget), read from our own files under data/reviews/.
defaults:
  - /task/glue/sst2@_here_
  - _self_
source: local
local:
  train: [reviews/train.tsv]
  validation: [reviews/dev.tsv]
"""
USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /model: albert
  - override /objective: mlm_sop
  - override /embedding: e16
experiment:
  name: sharing_e16
sweep:
  tasks: [reviews]
  task_source: local   # the task's own source: our files, not the smoke scale's WordNet proxy
hydra:
  sweeper:
    params:
      sharing: all,none
"""
USER_PUBLISHED = """\
title: "Sharing at E=16 (our study)"
source: "our lab notebook"
fixed_axes: {model: albert, embedding: e16}
columns: [params, sst2]
rows:
  - label: "E=16 all-shared"
    axes: {sharing: all}
    values: {params: 0.123, sst2: 81.7}
  - label: "E=16 not-shared"
    axes: {sharing: none}
    values: {params: 0.456, sst2: 83.9}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """plmbench built into a wheel from a copy of the sources, then `pip install --no-deps --target`."""
    root = tmp_path_factory.mktemp("install")
    copy = root / "source"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy2(source, copy / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # No build isolation: it would fetch setuptools from the network; the venv's setuptools builds it.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "wheel"),
                    str(copy)], check=True, capture_output=True, text=True)
    wheel = next((root / "wheel").glob("plmbench-*.whl"))
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    assert (site / "plmbench" / "conf" / "pretrain.yaml").is_file()
    assert (site / "plmbench" / "conf" / "task" / "glue" / "sst2.yaml").is_file()
    assert (site / "plmbench" / "experiments" / "albert_table4.yaml").is_file()
    return site


def _run(site: Path, cwd: Path, *args: str, env: dict | None = None, status: int = 0) -> subprocess.CompletedProcess:
    dependencies = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PLMBENCH_", "PYTHON"))}
    full_env = {**base, "PYTHONPATH": os.pathsep.join([str(site), *sorted(dependencies)]), **(env or {})}
    result = subprocess.run([sys.executable, "-S", *args], check=False, cwd=cwd, env=full_env, capture_output=True,
                            text=True)
    assert result.returncode == status, (f"{args}: exit {result.returncode}\n{result.stdout[-3000:]}\n"
                                         f"{result.stderr[-3000:]}")
    return result


def _write_data(where: Path) -> None:
    """A small made-up corpus and SST-2 style TSV files (ours in SST-2's layout, the user's elsewhere)."""
    rng = random.Random(0)
    # 2,000 made-up words, drawn Zipf-like: enough types for a tokenizer to fill model.vocab_size=1000
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(2500)})[:2000]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    documents = ["\n".join(" ".join(rng.choices(words, weights, k=rng.randint(6, 14))).capitalize() + "."
                           for _ in range(rng.randint(4, 9))) for _ in range(300)]
    (where / "text").mkdir()
    (where / "text" / "corpus.txt").write_text("\n\n".join(documents) + "\n")
    good, bad = ["wonderful", "moving", "delightful", "superb"], ["dull", "clumsy", "tedious", "awful"]

    def rows(n):
        lines = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            sentence = " ".join([*rng.choices(words, weights, k=5), rng.choice(good if label else bad)])
            lines.append(f"{sentence}\t{label}")
        return "\n".join(lines) + "\n"

    for folder in (where / "data" / "glue" / "SST-2", where / "data" / "reviews"):
        folder.mkdir(parents=True)
        (folder / "train.tsv").write_text(rows(64))
        (folder / "dev.tsv").write_text(rows(32))


def test_installed_wheel_runs_without_the_clone_and_takes_a_user_folder(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()

    # What runs is the installed copy: its modules, its conf/ and experiments/; the clone's src/ is not on the path.
    probe = _run(installed, work, "-c", "import json, sys, plmbench.configuration as c, plmbench.tables.references"
                 " as r; print(json.dumps([c.__file__, str(c.CONF_DIR), str(r.EXPERIMENTS_DIR), sys.path]))")
    module, conf, experiments, path = json.loads(probe.stdout)
    for where in (module, conf, experiments):
        assert Path(where).is_relative_to(installed), where
    assert not any(Path(p).resolve().is_relative_to(REPO / "src") for p in path if p), path

    # The paper's parameter column of ALBERT Table 4, from the installed configs.
    out = _run(installed, work, "-m", "plmbench", "describe", "experiment=albert_table4", "scale=paper").stdout
    cells = {c["cell"]: c["backbone_params"] / 1e6 for c in map(json.loads, out.splitlines())}
    assert len(cells) == 8
    for (embedding, sharing), published in TABLE4_PARAMS.items():
        assert abs(cells[f"embedding={embedding} sharing={sharing}"] - published) <= 1.0, cells

    # A micro sweep from the installed copy: storage lands where it runs, the table renders.
    _write_data(work)
    _run(installed, work, "-m", "plmbench", "sweep", "experiment=micro", *TINY, "sweep.task_source=local")
    records = [json.loads(line) for line in (work / "results" / "micro" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records), records
    assert {r["task"] for r in records} == {"pretrain", "sst2"}
    assert "all-shared" in (work / "results" / "micro" / "table.md").read_text()
    assert (work / "runs").is_dir() and (work / ".cache" / "plmbench").is_dir()

    # A user's own study, kept in their own folder: a new experiment, embedding option and task (their own data),
    # and the published values beside it in study/experiments/.
    study = tmp_path / "study"
    for relative, text in {"conf/embedding/e16.yaml": USER_EMBEDDING, "conf/task/reviews.yaml": USER_TASK,
                           "conf/experiment/sharing_e16.yaml": USER_EXPERIMENT,
                           "experiments/sharing_e16.yaml": USER_PUBLISHED}.items():
        (study / relative).parent.mkdir(parents=True, exist_ok=True)
        (study / relative).write_text(text)
    user = {"PLMBENCH_CONFIG_PATH": str(study / "conf")}
    _run(installed, work, "-m", "plmbench", "sweep", "experiment=sharing_e16", *TINY, env=user)
    records = [json.loads(line) for line in
               (work / "results" / "sharing_e16" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records), records
    finetuned = [r for r in records if r["task"] == "sst2"]
    assert len(finetuned) == 2 and all(r["task_source"] == "local" for r in finetuned), finetuned
    assert all(r["axes"]["embedding"] == "e16" and r["axes"]["embedding_size"] == 16 for r in records), records
    table = (work / "results" / "sharing_e16" / "table.md").read_text()
    assert "Sharing at E=16 (our study)" in table
    for published in ("81.7", "83.9", "E=16 all-shared", "E=16 not-shared"):
        assert published in table, table

    # The user folder's options are known to the option check, listed beside ours.
    result = _run(installed, work, "-m", "plmbench", "describe", "embedding=e17", env=user, status=2)
    assert "did you mean embedding=e16?" in result.stderr, result.stderr


def test_source_tree_reads_the_repository_folders():
    """An editable install (or PYTHONPATH=src) reads the repository's conf/ and experiments/: edits take effect."""
    assert shipped("conf") == CONF_DIR == REPO / "conf"
    assert shipped("experiments") == REPO / "experiments"


def test_a_user_folder_extends_and_replaces_our_options(tmp_path, monkeypatch):
    conf = tmp_path / "study" / "conf"
    (conf / "embedding").mkdir(parents=True)
    (conf / "embedding" / "e16.yaml").write_text(USER_EMBEDDING)
    (conf / "embedding" / "e128.yaml").write_text("# @package model\nembedding_size: 24\n")  # replaces ours
    (tmp_path / "study" / "experiments").mkdir()
    (tmp_path / "study" / "experiments" / "albert_table4.yaml").write_text(USER_PUBLISHED)
    monkeypatch.setenv("PLMBENCH_CONFIG_PATH", str(conf))
    assert compose("pretrain", ["size=tiny", "embedding=e16"]).model.embedding_size == 16
    assert compose("pretrain", ["size=tiny", "embedding=e128"]).model.embedding_size == 24
    assert compose("pretrain", ["size=tiny", "embedding=full"]).model.embedding_size == 64  # ours still there
    assert experiment_file("albert_table4") == tmp_path / "study" / "experiments" / "albert_table4.yaml"
    assert experiment_file("albert_table5") == REPO / "experiments" / "albert_table5.yaml"
    with pytest.raises(UserError, match="allowed: e128, e16, e768, full"):
        compose("pretrain", ["embedding=e17"])
    monkeypatch.setenv("PLMBENCH_CONFIG_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="PLMBENCH_CONFIG_PATH: .*nowhere is not a folder"):
        compose("pretrain", ["size=tiny"])
