"""One cell of a sweep: pre-train it once (resuming a partial run), then fine-tune and evaluate every task x seed,
appending one record per unit to the results store. Units already in the store are skipped; a unit that fails
(exception, NaN loss) is recorded as failed with its error and the others go on.

A biLM cell (objective bilm, experiment elmo_gpt_bert) trains ELMo's task model instead of fine-tuning a
Transformer. With `sweep.shots` set (experiment gpt_shots), every task x seed also gets one k-shot unit per k of
`sweep.shots.ks`: the pre-trained causal LM prompted with k demonstrations, no parameter updates. Records of
such an experiment carry `shots` (k, or "finetuned") in their axes, which is what the table's rows match."""

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
from plmbench.configuration import compose, config_file
from plmbench.lineage import cell_id, unit_id
from plmbench.safety import drop_secrets
from plmbench.sweep.locks import hold
from plmbench.sweep.progress import SweepProgress
from plmbench.sweep.store import ResultsStore

log = logging.getLogger(__name__)
AXES = ("recipe", "model", "embedding", "sharing", "objective", "size")  # recipe: conf/recipe/, when chosen


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


def sweep_seeds(cfg: DictConfig) -> list[int]:
    """The fine-tuning seeds; none would pre-train every cell and then fine-tune nothing, so it is refused."""
    from plmbench.models.config import ConfigError

    seeds = list(OmegaConf.select(cfg, "sweep.seeds") or [])
    if not seeds:
        raise ConfigError("sweep.seeds=[]: give at least one fine-tuning seed, e.g. sweep.seeds=[0] or [0,1,2]")
    if any(isinstance(seed, bool) or not isinstance(seed, int) for seed in seeds):
        raise ConfigError(f"sweep.seeds={seeds}: seeds must be integers, e.g. sweep.seeds=[0,1,2]")
    return seeds


def finetune_units(cfg: DictConfig) -> list[tuple[str, int]]:
    return [(task, seed) for task in cfg.sweep.tasks for seed in sweep_seeds(cfg)]


def shots_units(cfg: DictConfig) -> list[tuple[str, int, int]]:
    """(task, k, seed) for every k-shot unit; none unless the experiment sets sweep.shots."""
    if not OmegaConf.select(cfg, "sweep.shots"):
        return []
    from plmbench.fewshot.units import shots_settings

    return [(task, int(k), seed) for task, seed in finetune_units(cfg) for k in shots_settings(cfg)["ks"]]


