"""The table5 part of `plmbench gpu-check`: ALBERT Table 5 through the normal `plmbench sweep`, offline, in a
child process with a time limit (the sweep resumes from its checkpoints when run again), then its records read
back: the intrinsic MLM/NSP/SOP columns, each cell's learning curve (metrics.json) and the rendered table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from plmbench import paths

REPO = Path(__file__).resolve().parents[3]


def sweep_overrides(options: dict, extra: list[str]) -> list[str]:
    steps = int(options["sweep_steps"])
    tasks = [t for t in options["tasks"].split(",") if t]
    overrides = ["experiment=albert_table5", f"scale={options['scale']}", f"trainer.max_steps={steps}",
                 f"trainer.val_check_interval={max(1, steps // 5)}", f"trainer.checkpoint_every_n_steps={max(1, steps // 2)}",
                 "trainer.progress_bar=none", "logger=csv", f"sweep.tasks=[{','.join(tasks)}]", "sweep.seeds=[0]"]
    if options["corpus"] == "files":
        overrides += ["corpus=files", f"corpus.paths=[{options['corpus_text']}]"]
    else:
        overrides.append(f"corpus={options['corpus']}")
    if tasks:
        finetune = [f"data_dir={Path(options['data_dir']).resolve()}", "epochs=1", "max_train_examples=4000",
                    "max_eval_examples=1000"]  # a capped sample: seconds per unit
        overrides += ["sweep.task_source=local", f"sweep.finetune_overrides=[{','.join(map(repr, finetune))}]"]
    if options["profile"] == "cpu":  # a few small steps; the corpus file above is small
        overrides += ["trainer.batch_size=8", "trainer.limit_val_batches=2", "model.vocab_size=2000",
                      "data.val_fraction=0.2"]  # 2% of a 1 MB file's 60 articles is one: NSP needs two
    if options.get("threads"):
        overrides.append(f"impl.threads={options['threads']}")
    return overrides + extra


def run_table5(options: dict, extra: list[str], out: Path, timeout: float) -> dict:
    overrides = sweep_overrides(options, extra)
    results = out / "sweep"
    env = {**os.environ, "PLMBENCH_RESULTS": str(results.resolve()), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "plmbench.cli", "sweep", *overrides]
    log_path = out / "table5_sweep.log"
    start = time.perf_counter()
    print(f"[gpu-check] table5: plmbench sweep {' '.join(overrides)} (log {log_path}, at most {timeout:.0f} s)",
          flush=True)
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode, timed_out = child.wait(timeout=max(1.0, timeout)), False
        except subprocess.TimeoutExpired:  # the sweep resumes from its checkpoints when run again
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            returncode, timed_out = child.returncode, True
    result = {"command": "plmbench sweep " + " ".join(overrides), "returncode": returncode, "timed_out": timed_out,
              "seconds": time.perf_counter() - start, "log": str(log_path),
              "log_tail": log_path.read_text(errors="replace")[-3000:]}
    return result | table5_results(results / "albert_table5")


def table5_results(folder: Path) -> dict:
    """Intrinsic rows (one per objective), fine-tuning rows, the cells' learning curves and the rendered table."""
    records_path = folder / "records.jsonl"
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()] \
        if records_path.exists() else []
    latest = {}  # an earlier run into the same folder (another budget) left records too: the last one counts
    for record in records:
        latest[(record.get("axes", {}).get("objective"), record.get("task"), record.get("seed"))] = record
    intrinsic, finetune, curves = [], [], {}
    for (objective, task, seed), record in latest.items():
        if task == "pretrain":
            cell_dir = paths.runs_root() / "cells" / str(record.get("cell_id"))
            cell = json.loads((cell_dir / "metrics.json").read_text()) if (cell_dir / "metrics.json").exists() else {}
            curves[objective] = cell.get("curve", [])
            intrinsic.append({"objective": objective, "status": record.get("status"), "error": record.get("error"),
                              "metrics": record.get("metrics", {}), "steps": cell.get("step"),
                              "tokens_seen": cell.get("tokens_seen"), "wall_seconds": cell.get("wall_seconds"),
                              "tokens_per_second": cell.get("tokens_per_second"),
                              "train_flops_per_token": _flops_per_token(cell_dir / "config.yaml"),
                              "first_train_loss": cell.get("first_train_loss"),
                              "last_train_loss": cell.get("last_train_loss")})
        else:
            finetune.append({"objective": objective, "task": task, "seed": seed, "status": record.get("status"),
                             "error": record.get("error"), "metrics": record.get("metrics", {})})
    table = folder / "table.md"
    return {"records": str(records_path), "intrinsic": intrinsic, "finetune": finetune, "curves": curves,
            "table_md": table.read_text() if table.exists() else None}


def _flops_per_token(config: Path) -> float | None:
    if not config.exists():
        return None
    from omegaconf import OmegaConf

    from plmbench.bench.peak import train_flops_per_token

    return train_flops_per_token(OmegaConf.load(config))


def add_training_mfu(report: dict) -> None:
    """MFU of the sweep's pre-training steps, over the peak the mfu part used (data sheet, else measured)."""
    section, mfu_part = report.get("table5") or {}, report.get("mfu") or {}
    peak = mfu_part.get("datasheet_peak_flops") or (mfu_part.get("measured_peak") or {}).get("flops_per_second")
    for row in section.get("intrinsic", []):
        rate, flops = row.get("tokens_per_second"), row.get("train_flops_per_token")
        row["mfu"] = flops * rate / peak if peak and rate and flops else None
