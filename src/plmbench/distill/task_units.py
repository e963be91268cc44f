"""The task-distillation unit kind (conf/unit/distill_task.yaml; TinyBERT's second stage): per task x seed of a
student cell, the teacher cell is fine-tuned on the task, then the student learns the task from it (intermediate
layers first, predictions last). The teacher is fine-tuned here with the same seed and protocol as its own
fine-tuning unit, so the student learns from that model without the sweep keeping task weights around."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench import paths
from plmbench.distill.run import prepare_task, task_init, train_task
from plmbench.lineage import teacher_id
from plmbench.units import Cell, Unit, task_unit_id
from plmbench.units.finetune import FinetuneUnits


class TaskDistillUnits(FinetuneUnits):
    def unit_id(self, cell: Cell, task: str, seed: int) -> str:
        stage = OmegaConf.to_container(cell.cfg.distill, resolve=True).get("task")  # changing the stage reruns it
        return task_unit_id(cell, task, seed, {"distill_task": stage})

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        from plmbench.lit.finetune_module import FinetuneModule

        setup = prepare_task(unit_cfg)  # features with the student's tokenizer, which is the teacher's
        teacher = task_init(setup, paths.runs_root() / "cells" / teacher_id(cell.cfg))
        student = task_init(setup, cell.dir)
        common = _module_settings(setup)
        task = OmegaConf.to_container(setup.cfg.task, resolve=True)
        fine_tuned, _ = train_task(setup, teacher, unit.seed, out_dir / "teacher", lambda lr, steps: FinetuneModule(
            teacher.config, task, lr, steps, **common), logger_meta={**meta, "name": f"{meta.get('name')}-teacher"})
        _, result = distil_on_task(cell.cfg, setup, student, unit.seed, fine_tuned.model, task, common, out_dir, meta)
        return result


def _module_settings(setup) -> dict:
    return {"eval_splits": setup.splits, "metric": setup.metric, "primary": setup.primary,
            "optim": OmegaConf.to_container(setup.cfg.optim, resolve=True),
            "fused_adamw": bool(setup.cfg.impl.get("fused_adamw"))}


def distil_on_task(cfg: DictConfig, setup, init, seed: int, teacher, task: dict, common: dict, out_dir: Path,
                   meta: dict):
    """TinyBERT's task stage: intermediate-layer losses for `intermediate_epochs`, then the prediction loss."""
    from plmbench.distill.lit import TaskDistillation
    from plmbench.distill.losses import TinyBertLoss
    from plmbench.distill.students import uniform_layer_map

    settings = OmegaConf.to_container(cfg.distill, resolve=True)
    stage = settings.get("task") or {}
    base = int(setup.cfg.epochs if setup.cfg.get("epochs") is not None else setup.cfg.task.epochs)
    intermediate, prediction = int(stage.get("intermediate_epochs") or base), int(stage.get("prediction_epochs") or base)
    weights = {**settings["loss"], "prediction": 1.0}  # the second stage ends with the predictions

    def build(lr, steps):
        loss = TinyBertLoss(init.config.hidden_size, teacher.config.hidden_size,
                            uniform_layer_map(init.config.num_layers, teacher.config.num_layers), weights,
                            settings.get("temperature", 1.0), prediction=task["kind"])
        return TaskDistillation(teacher, init.config, task, lr, steps, loss=loss, intermediate_epochs=intermediate,
                                **common)

    return train_task(setup, init, seed, out_dir, build, epochs=intermediate + prediction, logger_meta=meta)