def units_per_cell(cfg: DictConfig) -> int:
    return int(bool(cfg.sweep.intrinsic)) + len(finetune_units(cfg)) + len(shots_units(cfg))


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

    def expected_units(self) -> set[str]:
        """The unit ids this cell appends when it runs in full: what the sweep's progress line counts."""
        units = {self._finetune_unit(t, s) for t, s in finetune_units(self.cfg)}
        units |= {self._shots_unit(t, k, s) for t, k, s in shots_units(self.cfg)}
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
        pending = [(t, s) for t, s in finetune_units(self.cfg)
                   if self._finetune_unit(t, s) not in done]
        pending_shots = [(t, k, s) for t, k, s in shots_units(self.cfg) if self._shots_unit(t, k, s) not in done]
        if pretrain_unit in done and not pending and not pending_shots:
            return  # nothing to do: no data is built, no model is created
        pretrain = self._pretrain(pretrain_unit, record=self.cfg.sweep.intrinsic and pretrain_unit not in done)
        if not is_first_rank():
            return  # other ranks of a multi-GPU SLURM job only help pre-train; fine-tuning runs once
        for task, seed in pending:
            self._finetune(task, seed, pretrain)
        for task, k, seed in pending_shots:
            self._shots(task, k, seed, pretrain)

    def _pretrain(self, unit: str, record: bool) -> dict:
        from plmbench.lit.pretraining import checkpoint_kept, run_pretraining
        from plmbench.objectives.counting import describe_config

        metrics_path = self.cell_dir / "metrics.json"
        failed = None
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
            if not metrics or metrics.get("status") != "finished" or not checkpoint_kept(self.cell_dir):
                meta = {"name": f"{self.results_name}-{self.cell}", "group": self.results_name,
                        "tags": [f"{k}={v}" for k, v in self.axes.items()],
                        "id": self.cell}  # the W&B run id: a relaunch continues the cell's run (resume="allow")
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
                           "metrics": metrics.get("validation", {}), **self._counts(counts),
                           **self._pretrain_costs(metrics, counts),
                           "curve": metrics.get("curve", []),  # every validation: results/<exp>/curves.png
                           "config": drop_secrets(OmegaConf.to_container(self.cfg, resolve=True))})
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
        task_file = config_file("task", task)  # the user's own when PLMBENCH_CONFIG_PATH has one of that name
        content = task_file.read_text() if task_file is not None else task
        spec = {"source": self.cfg.sweep.get("task_source"), "data_dir": self.cfg.get("data_dir"),
                "overrides": list(self.cfg.sweep.get("finetune_overrides") or [])}
        return unit_id(self.cell, {"task": task, "content": content}, seed, spec)

    def _shots_unit(self, task: str, k: int, seed: int) -> str:
        """The fine-tuning unit's id inputs plus k and the shots settings (style, caps): changing them reruns."""
        from plmbench.fewshot.units import shots_settings

        settings = {key: v for key, v in shots_settings(self.cfg).items() if key != "ks"}
        return unit_id(self._finetune_unit(task, seed), {"shots": int(k)}, seed, settings)

    def _finetune(self, task: str, seed: int, pretrain: dict) -> None:
        from plmbench.elmo.units import run_elmo_unit
        from plmbench.lit.finetuning import run_finetuning

        unit = self._finetune_unit(task, seed)

        def train(ft: DictConfig, out_dir: Path, meta: dict) -> dict:
            if self.cfg.objective.name == "bilm":  # ELMo: its task model on the biLM, not a Transformer head
                return run_elmo_unit(ft, self.cell_dir, seed, out_dir, logger_meta=meta)
            return run_finetuning(ft, out_dir, logger_meta=meta)

        self._run_unit(task, seed, unit, pretrain, train, shots="finetuned")

    def _shots(self, task: str, k: int, seed: int, pretrain: dict) -> None:
        from plmbench.fewshot.units import run_shots_unit

        def evaluate(ft: DictConfig, out_dir: Path, meta: dict) -> dict:
            return run_shots_unit(ft, self.cell_dir, k, seed, out_dir=out_dir, logger_meta=meta)

        self._run_unit(task, seed, self._shots_unit(task, k, seed), pretrain, evaluate, shots=k)

    def _run_unit(self, task: str, seed: int, unit: str, pretrain: dict, train, shots) -> None:
        """The unit under its own lock (runs/units/<unit>/.lock): one process at a time runs and records it."""
        with hold(paths.runs_root() / "units" / unit) as holder:
            if holder is not None:
                return self._held(f"unit {unit} ({task}, seed {seed})", holder)
            self._unit(task, seed, unit, pretrain, train, shots)

    @staticmethod
    def _held(what: str, holder: str) -> None:
        print(f"[sweep] {what}: held by another process ({holder}); skipped, a later relaunch runs it", flush=True)

    def _unit(self, task: str, seed: int, unit: str, pretrain: dict, train, shots) -> None:
        """Compose the unit's fine-tuning config, run `train(ft, out_dir, logger_meta)`, append its record."""
        record = self.base_record(task.replace("/", "_"), seed, unit, str(self.cfg.sweep.get("task_source")))
        if OmegaConf.select(self.cfg, "sweep.shots"):
            record.update(shots=shots, axes={**self.axes, "shots": str(shots)})
        ft, metrics, error = None, {}, None
        started = time.perf_counter()
        try:  # composed even after a failed pre-training: the record then carries the task's name for the table
            ft = compose("finetune", self._finetune_overrides(task, seed))
            record.update(task=str(ft.task.name), task_source=str(ft.task.source))
            if pretrain["failed"]:
                error = f"pre-training failed: {pretrain['failed']}"
            else:
                meta = {"name": f"{self.results_name}-{self.cell}-{ft.task.name}-s{seed}",
                        "group": self.results_name, "tags": [f"{k}={v}" for k, v in self.axes.items()]}
                metrics = train(ft, paths.runs_root() / "units" / unit, meta)
        except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            log.error("unit %s (%s seed %d) failed: %s\n%s", unit, task, seed, error, traceback.format_exc())
        self._append({**record, "status": "failed" if error else "ok", "error": error,
                      "metrics": metrics.get("best", {}) if not error else {},
                      **self._counts(pretrain["counts"]),
                      # this unit's own time (composing, data, training, evaluation); its cell's pre-training
                      # costs are kept apart, so summing wall_seconds over records counts each run once
                      "wall_seconds": time.perf_counter() - started,
                      "pretrain_costs": self._pretrain_costs(pretrain["metrics"], pretrain["counts"]),
                      "finetune": {k: metrics.get(k) for k in ("best_epoch", "wall_seconds", "primary", "max_length",
                                                          "max_length_capped_from")},
                      "config": drop_secrets(OmegaConf.to_container(ft, resolve=True)) if ft is not None else {}})

    @staticmethod
    def _counts(counts: dict) -> dict:
        """The cell's model size: every record of the cell carries it (the tables read params from any of them)."""
        return {"params": {k: v for k, v in counts.items() if k.endswith("params")},
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
