"""Distillation runs: general distillation into a student run directory, and task-level training of a teacher or
a student (fine-tuning, or TinyBERT's task-specific distillation from a fine-tuned teacher).

`distill.teacher` is a `plmbench pretrain` run directory (a sweep cell, runs/cells/<lineage id>) or a Hugging Face
folder (`plmbench export-hf` writes one). The teacher must have an MLM head (objectives mlm, mlm_nsp, mlm_sop).
General distillation reads batches from the teacher's own pre-training data (its config.yaml's corpus, data and
objective) with the teacher's tokenizer; for an HF teacher the composed config's corpus and data are used, and
the tokenizer they give must be the folder's. The student run directory has the layout of a pre-training run
(config.yaml whose `model` is the student, tokenizer/, checkpoints/last.ckpt, metrics.json), so `plmbench
finetune init=<it>` and this module's task runs take it as an init.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer
from torch import nn

from plmbench.data.tokenizer import SpecialTokens, save_hf_tokenizer, special_tokens
from plmbench.distill import DistillError
from plmbench.distill.lit import GeneralDistillation
from plmbench.distill.losses import DistilBertLoss, TinyBertLoss
from plmbench.distill.students import (
    STUDENTS,
    build_student,
    count_parameters,
    distilbert_config,
    shape_of,
    tinybert_config,
    uniform_layer_map,
)
from plmbench.errors import load_weights_only
from plmbench.lit.finetune_init import folder_layout
from plmbench.lit.pretrain_data import PretrainData
from plmbench.lit.run_metrics import RunMetrics
from plmbench.models.config import ModelConfig
from plmbench.objectives.counting import describe_config
from plmbench.objectives.mlm import MaskedLM

log = logging.getLogger(__name__)
TEACHER_LAYOUTS = {
    "pretrain_run": ("config.yaml", "tokenizer/tokenizer.json", "checkpoints/last.ckpt"),
    "hf": ("config.json", "tokenizer.json"),
}


# ------------------------------------------------------------------------------------------ settings


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DistillError(f"{key}={value!r}: must be a positive integer")
    return value


def distill_settings(cfg: DictConfig, need_teacher: bool = True) -> dict:
    """The resolved `distill` node, checked: fails in seconds, naming the key."""
    if cfg.get("distill") is None:
        raise DistillError(f"distill is not set: add +distill=<{'|'.join(STUDENTS)}> (conf/distill/)")
    settings = OmegaConf.to_container(cfg.distill, resolve=True)
    if settings.get("kind") not in STUDENTS:
        raise DistillError(f"distill.kind={settings.get('kind')!r}: allowed values are {', '.join(STUDENTS)}")
    if need_teacher and not settings.get("teacher"):
        raise DistillError("distill.teacher is not set: give a `plmbench pretrain` run directory (e.g. "
                           "runs/cells/<id>) or a Hugging Face folder")
    for key in ("max_steps", "batch_size"):
        _positive_int(settings.get(key), f"distill.{key}")
    lr = settings.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise DistillError(f"distill.lr={lr!r}: must be a number > 0")
    return settings


def build_loss(settings: dict, student: ModelConfig, teacher: ModelConfig) -> nn.Module:
    """DistilBERT's loss, or TinyBERT's with its projections and the uniform layer map."""
    weights, temperature = settings.get("loss"), settings.get("temperature", 1.0)
    if settings["kind"] == "distilbert":
        return DistilBertLoss(weights, temperature)
    return TinyBertLoss(student.hidden_size, teacher.hidden_size,
                        uniform_layer_map(student.num_layers, teacher.num_layers), weights, temperature)


def check_student_shape(settings: dict, teacher: ModelConfig) -> ModelConfig:
    """The student's config from the teacher's shape alone (before any teacher exists: sweep planning)."""
    if settings["kind"] == "distilbert":
        return distilbert_config(teacher)
    return tinybert_config(teacher, settings.get("student"))


# ------------------------------------------------------------------------------------------ teacher


@dataclass
class Teacher:
    kind: str  # pretrain_run | hf
    path: Path
    model: MaskedLM
    tokenizer: Tokenizer
    special: SpecialTokens
    run_config: DictConfig | None  # a pre-training run's config.yaml: its corpus, data and objective

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "shape": shape_of(self.config),
                "backbone_params": count_parameters(self.model.backbone)}


def teacher_kind(path: str | Path) -> tuple[str, Path]:
    return folder_layout(path, TEACHER_LAYOUTS, "distill.teacher", DistillError,
                         "give a pre-training run directory or a Hugging Face folder")


def _pretrain_run_model(folder: Path) -> tuple[MaskedLM | nn.Module, DictConfig]:
    from plmbench.objectives import build_objective

    run_config = OmegaConf.load(folder / "config.yaml")
    checkpoint = load_weights_only(folder / "checkpoints" / "last.ckpt")
    hparams = checkpoint.get("hyper_parameters") or {}  # the model as built: vocab_size is the tokenizer's
    model_cfg = hparams.get("model") or OmegaConf.to_container(run_config.model, resolve=True)
    objective = hparams.get("objective") or OmegaConf.to_container(run_config.objective, resolve=True)
    model = build_objective(ModelConfig.from_mapping(model_cfg), objective)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise DistillError(f"distill.teacher={folder}: the checkpoint does not fit its config.yaml: "
                           f"{' '.join(str(error).split())[:300]}") from None
    return model, run_config


def load_teacher(path: str | Path) -> Teacher:
    from plmbench.objectives.hf import objective_from_hf

    kind, folder = teacher_kind(path)
    try:
        if kind == "pretrain_run":
            model, run_config = _pretrain_run_model(folder)
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
        else:
            model, run_config = objective_from_hf(folder), None
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        special = special_tokens(tokenizer)
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise DistillError(f"distill.teacher={folder}: {' '.join(str(error).split())}") from None
    if not isinstance(model, MaskedLM):
        raise DistillError(f"distill.teacher={folder}: a {type(model).__name__} teacher has no MLM head to "
                           "distil from; use a teacher pre-trained with objective mlm, mlm_nsp or mlm_sop")
    return Teacher(kind, folder, model, tokenizer, special, run_config)


# ------------------------------------------------------------------------------------------ general distillation


class DistillData(PretrainData):
    """The pre-training batches; held out, only the objective's own set (the NSP/SOP probes do not apply)."""

    def val_dataloader(self):
        return super().val_dataloader()[:1]


