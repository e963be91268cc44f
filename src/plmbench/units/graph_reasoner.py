"""The graph-reasoner unit kind (conf/unit/graph_reasoner.yaml): KagNet / QA-GNN-style rows of a sweep.

On a cell without knowledge fusion (the language model alone, as KagNet and QA-GNN start from), every
multiple-choice task x seed of the sweep is fine-tuned with a graph reasoner (`reasoner=rgcn`, lit/graph_reasoning.py)
instead of the task's own head. Records carry the axis `reasoner`; the fine-tuning kind's records of the same cell
carry none, which a table reads as reasoner=none. Other task kinds have no graph to reason over and get no unit.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench.configuration import config_file
from plmbench.units import Cell, Unit, UnitKind, finetune_config, sweep_seeds, task_unit_id


def task_kind(task: str) -> str | None:
    path = config_file("task", task)
    return str(OmegaConf.load(path).get("kind")) if path is not None else None


class GraphReasonerUnits(UnitKind):
    def __init__(self, reasoner: str = "rgcn"):
        self.reasoner = reasoner

    def units(self, cell: Cell) -> list[Unit]:
        if OmegaConf.select(cell.cfg, "knowledge.enabled"):  # a reasoner on top of fusion is not a published row
            return []
        axes = {"reasoner": self.reasoner}
        return [Unit(self.name, task_unit_id(cell, task, seed, {"reasoner": self.reasoner}), task, seed, axes=axes,
                     fields=axes)
                for task in cell.cfg.sweep.tasks if task_kind(task) == "multiple_choice"
                for seed in sweep_seeds(cell.cfg)]

    def config(self, unit: Unit, cell: Cell) -> DictConfig:
        return finetune_config(cell, unit.task, unit.seed, extra=[f"reasoner={self.reasoner}"])

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        from plmbench.lit import finetuning

        return finetuning.run_finetuning(unit_cfg, out_dir, logger_meta=meta)
