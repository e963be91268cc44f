"""`plmbench sweep experiment=distillation scale=<scale>`: one teacher, its DistilBERT and TinyBERT students, and
the table that compares them (conf/experiment/distillation.yaml sets `experiment.runner` to this module's `run`).

1. the teacher: pre-trained once by lineage (runs/cells/<id>: the same cell any other experiment would train);
2. each student of `experiment.students`: general distillation from the teacher (runs/distill/<id>);
3. inference throughput of every model, measured in this process, interleaved, on the same inputs;
4. per task x seed: the teacher fine-tuned, DistilBERT fine-tuned, TinyBERT distilled on the task from the
   fine-tuned teacher (TinyBERT's second stage).
Every unit appends one record to results/<experiment>/records.jsonl and is skipped on a rerun; a failed unit is
recorded with its error and the others go on. `plmbench sweep` renders the table at the end (plmbench.distill.table).
"""

from __future__ import annotations

import datetime
import json
import logging
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from plmbench import paths
from plmbench.configuration import compose, config_file, config_options
from plmbench.distill import DistillError
from plmbench.distill.run import (
    build_loss,
    check_student_shape,
    distill_settings,
    load_teacher,
    prepare_task,
    run_distillation,
    task_init,
    train_task,
)
from plmbench.distill.students import StudentMLM, count_parameters, shape_of
from plmbench.errors import load_weights_only
from plmbench.lineage import LINEAGE_VERSION, cell_id, digest, unit_id
from plmbench.models.config import ModelConfig
from plmbench.safety import drop_secrets  # no API keys reach the records
from plmbench.sweep.runner import sweep_seeds
from plmbench.sweep.store import ResultsStore

log = logging.getLogger(__name__)
TEACHER = "teacher"
THROUGHPUT_DEFAULTS = {"batch_size": 1, "seq_len": 128, "seconds": 2.0}


@dataclass
class Plan:
    overrides: list[str]
    cfg: DictConfig  # the teacher's pre-training config
    results: str
    students: dict[str, DictConfig]  # name -> composed config with +distill=<name> (teacher not yet set)
    tasks: list[str]
    seeds: list[int]


def plan(overrides: list[str]) -> Plan:
    """Compose and check every config (teacher, students, tasks) before any compute: a typo fails in seconds."""
    from plmbench.lit.pretraining import validate_pretrain

    cfg = compose("pretrain", overrides)
    validate_pretrain(cfg)
    teacher = ModelConfig.from_mapping(cfg.model)
    names = list(cfg.experiment.get("students") or [])
    if not names:
        raise DistillError("experiment.students is empty: list conf/distill/ options, e.g. [distilbert, tinybert]")
    students = {}
    for name in names:
        if config_file("distill", name) is None:
            raise DistillError(f"experiment.students: unknown student {name!r}; "
                               f"allowed: {', '.join(config_options('distill'))}")
        student_cfg = compose("pretrain", list(overrides) + [f"+distill={name}"])
        settings = distill_settings(student_cfg, need_teacher=False)
        build_loss(settings, check_student_shape(settings, teacher), teacher)
        students[name] = student_cfg
    for task in cfg.sweep.tasks:
        if config_file("task", task) is None:
            raise DistillError(f"sweep.tasks: unknown task {task!r} (no conf/task/{task}.yaml)")
    if int(_throughput_settings(cfg)["seq_len"]) > teacher.max_positions:
        raise DistillError(f"experiment.throughput.seq_len={cfg.experiment.throughput.seq_len} exceeds "
                           f"model.max_positions={teacher.max_positions}")
    return Plan(list(overrides), cfg, str(cfg.experiment.get("results", cfg.experiment.name)), students,
                list(cfg.sweep.tasks), sweep_seeds(cfg))