def general_data_config(cfg: DictConfig, teacher: Teacher, settings: dict) -> DictConfig:
    """The composed config with the teacher's data (corpus, data, objective, tokenizer settings) and the
    distillation's budget (steps, batch, learning rate)."""
    merged = OmegaConf.to_container(cfg, resolve=True)
    if teacher.run_config is not None:
        own = OmegaConf.to_container(teacher.run_config, resolve=True)
        merged.update({key: own[key] for key in ("corpus", "data", "objective")})
        merged["model"] = own["model"]
    steps = int(settings["max_steps"])
    trainer = merged["trainer"]
    trainer.update(max_steps=steps, batch_size=int(settings["batch_size"]),
                   val_check_interval=min(int(trainer["val_check_interval"]), steps),
                   checkpoint_every_n_steps=min(int(trainer["checkpoint_every_n_steps"]), steps))
    merged["optim"] = {**merged["optim"], "lr": float(settings["lr"])}
    merged.pop("distill", None)
    return OmegaConf.create(merged)


def _check_vocabulary(data: PretrainData, teacher: Teacher) -> None:
    if data.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise DistillError(
            f"distill.teacher={teacher.path}: the corpus settings (corpus, model.tokenizer, model.vocab_size) give "
            "a tokenizer other than the teacher's; set them to what the teacher was trained with")


