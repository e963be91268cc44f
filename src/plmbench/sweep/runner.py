"""One cell of a sweep: pre-train it once (resuming a partial run), then run every unit of the kinds `sweep.units`
lists (plmbench.units: fine-tune, few-shot, ELMo's task model, ...), appending one record per unit to the results
store. Units already in the store are skipped; a unit that fails (exception, NaN loss) is recorded as failed with
its error and the others go on. What pre-training means is config too (`sweep.cell_trainer`), so this module never
asks which model, objective or experiment it runs.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench import paths
from plmbench.errors import disk_full
from plmbench.lineage import cell_id, unit_id
from plmbench.safety import drop_secrets
from plmbench.sweep.locks import hold
from plmbench.sweep.progress import SweepProgress
from plmbench.sweep.store import ResultsStore
from plmbench.units import Cell, Unit, UnitKind, load_kinds

log = logging.getLogger(__name__)
# A record's axes: the cell's choice of each of these groups (recipe and distill only when chosen).
AXES = ("recipe", "model", "embedding", "sharing", "objective", "size", "distill", "knowledge")


def is_first_rank() -> bool:
    """False in the 2nd..nth process of a multi-task SLURM/torchrun job running this cell."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))) == 0


def git_commit() -> str:
    """The commit of the plmbench code that runs (its source tree's), not of the folder the sweep runs in."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                              timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cell_axes(cfg: DictConfig, choices: dict) -> dict:
    axes = {axis: choices.get(axis) for axis in AXES if choices.get(axis) is not None}
    axes["embedding_size"] = int(cfg.model.embedding_size)
    return axes


def kinds_and_units(cfg: DictConfig, cell: Cell) -> list[tuple[UnitKind, Unit]]:
    """Every unit of the cell, kind by kind in `sweep.units` order."""
    return [(kind, unit) for kind in load_kinds(cfg).values() for unit in kind.units(cell)]


def units_per_cell(cfg: DictConfig) -> int:
    cell = Cell(cfg, cell_id(cfg), paths.runs_root() / "cells" / cell_id(cfg))
    return int(bool(cfg.sweep.intrinsic)) + len(kinds_and_units(cfg, cell))


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
        self.units = kinds_and_units(cfg, Cell(cfg, self.cell, self.cell_dir, tuple(self.overrides)))

    def expected_units(self) -> set[str]:
        """The unit ids this cell appends when it runs in full: what the sweep's progress line counts."""
        units = {unit.id for _, unit in self.units}
        if self.cfg.sweep.intrinsic:
            units.add(unit_id(self.cell, {"name": "pretrain"}, int(self.cfg.seed), {}))
        return units

    def base_record(self, task: str, seed: int, unit: str, source: str) -> dict:
        return {"experiment": self.results_name, "part": str(self.cfg.experiment.name),
                "scale": str(self.cfg.scale.name), "unit_id": unit, "cell_id": self.cell, "axes": self.axes,
                "task": task, "task_source": source, "seed": seed, "git_commit": self.commit,
                "launch": OmegaConf.select(self.cfg, "sweep.launch"),  # failed in this launch: not retried in it
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def run(self) -> None:
        """The cell's pending units, under the cell's lock: a second sweep on the same results skips a cell that
        another process is running (and says so) instead of training into its folder; a relaunch picks it up."""
        if not is_first_rank():  # the other ranks of a multi-GPU job follow the first, which holds the lock
            return self._run()
        with hold(self.cell_dir) as holder:
            if holder is not None:
                return self._held(f"cell {self.cell}", holder)
            self._run()

    def _run(self) -> None:
        # A failed unit runs again (the disk was freed, a file was fixed) unless sweep.retry_failed=false.
        retry = bool(OmegaConf.select(self.cfg, "sweep.retry_failed", default=True))
        done = self.store.completed_units(retry_failed=retry, launch=OmegaConf.select(self.cfg, "sweep.launch"))
        pretrain_unit = unit_id(self.cell, {"name": "pretrain"}, int(self.cfg.seed), {})
        pending = [(kind, unit) for kind, unit in self.units if unit.id not in done]
        if pretrain_unit in done and not pending:
            return  # nothing to do: no data is built, no model is created
        pretrain = self._pretrain(pretrain_unit, record=self.cfg.sweep.intrinsic and pretrain_unit not in done)
        if not is_first_rank():
            return  # other ranks of a multi-GPU SLURM job only help pre-train; the units run once
        for kind, unit in pending:
            self._run_unit(kind, unit, pretrain)

    def _pretrain(self, unit: str, record: bool) -> dict:
        """Train the cell with `sweep.cell_trainer` (pre-training; general distillation for a student) unless its
        run finished."""
        from hydra.utils import get_method

        from plmbench.lit.pretraining import checkpoint_kept
        from plmbench.objectives.counting import describe_config

        metrics_path = self.cell_dir / "metrics.json"
        failed = None
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
            if not metrics or metrics.get("status") != "finished" or not checkpoint_kept(self.cell_dir):
                meta = {"name": f"{self.results_name}-{self.cell}", "group": self.results_name,
                        "tags": [f"{k}={v}" for k, v in self.axes.items()],
                        "id": self.cell}  # the W&B run id: a relaunch continues the cell's run (resume="allow")
                train = get_method(str(self.cfg.sweep.cell_trainer))
                metrics = train(self.cfg, self.cell_dir, logger_meta=meta)
        except Exception as error:  # noqa: BLE001 - recorded, and the sweep goes on
            if (full := disk_full(error)) is not None:
                raise full from None  # the next cells would fail alike: the sweep stops with this one line
            failed = f"{type(error).__name__}: {error}"
            log.error("pre-training cell %s failed: %s\n%s", self.cell, failed, traceback.format_exc())
            metrics = {}
        counts = metrics.get("counts") or describe_config(self.cfg)  # a student's: its own model's, not the config's
        result = {"failed": failed, "metrics": metrics, "counts": counts}
        if record and is_first_rank():
            self._append({**self.base_record("pretrain", int(self.cfg.seed), unit, "corpus"),
                           "status": "failed" if failed else "ok", "error": failed,
                           "metrics": metrics.get("validation", {}), **self._counts(counts),
                           **self._pretrain_costs(metrics, counts),
                           "curve": metrics.get("curve", []),  # every validation: results/<exp>/curves.png
                           "config": drop_secrets(OmegaConf.to_container(self.cfg, resolve=True))})
        return result

    def _run_unit(self, kind: UnitKind, unit: Unit, pretrain: dict) -> None:
        """The unit under its own lock (runs/units/<unit>/.lock): one process at a time runs and records it."""
        with hold(paths.runs_root() / "units" / unit.id) as holder:
            if holder is not None:
                return self._held(f"unit {unit.id} ({unit.task}, seed {unit.seed})", holder)
            self._unit(kind, unit, pretrain)

    @staticmethod
    def _held(what: str, holder: str) -> None:
        print(f"[sweep] {what}: held by another process ({holder}); skipped, a later relaunch runs it", flush=True)

    def _unit(self, kind: UnitKind, unit: Unit, pretrain: dict) -> None:
        """Compose the unit's config, run it, append its record."""
        record = self.base_record(unit.task.replace("/", "_"), unit.seed, unit.id,
                                  str(self.cfg.sweep.get("task_source")))
        record.update(unit.fields, axes={**self.axes, **unit.axes})
        cell = Cell(self.cfg, self.cell, self.cell_dir, tuple(self.overrides))
        unit_cfg, metrics, error = None, {}, None
        started = time.perf_counter()
        try:  # composed even after a failed pre-training: the record then carries the task's name for the table
            unit_cfg = kind.config(unit, cell)
            if OmegaConf.select(unit_cfg, "task.name") is not None:
                record.update(task=str(unit_cfg.task.name), task_source=str(unit_cfg.task.source))
            if pretrain["failed"]:
                error = f"pre-training failed: {pretrain['failed']}"
            else:
                meta = {"name": f"{self.results_name}-{self.cell}-{record['task']}-s{unit.seed}",
                        "group": self.results_name, "tags": [f"{k}={v}" for k, v in record["axes"].items()]}
                metrics = kind.run(unit, cell, unit_cfg, paths.runs_root() / "units" / unit.id, meta)
        except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
            if (full := disk_full(exc)) is not None:
                raise full from None
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            log.error("unit %s (%s seed %d) failed: %s\n%s", unit.id, unit.task, unit.seed, error,
                      traceback.format_exc())
        self._append({**record, "status": "failed" if error else "ok", "error": error,
                      "metrics": metrics.get("best", {}) if not error else {},
                      **self._counts(pretrain["counts"]),
                      # this unit's own time (composing, data, training, evaluation); its cell's pre-training
                      # costs are kept apart, so summing wall_seconds over records counts each run once
                      "wall_seconds": time.perf_counter() - started,
                      "pretrain_costs": self._pretrain_costs(pretrain["metrics"], pretrain["counts"]),
                      "finetune": {k: metrics.get(k) for k in ("best_epoch", "wall_seconds", "primary", "max_length",
                                                          "max_length_capped_from")},
                      "config": drop_secrets(OmegaConf.to_container(unit_cfg, resolve=True))
                      if unit_cfg is not None else {}})

    @staticmethod
    def _counts(counts: dict) -> dict:
        """The cell's model size: every record of the cell carries it (the tables read params from any of them)."""
        return {"params": {k: v for k, v in counts.items() if k.endswith("params")}, "shape": counts.get("size"),
                "flops": {k: v for k, v in counts.items() if "flops" in k}}

    @staticmethod
    def _pretrain_costs(metrics: dict, counts: dict) -> dict:
        # pretrain_flops: the compute plot's x. Kept as the product because the store's secrets filter drops every
        # key naming a token, `train_flops_per_token` among them
        per_token, tokens = counts.get("train_flops_per_token"), metrics.get("tokens_seen")
        return {"tokens_seen": tokens, "pretrain_flops": per_token * tokens if per_token and tokens else None,
                "wall_seconds": metrics.get("wall_seconds"),
                "tokens_per_second": metrics.get("tokens_per_second"),
                "peak_memory_mb": metrics.get("peak_memory_mb")}

    def _append(self, record: dict) -> None:
        self.store.append(record)
        if self.progress is not None:
            print(self.progress.unit_finished(record["status"] == "failed"), flush=True)