def _throughput_settings(cfg: DictConfig) -> dict:
    given = OmegaConf.to_container(cfg.experiment.get("throughput") or {}, resolve=True)
    unknown = sorted(set(given) - set(THROUGHPUT_DEFAULTS))
    if unknown:
        raise DistillError(f"experiment.throughput: unknown key(s) {', '.join(unknown)}; allowed: "
                           f"{', '.join(THROUGHPUT_DEFAULTS)}")
    settings = {**THROUGHPUT_DEFAULTS, **given}
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise DistillError(f"experiment.throughput.{key}={value!r}: must be a positive number")
    return settings


# ------------------------------------------------------------------------------------------ measurement


def inference_throughput(models: dict[str, nn.Module], vocab_size: int, batch_size: int, seq_len: int,
                         seconds: float, device: torch.device | None = None) -> dict[str, float]:
    """Sequences per second of each backbone's forward on the same random batch (no padding), eval mode, no
    autograd. Models take turns call by call, so load from other processes slows them all alike; the median
    call time of each counts."""
    device = device or torch.device("cpu")
    ids = torch.randint(0, vocab_size, (int(batch_size), int(seq_len)), generator=torch.Generator().manual_seed(0))
    ids, mask = ids.to(device), torch.ones_like(ids).to(device)
    times: dict[str, list[float]] = {name: [] for name in models}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for model in models.values():
            model.eval().to(device)
            model(ids, mask), model(ids, mask)  # warm-up: allocations, kernel choice
        started = time.perf_counter()
        while time.perf_counter() - started < seconds * len(models) or min(map(len, times.values())) < 5:
            for name, model in models.items():
                sync()
                t0 = time.perf_counter()
                model(ids, mask)
                sync()
                times[name].append(time.perf_counter() - t0)
    return {name: batch_size / statistics.median(values) for name, values in times.items()}


