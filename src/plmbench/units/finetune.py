"""The fine-tuning unit kind (conf/unit/finetune.yaml): every task x seed of the sweep, the cell fine-tuned on the
task by plmbench.lit.finetuning (the task's lr grid, the lr chosen by the median over seeds)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench.units import Cell, Unit, UnitKind, sweep_seeds, task_unit_id


class FinetuneUnits(UnitKind):
    def units(self, cell: Cell) -> list[Unit]:
        # An experiment that also prompts the model (sweep.shots) tells its fine-tuned rows apart by this axis.
        shots = {"shots": "finetuned"} if OmegaConf.select(cell.cfg, "sweep.shots") else {}
        return [Unit(self.name, self.unit_id(cell, task, seed), task, seed, axes=shots, fields=shots)
                for task in cell.cfg.sweep.tasks for seed in sweep_seeds(cell.cfg)]

    def unit_id(self, cell: Cell, task: str, seed: int) -> str:
        return task_unit_id(cell, task, seed)

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        from plmbench.lit import finetuning  # the module, not the function: tests replace it to count calls

        return finetuning.run_finetuning(unit_cfg, out_dir, logger_meta=meta)
