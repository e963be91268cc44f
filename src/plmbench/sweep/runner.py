"""One cell of a sweep: pre-train it once (resuming a partial run), then fine-tune and evaluate every task x seed,
appending one record per unit to the results store. Units already in the store are skipped; a unit that fails
(exception, NaN loss) is recorded as failed with its error and the others go on."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench import paths
from plmbench.configuration import CONF_DIR, compose
from plmbench.lit.loggers import scrub
from plmbench.sweep.lineage import cell_id, unit_id
from plmbench.sweep.progress import SweepProgress
from plmbench.sweep.store import ResultsStore

log = logging.getLogger(__name__)
AXES = ("model", "embedding", "sharing", "objective", "size")


def is_first_rank() -> bool:
    """False in the 2nd..nth process of a multi-task SLURM/torchrun job running this cell."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))) == 0


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cell_axes(cfg: DictConfig, choices: dict) -> dict:
    axes = {axis: choices.get(axis) for axis in AXES if choices.get(axis) is not None}
    axes["embedding_size"] = int(cfg.model.embedding_size)
    return axes


def finetune_units(cfg: DictConfig) -> list[tuple[str, int]]:
    return [(task, int(seed)) for task in cfg.sweep.tasks for seed in cfg.sweep.seeds]


def units_per_cell(cfg: DictConfig) -> int:
    return int(bool(cfg.sweep.intrinsic)) + len(finetune_units(cfg))


class CellRunner:
    def __init__(self, cfg: DictConfig, overrides: list[str], choices: dict, progress: SweepProgress | None = None):
        self.cfg, self.overrides, self.choices = cfg, list(overrides), choices
        self.results_name = str(cfg.experiment.get("results", cfg.experiment.name))
        self.store = ResultsStore(paths.results_root() / self.results_name / "records.jsonl")
        self.cell = cell_id(cfg)
        self.cell_dir = paths.runs_root() / "cells" / self.cell
        self.axes = cell_axes(cfg, choices)
        self.progress = progress
        self.commit = git_commit()

    def base_record(self, task: str, seed: int, unit: str, source: str) -> dict:
        return {"experiment": self.results_name, "part": str(self.cfg.experiment.name),
                "scale": str(self.cfg.scale.name), "unit_id": unit, "cell_id": self.cell, "axes": self.axes,
                "task": task, "task_source": source, "seed": seed, "git_commit": self.commit,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def run(self) -> None:
        done = self.store.completed_units()
        pretrain_unit = unit_id(self.cell, {"name": "pretrain"}, int(self.cfg.seed), {})
        pending = [(t, s) for t, s in finetune_units(self.cfg)
                   if self._finetune_unit(t, s) not in done]
        if pretrain_unit in done and not pending:
            return  # nothing to do: no data is built, no model is created
        pretrain = self._pretrain(pretrain_unit, record=self.cfg.sweep.intrinsic and pretrain_unit not in done)
        if not is_first_rank():
            return  # other ranks of a multi-GPU SLURM job only help pre-train; fine-tuning runs once
        for task, seed in pending:
            self._finetune(task, seed, pretrain)

    def _pretrain(self, unit: str, record: bool) -> dict:
        from plmbench.commands.describe import describe_config
        from plmbench.lit.pretraining import run_pretraining

        metrics_path = self.cell_dir / "metrics.json"
        failed = None
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
            if not metrics or metrics.get("status") != "finished":
                meta = {"name": f"{self.results_name}-{self.cell}", "group": self.results_name,
                        "tags": [f"{k}={v}" for k, v in self.axes.items()]}
                metrics = run_pretraining(self.cfg, self.cell_dir, logger_meta=meta)
        except Exception as error:  # noqa: BLE001 - recorded, and the sweep goes on
            failed = f"{type(error).__name__}: {error}"
            log.error("pre-training cell %s failed: %s\n%s", self.cell, failed, traceback.format_exc())
            metrics = {}
        counts = describe_config(self.cfg)
        result = {"failed": failed, "metrics": metrics, "counts": counts}
        if record and is_first_rank():
            self._append({**self.base_record("pretrain", int(self.cfg.seed), unit, "corpus"),
                           "status": "failed" if failed else "ok", "error": failed,
                           "metrics": metrics.get("validation", {}), **self._costs(metrics, counts),
                           "config": scrub(OmegaConf.to_container(self.cfg, resolve=True))})
        return result

    def _finetune_overrides(self, task: str, seed: int) -> list[str]:
        # Sweep-only and Hydra keys do not exist in the fine-tuning config.
        kept = [o for o in self.overrides if not o.lstrip("+~").startswith(("sweep.", "hydra."))]
        overrides = kept + [f"task={task}", f"init={self.cell_dir}", f"seeds=[{seed}]"]
        overrides += list(self.cfg.sweep.get("finetune_overrides") or [])
        if self.cfg.sweep.get("task_source"):
            overrides.append(f"task.source={self.cfg.sweep.task_source}")
        return overrides

    def _finetune_unit(self, task: str, seed: int) -> str:
        """Hashes the task's config file content rather than composing it: checking 50 units stays instant."""
        task_file = CONF_DIR / "task" / f"{task}.yaml"
        content = task_file.read_text() if task_file.exists() else task
        spec = {"source": self.cfg.sweep.get("task_source"), "data_dir": self.cfg.get("data_dir"),
                "overrides": list(self.cfg.sweep.get("finetune_overrides") or [])}
        return unit_id(self.cell, {"task": task, "content": content}, seed, spec)

    def _finetune(self, task: str, seed: int, pretrain: dict) -> None:
        from plmbench.lit.finetuning import run_finetuning

        unit = self._finetune_unit(task, seed)
        record = self.base_record(task.replace("/", "_"), seed, unit, str(self.cfg.sweep.get("task_source")))
        ft, metrics, error = None, {}, None
        if pretrain["failed"]:
            error = f"pre-training failed: {pretrain['failed']}"
        else:
            try:
                ft = compose("finetune", self._finetune_overrides(task, seed))
                record.update(task=str(ft.task.name), task_source=str(ft.task.source))
                meta = {"name": f"{self.results_name}-{self.cell}-{ft.task.name}-s{seed}",
                        "group": self.results_name, "tags": [f"{k}={v}" for k, v in self.axes.items()]}
                metrics = run_finetuning(ft, paths.runs_root() / "units" / unit, logger_meta=meta)
            except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
                error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                log.error("unit %s (%s seed %d) failed: %s\n%s", unit, task, seed, error, traceback.format_exc())
        self._append({**record, "status": "failed" if error else "ok", "error": error,
                      "metrics": metrics.get("best", {}) if not error else {},
                      **self._costs(pretrain["metrics"], pretrain["counts"]),
                      "finetune": {k: metrics.get(k) for k in ("best_epoch", "wall_seconds", "primary")},
                      "config": scrub(OmegaConf.to_container(ft, resolve=True)) if ft is not None else {}})

    @staticmethod
    def _costs(metrics: dict, counts: dict) -> dict:
        return {"params": {k: v for k, v in counts.items() if k.endswith("params")},
                "flops": {k: v for k, v in counts.items() if "flops" in k},
                "tokens_seen": metrics.get("tokens_seen"), "wall_seconds": metrics.get("wall_seconds"),
                "tokens_per_second": metrics.get("tokens_per_second"),
                "peak_memory_mb": metrics.get("peak_memory_mb")}

    def _append(self, record: dict) -> None:
        self.store.append(record)
        if self.progress is not None:
            print(self.progress.unit_finished(record["status"] == "failed"), flush=True)