def run_distillation(cfg: DictConfig, run_dir: Path, logger_meta: dict | None = None) -> dict:
    """General distillation of `cfg.distill.teacher` into a new student in `run_dir` (resumed from its last.ckpt);
    returns metrics.json: first/last loss, held-out loss terms and MLM accuracies, student and teacher sizes."""
    from plmbench.lit.loggers import build_logger, finished, log_final, save_config, stable_run_id
    from plmbench.lit.pretraining import fit_resumable, pretraining_trainer

    settings = distill_settings(cfg)
    run_dir = Path(run_dir)
    teacher = load_teacher(settings["teacher"])
    data_cfg = general_data_config(cfg, teacher, settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    student, init = build_student(settings["kind"], teacher.model, settings.get("student"))
    loss = build_loss(settings, student.config, teacher.config)
    data = DistillData(data_cfg)
    data.prepare()
    _check_vocabulary(data, teacher)
    module = GeneralDistillation(teacher.model, student, loss, OmegaConf.to_container(data_cfg.optim),
                                 OmegaConf.to_container(data_cfg.impl), int(settings["max_steps"]))
    run_config = OmegaConf.to_container(data_cfg)
    run_config["model"] = {**run_config["model"], **dataclasses.asdict(student.config)}  # what fine-tuning builds
    run_config["distill"] = {**settings, "teacher": teacher.describe(), **init}
    save_config(OmegaConf.create(run_config), run_dir / "config.yaml")
    save_hf_tokenizer(teacher.tokenizer, teacher.special, run_dir / "tokenizer", student.config.family)
    extra = {"kind": settings["kind"], "teacher": teacher.describe(), "student": shape_of(student.config), **init,
             "counts": describe_config(OmegaConf.create(run_config)),  # the student's sizes, for the sweep's records
             "params": {"student_backbone": count_parameters(student.backbone),
                        "teacher_backbone": count_parameters(teacher.model.backbone)},
             "vocab_size": data.vocab_size, "instances": len(data.train)}
    metrics = RunMetrics(run_dir / "metrics.json", extra=extra)
    meta = logger_meta or {}
    logger = build_logger(run_config.get("logger", {"kind": "none"}), run_dir, meta.get("name", run_dir.name),
                          run_config, group=meta.get("group"), job_type="distill", tags=meta.get("tags"),
                          run_id=meta.get("id") or stable_run_id(run_dir))  # a relaunch continues this W&B run
    with finished(logger):  # the W&B run ends whatever happens: failed (exit code 1) if training raised
        trainer = pretraining_trainer(data_cfg, run_dir, [metrics], logger)
        fit_resumable(trainer, module, data, data_cfg, run_dir, metrics)  # weights_only; SIGTERM: saved
        log_final(logger, json.loads((run_dir / "metrics.json").read_text()))
    return json.loads((run_dir / "metrics.json").read_text())


def train_student(cfg: DictConfig, cell_dir: Path, logger_meta: dict | None = None) -> dict:
    """A sweep cell's training when the cell is a student (`sweep.cell_trainer` of conf/distill/): general
    distillation from its teacher cell, runs/cells/<teacher id>, which the sweep trains first (`+distill=none`)."""
    from plmbench import paths
    from plmbench.lineage import teacher_id

    teacher_dir = paths.runs_root() / "cells" / teacher_id(cfg)
    metrics = teacher_dir / "metrics.json"
    if not metrics.is_file() or json.loads(metrics.read_text()).get("status") != "finished":
        raise DistillError(f"the teacher cell {teacher_dir.name} is not trained yet: put `+distill=none` first in "
                           "the grid (it trains the teacher), or relaunch once it has finished")
    return run_distillation(OmegaConf.merge(cfg, {"distill": {"teacher": str(teacher_dir)}}), cell_dir, logger_meta)


# ------------------------------------------------------------------------------------------ task level


@dataclass
class TaskSetup:
    """One task's features, evaluation splits and metric, built once and shared by teacher and students (they
    all use the teacher's tokenizer)."""

    cfg: DictConfig  # a composed `finetune` config
    train: object
    splits: list
    train_rows: int
    metric: object
    primary: str
    tokenizer_vocab: dict


def prepare_task(ft_cfg: DictConfig) -> TaskSetup:
    from plmbench import metrics as task_metrics
    from plmbench.lit.finetuning import load_init, prepare_data, primary_metric, validate_finetune

    validate_finetune(ft_cfg)
    init = load_init(ft_cfg)
    train, splits, rows = prepare_data(ft_cfg, init)
    metric = task_metrics.load(ft_cfg.task.metric.name, ft_cfg.task.metric.get("config"))
    return TaskSetup(ft_cfg, train, splits, rows, metric, primary_metric(ft_cfg.task), init.tokenizer.get_vocab())


def task_init(setup: TaskSetup, init_dir: Path):
    """The Init of a teacher or student directory, checked to share the task features' tokenizer."""
    from plmbench.lit.finetuning import load_init

    init = load_init(OmegaConf.merge(setup.cfg, {"init": str(init_dir)}))
    if init.tokenizer.get_vocab() != setup.tokenizer_vocab:
        raise DistillError(f"{init_dir}: its tokenizer differs from the teacher's; a student must keep the "
                           "teacher's vocabulary")
    return init


def train_task(setup: TaskSetup, init, seed: int, run_dir: Path, build: Callable, epochs: int | None = None,
               logger_meta: dict | None = None):
    """Train one model on the task per learning rate of the grid (BERT's protocol); returns (module, result) of
    the rate with the best dev score. `build(lr, total_steps)` makes the module (a FinetuneModule). Each rate's run
    is logged to setup.cfg.logger (`logger_meta`: name, group, tags), its W&B run finished whatever happens."""
    from plmbench.data.features import FeatureCollator
    from plmbench.lit.finetuning import fit_task, flat_metrics, learning_rates, task_loader
    from plmbench.lit.loggers import build_logger

    cfg, task, meta = setup.cfg, setup.cfg.task, logger_meta or {}
    epochs = int(epochs or (cfg.epochs if cfg.get("epochs") is not None else task.epochs))
    collate, workers, batch_size = FeatureCollator(init.special), int(cfg.trainer.get("num_workers", 0)), \
        int(task.batch_size)
    best = None
    for lr in learning_rates(task):
        started = time.perf_counter()
        pl.seed_everything(seed, workers=True, verbose=False)
        train_loader = task_loader(setup.train, collate, batch_size, True, seed, workers)
        eval_loaders = [task_loader(s.features, collate, 2 * batch_size, False, seed, workers) for s in setup.splits]
        module = build(lr, epochs * len(train_loader))
        init.load_weights(module.model)
        name = f"lr{lr:g}-seed{seed}"
        logger = build_logger(OmegaConf.to_container(cfg.logger, resolve=True), run_dir / "runs" / name,
                              f"{meta.get('name', run_dir.name)}-{name}", OmegaConf.to_container(cfg, resolve=True),
                              group=meta.get("group"), job_type="finetune", tags=meta.get("tags"))
        fit_task(cfg, module, train_loader, eval_loaders, epochs, logger, run_dir)
        split = setup.splits[0].name
        result = {"lr": lr, "seed": seed, "epochs": epochs, "best_epoch": module.best["epoch"],
                  "best": flat_metrics(module.best["metrics"], split), "history": module.history,
                  "primary": {"name": setup.primary, "split": split,
                              "value": module.best["metrics"][split].get(setup.primary)},
                  "score": module.score(module.best["metrics"]), "wall_seconds": time.perf_counter() - started}
        if best is None or result["score"] > best[1]["score"]:
            best = (module, result)
    return best


# ------------------------------------------------------------------------------------------ command


def main(overrides: list[str]) -> None:
    """`plmbench distill +distill=<distilbert|tinybert> distill.teacher=<dir> [overrides]`: one general
    distillation in its Hydra run directory (the CLI entry the lead may register in plmbench.cli)."""
    from plmbench.errors import report_user_errors
    from plmbench.hydra_app import run_app

    def task(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        with report_user_errors():
            metrics = run_distillation(cfg, Path(HydraConfig.get().runtime.output_dir))
        print(f"distillation finished: {metrics['kind']} student {metrics['student']}, loss "
              f"{metrics['first_train_loss']:.3f} -> {metrics['last_train_loss']:.3f}")

    run_app("pretrain", task, overrides, validate=lambda cfg: teacher_kind(distill_settings(cfg)["teacher"]))
