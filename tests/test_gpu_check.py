"""`make gpu-check` on a CPU: the same three parts as on a GPU (MFU of BERT and ALBERT, ours and HF; the speed
paths against fp32; a short albert_table5 sweep through `plmbench sweep`), at tiny sizes, in a real process."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO  # the checkout: make and the module run from its root
from plmbench.bench.sweep_check import sweep_overrides
from plmbench.commands import gpu_check


def wikitext(path, articles: int = 60):
    """A WikiText-layout file (' = Title = ' starts an article) of varied short sentences: the sweep's corpus."""
    words = ["the", "river", "city", "king", "ship", "garden", "letter", "storm", "winter", "road", "mother",
             "music", "army", "bridge", "island", "church", "farmer", "doctor", "market", "forest"]
    verbs = ["crossed", "built", "found", "lost", "saw", "painted", "opened", "followed", "described", "remembered"]
    lines = []
    for a in range(articles):
        lines += [f" = Article {a} = ", ""]
        for p in range(4):
            sentences = [f"The {words[(a + 3 * p + s) % 20]} {verbs[(a * s + p) % 10]} the "
                         f"{words[(a * 7 + s * 5 + p) % 20]} in {1800 + a * 3 + s} ." for s in range(5)]
            lines += [" " + " ".join(sentences), ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gpu_check_cpu_profile_writes_one_report(tmp_path):
    out = tmp_path / "out"
    corpus = wikitext(tmp_path / "corpus.txt")
    env = {**os.environ, "PLMBENCH_RUNS": str(tmp_path / "runs"), "PLMBENCH_RESULTS": str(tmp_path / "results"),
           "PLMBENCH_CACHE": str(tmp_path / "cache"), "PLMBENCH_DATA": str(tmp_path / "data")}
    command = [sys.executable, "-m", "plmbench.commands.gpu_check", "profile=cpu", f"out={out}", "threads=1",
               f"corpus_text={corpus}"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["meta"]["profile"] == "cpu"

    rows = report["mfu"]["rows"]
    assert {(r["model"], r["objective"], r["seq"]) for r in rows} == {
        ("bert", "mlm_nsp", 32), ("bert", "mlm_nsp", 64), ("albert", "mlm_sop", 32), ("albert", "mlm_sop", 64)}
    for row in rows:
        assert row["tokens_per_second"]["ours"]["median"] > 0 and row["tokens_per_second"]["hf"]["median"] > 0
        assert 0 < row["mfu_measured_peak"]["ours"] < 1 and row["mfu_datasheet"] is None  # no data sheet on CPU
        assert row["initial_loss"]["hf"] == pytest.approx(row["initial_loss"]["ours"], rel=1e-4)  # same model

    equivalence = report["equivalence"]
    variants = {v["name"]: v for v in equivalence["variants"]}
    assert variants["bf16 autocast, SDPA flash"]["passed"]  # CPU autocast and CPU flash kernel really ran
    assert variants["bf16 autocast, SDPA auto"]["loss"] != variants["fp32, math kernel (reference)"]["loss"]
    assert "compile=false" in variants["fp32, torch.compile"]["skipped"]
    assert equivalence["curve"]["passed"] and len(equivalence["curve"]["losses"]["fast"]) == 5

    table5 = report["table5"]
    assert table5["returncode"] == 0 and "experiment=albert_table5" in table5["command"]
    intrinsic = {r["objective"]: r for r in table5["intrinsic"]}
    assert set(intrinsic) == {"mlm", "mlm_nsp", "mlm_sop"}
    assert all(r["status"] == "ok" and r["steps"] == 6 for r in intrinsic.values())
    assert {"mlm_acc", "nsp_acc", "sop_acc"} <= set(intrinsic["mlm_sop"]["metrics"])
    assert all(len(table5["curves"][o]) >= 2 for o in intrinsic)  # a learning curve per cell
    assert "ALBERT Table 5" in table5["table_md"]

    markdown = (out / "report.md").read_text()
    assert "| bert | mlm_nsp | tiny | 32 |" in markdown and "overall: PASS" in markdown
    assert "| bert | mlm_nsp | tiny | 32 |" in done.stdout  # the table is printed


def test_make_target_runs_the_module_without_a_venv():
    dry = subprocess.run(["make", "-n", "gpu-check", "ARGS=profile=cpu", "BIN=/nonexistent"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "PYTHONPATH=src" in dry and "-m plmbench.commands.gpu_check profile=cpu" in dry


def test_datasheet_peaks_and_options():
    assert gpu_check.datasheet_peak("NVIDIA H200") == 989e12
    assert gpu_check.datasheet_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_check.datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu_check.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_check.datasheet_peak("NVIDIA L40S") == 362e12 and gpu_check.datasheet_peak("NVIDIA L4") == 121e12
    assert gpu_check.datasheet_peak("Tesla T4") is None  # the measured peak is used instead
    with pytest.raises(ValueError, match="unknown key 'part'"):
        gpu_check.parse(["part=mfu"])
    with pytest.raises(ValueError, match="parts: 'mfuu'"):
        gpu_check.parse(["parts=mfuu"])
    options, extra = gpu_check.parse(["profile=cpu", "trainer.batch_size=4"])
    assert extra == ["trainer.batch_size=4"] and sweep_overrides(options, extra)[-1] == extra[0]
    found = {module: "1" for needs in gpu_check.NEEDS.values() for module in needs} | {"datasets": None}
    assert gpu_check.missing_for("table5", options, found) == ["datasets"]
    assert gpu_check.missing_for("mfu", options, found) == []


def test_sweep_past_its_time_budget_is_stopped_and_reported(tmp_path, monkeypatch):
    """The table5 part gets what is left of budget_s: past it the sweep's process group is stopped (the sweep
    resumes from its checkpoints when run again) and the report says so."""
    from plmbench.bench.sweep_check import run_table5

    for root in ("RUNS", "RESULTS", "CACHE"):
        monkeypatch.setenv(f"PLMBENCH_{root}", str(tmp_path / root.lower()))
    options, extra = gpu_check.parse(["profile=cpu", f"corpus_text={wikitext(tmp_path / 'corpus.txt')}"])
    (tmp_path / "out").mkdir()
    result = run_table5(options, extra, tmp_path / "out", timeout=1)
    assert result["timed_out"] and result["returncode"] != 0
    assert result["intrinsic"] == [] and (tmp_path / "out" / "table5_sweep.log").exists()