def load_student_backbone(run_dir: Path) -> nn.Module:
    config = ModelConfig.from_mapping(OmegaConf.load(run_dir / "config.yaml").model)
    student = StudentMLM(config)
    state = load_weights_only(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    student.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return student.backbone


def percent(task: DictConfig, value) -> float | None:
    """A task's headline in points: GLUE metrics are fractions, SQuAD F1 is already in percent."""
    if value is None:
        return None
    return float(value) * (100.0 if task.metric.name in ("glue", "race") else 1.0)


# ------------------------------------------------------------------------------------------ the sweep


class DistillationSweep:
    def __init__(self, p: Plan):
        from plmbench.sweep.runner import git_commit

        self.plan, self.cfg = p, p.cfg
        self.store = ResultsStore(paths.results_root() / p.results / "records.jsonl")
        # A failed unit runs again at a relaunch unless sweep.retry_failed=false; once per launch (record adds it)
        self.done = self.store.completed_units(
            retry_failed=bool(OmegaConf.select(self.cfg, "sweep.retry_failed", default=True)))
        self.cell = cell_id(self.cfg)
        self.teacher_dir = paths.runs_root() / "cells" / self.cell
        self.commit = git_commit()
        self.student_dirs: dict[str, Path] = {}
        self.failed: dict[str, str] = {}  # model -> why it has no weights

    def record(self, unit: str, model: str, task: str, seed: int, source: str, **fields) -> None:
        record = {"experiment": self.plan.results, "part": str(self.cfg.experiment.name),
                  "scale": str(self.cfg.scale.name), "unit_id": unit, "cell_id": self.cell, "model": model,
                  "task": task, "task_source": source, "seed": seed, "git_commit": self.commit,
                  "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **fields}
        self.store.append(record)
        self.done.add(unit)
        status = fields.get("status")
        print(f"[distill] {model} {task} seed {seed}: {status}" + (f" ({fields.get('error')})" if
                                                                     status == "failed" else ""), flush=True)

    def run(self) -> None:
        if not self.pretrain_teacher():
            return
        for name, student_cfg in self.plan.students.items():
            self.distill(name, student_cfg)
        self.throughput()
        for task in self.plan.tasks:
            for seed in self.plan.seeds:
                self.task_units(task, seed)

    # -- teacher and students ------------------------------------------------------------------------------------

    def pretrain_teacher(self) -> bool:
        from plmbench.lit.pretraining import run_pretraining

        unit = unit_id(self.cell, {"name": "pretrain"}, int(self.cfg.seed), {})  # as CellRunner names it
        metrics_path = self.teacher_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
            if metrics.get("status") != "finished":
                meta = {"name": f"{self.plan.results}-{self.cell}", "group": self.plan.results, "tags": ["teacher"],
                        "id": self.cell}  # as a sweep cell: a relaunch continues its W&B run
                metrics = run_pretraining(self.cfg, self.teacher_dir, logger_meta=meta)
        except Exception as error:  # noqa: BLE001 - recorded; nothing else can run without a teacher
            log.error("teacher pre-training failed:\n%s", traceback.format_exc())
            self.record(unit, TEACHER, "pretrain", int(self.cfg.seed), "corpus", status="failed",
                        error=f"{type(error).__name__}: {error}")
            return False
        if unit not in self.done:
            self.record(unit, TEACHER, "pretrain", int(self.cfg.seed), "corpus", status="ok", error=None,
                        metrics=metrics.get("validation", {}), wall_seconds=metrics.get("wall_seconds"),
                        params={"backbone": count_parameters(load_teacher(self.teacher_dir).model.backbone)},
                        shape=shape_of(ModelConfig.from_mapping(self.cfg.model)))
        return True

    def distill(self, name: str, student_cfg: DictConfig) -> None:
        cfg = OmegaConf.merge(student_cfg, {"distill": {"teacher": str(self.teacher_dir)}})
        settings = distill_settings(cfg)
        spec = {k: v for k, v in settings.items() if k not in ("teacher", "task")}
        run_id = digest({"version": LINEAGE_VERSION, "teacher": self.cell, "distill": spec, "seed": int(cfg.seed),
                         "optim": OmegaConf.to_container(cfg.optim, resolve=True)})
        run_dir = paths.runs_root() / "distill" / run_id
        self.student_dirs[name] = run_dir
        unit = unit_id(run_id, {"name": "distill"}, int(cfg.seed), {})
        metrics_path = run_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
            if metrics.get("status") != "finished":
                meta = {"name": f"{self.plan.results}-{name}-{run_id}", "group": self.plan.results, "tags": [name],
                        "id": run_id}
                metrics = run_distillation(cfg, run_dir, logger_meta=meta)
        except Exception as error:  # noqa: BLE001 - recorded, and the other students go on
            log.error("distillation of %s failed:\n%s", name, traceback.format_exc())
            self.failed[name] = f"general distillation failed: {type(error).__name__}: {error}"
            if unit not in self.done:
                self.record(unit, name, "distill", int(cfg.seed), "corpus", status="failed", error=self.failed[name])
            return
        if unit not in self.done:
            self.record(unit, name, "distill", int(cfg.seed), "corpus", status="ok", error=None, run_id=run_id,
                        metrics=metrics.get("validation", {}), wall_seconds=metrics.get("wall_seconds"),
                        first_train_loss=metrics.get("first_train_loss"),
                        last_train_loss=metrics.get("last_train_loss"),
                        params={"backbone": metrics["params"]["student_backbone"]}, shape=metrics["student"])

    def throughput(self) -> None:
        """All models are measured together whenever one of them lacks a measurement, so that they share the
        machine's state; a model whose weights failed is left out."""
        models = {TEACHER: self.cell, **{name: self.student_dirs[name].name for name in self.student_dirs
                                         if name not in self.failed}}
        settings = _throughput_settings(self.cfg)
        units = {m: unit_id(lineage, {"name": "throughput", **settings}, 0, {}) for m, lineage in models.items()}
        if all(unit in self.done for unit in units.values()):
            return
        device = torch.device("cuda") if torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu" \
            else torch.device("cpu")
        try:
            teacher = load_teacher(self.teacher_dir)
            backbones = {TEACHER: teacher.model.backbone,
                         **{m: load_student_backbone(self.student_dirs[m]) for m in models if m != TEACHER}}
            rates = inference_throughput(backbones, teacher.config.vocab_size, int(settings["batch_size"]),
                                         int(settings["seq_len"]), float(settings["seconds"]), device)
        except Exception as error:  # noqa: BLE001 - recorded, and the tasks go on
            log.error("throughput measurement failed:\n%s", traceback.format_exc())
            for model, unit in units.items():
                self.record(unit, model, "throughput", 0, "synthetic", status="failed",
                            error=f"{type(error).__name__}: {error}")
            return
        for model, rate in rates.items():
            self.record(units[model], model, "throughput", 0, "synthetic", status="ok", error=None,
                        metrics={"sequences_per_second": rate, "speedup": rate / rates[TEACHER]},
                        params={"backbone": count_parameters(backbones[model])}, device=str(device),
                        threads=torch.get_num_threads(), throughput_settings=settings)

    # -- tasks ---------------------------------------------------------------------------------------------------

    def finetune_cfg(self, task: str) -> DictConfig:
        overrides = self.plan.overrides + [f"task={task}", f"init={self.teacher_dir}"]
        overrides += list(self.cfg.sweep.get("finetune_overrides") or [])
        if self.cfg.sweep.get("task_source"):
            overrides.append(f"task.source={self.cfg.sweep.task_source}")
        return compose("finetune", overrides)

    def task_unit(self, model: str, task: str, seed: int) -> str:
        lineage = self.cell if model == TEACHER else self.student_dirs[model].name
        content = config_file("task", task).read_text()
        spec = {"source": self.cfg.sweep.get("task_source"), "data_dir": self.cfg.get("data_dir"),
                "overrides": list(self.cfg.sweep.get("finetune_overrides") or []), "model": model}
        if model in self.plan.students:
            spec["distill_task"] = OmegaConf.to_container(self.plan.students[model].distill, resolve=True).get("task")
        return unit_id(lineage, {"task": task, "content": content}, seed, spec)

    def task_units(self, task: str, seed: int) -> None:
        models = [TEACHER, *self.student_dirs]
        units = {m: self.task_unit(m, task, seed) for m in models}
        pending = [m for m in models if units[m] not in self.done]
        if not pending:
            return
        ft = self.finetune_cfg(task)
        source = str(ft.task.source)
        try:
            setup = prepare_task(ft)
        except Exception as error:  # noqa: BLE001 - every model of this task fails alike
            for m in pending:
                self.record(units[m], m, str(ft.task.name), seed, source, status="failed",
                            error=f"task data: {type(error).__name__}: {error}")
            return
        # TinyBERT learns the task from the fine-tuned teacher: the teacher is trained first, also when only
        # its student's unit is left (the same seed gives the same teacher; its record is not written twice).
        needs_teacher = any(self.is_task_distilled(m) for m in pending)
        teacher = None
        for model in [TEACHER, *pending] if needs_teacher and TEACHER not in pending else pending:
            unit = units[model]
            try:
                if model in self.failed:
                    raise DistillError(self.failed[model])
                module, result = self.train_model(model, setup, seed, teacher, unit)
                if model == TEACHER:
                    teacher = module.model
                if unit in self.done:
                    continue  # the teacher was only needed as TinyBERT's teacher: its record exists
                self.record(unit, model, str(ft.task.name), seed, source, status="ok", error=None,
                            metrics=result["best"], primary=result["primary"],
                            score=percent(ft.task, result["primary"]["value"]), lr=result["lr"],
                            best_epoch=result["best_epoch"], epochs=result["epochs"],
                            params={"backbone": count_parameters(module.model.backbone)},
                            shape=shape_of(module.model.config), wall_seconds=result["wall_seconds"],
                            config=drop_secrets(OmegaConf.to_container(setup.cfg, resolve=True)))
            except Exception as error:  # noqa: BLE001 - recorded, and the sweep goes on
                log.error("%s on %s (seed %d) failed:\n%s", model, task, seed, traceback.format_exc())
                if unit not in self.done:
                    self.record(unit, model, str(ft.task.name), seed, source, status="failed",
                                error=f"{type(error).__name__}: {error}")

    def task_logger_meta(self, model: str, setup, seed: int) -> dict:
        return {"name": f"{self.plan.results}-{model}-{setup.cfg.task.name}-s{seed}", "group": self.plan.results,
                "tags": [model]}

    def is_task_distilled(self, model: str) -> bool:
        """TinyBERT students learn each task from the fine-tuned teacher; the teacher and DistilBERT fine-tune."""
        return model in self.plan.students and self.plan.students[model].distill.kind == "tinybert"

    def train_model(self, model: str, setup, seed: int, teacher, unit: str):
        from plmbench.lit.finetune_module import FinetuneModule

        run_dir = paths.runs_root() / "units" / unit
        init_dir = self.teacher_dir if model == TEACHER else self.student_dirs[model]
        init = task_init(setup, init_dir)
        task = OmegaConf.to_container(setup.cfg.task, resolve=True)
        optim = OmegaConf.to_container(setup.cfg.optim, resolve=True)
        fused = bool(setup.cfg.impl.get("fused_adamw"))
        common = {"eval_splits": setup.splits, "metric": setup.metric, "primary": setup.primary, "optim": optim,
                  "fused_adamw": fused}
        if not self.is_task_distilled(model):
            return train_task(setup, init, seed, run_dir, lambda lr, steps: FinetuneModule(
                init.config, task, lr, steps, **common), logger_meta=self.task_logger_meta(model, setup, seed))
        if teacher is None:
            raise DistillError("task-specific distillation needs the fine-tuned teacher, which failed")
        return self.distill_on_task(model, setup, init, seed, teacher, task, common, run_dir)

    def distill_on_task(self, model: str, setup, init, seed: int, teacher, task: dict, common: dict, run_dir: Path):
        from plmbench.distill.lit import TaskDistillation
        from plmbench.distill.losses import TinyBertLoss
        from plmbench.distill.students import uniform_layer_map

        settings = OmegaConf.to_container(self.plan.students[model].distill, resolve=True)
        stage = settings.get("task") or {}
        base = int(setup.cfg.epochs if setup.cfg.get("epochs") is not None else setup.cfg.task.epochs)
        intermediate, prediction = int(stage.get("intermediate_epochs") or base), \
            int(stage.get("prediction_epochs") or base)
        weights = {**settings["loss"], "prediction": 1.0}  # the second stage ends with the predictions

        def build(lr, steps):
            loss = TinyBertLoss(init.config.hidden_size, teacher.config.hidden_size,
                                uniform_layer_map(init.config.num_layers, teacher.config.num_layers), weights,
                                settings.get("temperature", 1.0), prediction=task["kind"])
            return TaskDistillation(teacher, init.config, task, lr, steps, loss=loss,
                                    intermediate_epochs=intermediate, **common)

        return train_task(setup, init, seed, run_dir, build, epochs=intermediate + prediction,
                          logger_meta=self.task_logger_meta(model, setup, seed))


def run(overrides: list[str]) -> None:
    """The entry point `plmbench sweep` dispatches to for experiment=distillation; the sweep command then renders
    the table as `plmbench table` does (plmbench.distill.table, the experiment's renderer)."""
    from plmbench.impl import apply_threads

    p = plan(overrides)
    apply_threads(p.cfg.impl)
    print(f"[distill] {p.results}: teacher + {', '.join(p.students)} on {len(p.tasks)} task(s) x "
          f"{len(p.seeds)} seed(s)", flush=True)
    DistillationSweep(p).run()
