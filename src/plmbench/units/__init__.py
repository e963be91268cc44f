"""Unit kinds: the work a sweep does on a pre-trained cell (fine-tune, prompt with k shots, train ELMo's task model,
distil a task, time inference), each a plug-in chosen by config.

`sweep.units` lists options of conf/unit/; each file names its kind's class by `_target_` (Hydra instantiates
it). A kind answers two questions and nothing else:

    units(cell) -> [Unit]                              which units this cell has (ids, task, seed, axes)
    run(unit, cell, unit_cfg, out_dir, meta) -> dict   run one; returns its metrics ("best": the headline dict)

and may override `config(unit, cell)`, the unit's composed config (by default the `finetune` config of its task,
init = the cell). The cell runner (plmbench.sweep.runner) pre-trains the cell once, then runs each pending unit
under its lock, records it and reports progress; it never knows which kind it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench.configuration import compose, config_file, config_options
from plmbench.errors import UserError
from plmbench.lineage import unit_id


@dataclass(frozen=True)
class Cell:
    """What a unit kind sees of its cell."""

    cfg: DictConfig  # the cell's composed `pretrain` config (sweep.* included)
    id: str  # its lineage id
    dir: Path  # runs/cells/<id>: config.yaml, tokenizer/, checkpoints/last.ckpt
    overrides: tuple[str, ...] = ()  # the cell's own overrides (experiment, scale, grid values, command line)


@dataclass(frozen=True)
class Unit:
    kind: str  # the conf/unit option that runs it
    id: str  # its id in the results store (plmbench.lineage.unit_id)
    task: str  # a conf/task option (glue/sst2), or what the unit measures when it has no task (throughput)
    seed: int
    axes: dict = field(default_factory=dict)  # added to the cell's axes in the record (the table's rows match them)
    fields: dict = field(default_factory=dict)  # added to the record itself


class UnitKind:
    """The base of every kind: a unit's config is the `finetune` config of its task, with the cell as init."""

    name = "unit"

    def units(self, cell: Cell) -> list[Unit]:
        raise NotImplementedError

    def config(self, unit: Unit, cell: Cell) -> DictConfig:
        return finetune_config(cell, unit.task, unit.seed)

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        raise NotImplementedError


def finetune_config(cell: Cell, task: str, seed: int, init: Path | None = None, extra: list[str] = ()) -> DictConfig:
    """The `finetune` config of one task x seed on the cell (or on `init`), with the sweep's fine-tuning settings
    and a kind's own `extra` overrides."""
    kept = [o for o in cell.overrides if not o.lstrip("+~").startswith(("sweep.", "hydra."))]  # not finetune keys
    overrides = kept + [f"task={task}", f"init={init or cell.dir}", f"seeds=[{seed}]"]
    overrides += list(cell.cfg.sweep.get("finetune_overrides") or []) + list(extra)
    if cell.cfg.sweep.get("task_source"):
        overrides.append(f"task.source={cell.cfg.sweep.task_source}")
    return compose("finetune", overrides)


def sweep_seeds(cfg: DictConfig) -> list[int]:
    """The fine-tuning seeds; none would pre-train every cell and then fine-tune nothing, so it is refused."""
    from plmbench.models.config import ConfigError

    seeds = list(OmegaConf.select(cfg, "sweep.seeds") or [])
    if not seeds:
        raise ConfigError("sweep.seeds=[]: give at least one fine-tuning seed, e.g. sweep.seeds=[0] or [0,1,2]")
    if any(isinstance(seed, bool) or not isinstance(seed, int) for seed in seeds):
        raise ConfigError(f"sweep.seeds={seeds}: seeds must be integers, e.g. sweep.seeds=[0,1,2]")
    return seeds


def task_unit_id(cell: Cell, task: str, seed: int, extra: dict | None = None) -> str:
    """A task x seed unit's id: the cell, the task's config file and the sweep's fine-tuning settings (plus `extra`,
    a kind's own settings). The file's content is hashed rather than composed: checking 50 units stays instant."""
    task_file = config_file("task", task)  # the user's own when PLMBENCH_CONFIG_PATH has one of that name
    content = task_file.read_text() if task_file is not None else task
    spec = {"source": cell.cfg.sweep.get("task_source"), "data_dir": cell.cfg.get("data_dir"),
            "overrides": list(cell.cfg.sweep.get("finetune_overrides") or []), **(extra or {})}
    return unit_id(cell.id, {"task": task, "content": content}, seed, spec)


def load_kinds(cfg: DictConfig) -> dict[str, UnitKind]:
    """{name: kind} for `sweep.units`, each built from conf/unit/<name>.yaml; an unknown name fails in one line."""
    from hydra.utils import instantiate

    kinds = {}
    for name in OmegaConf.select(cfg, "sweep.units") or []:
        path = config_file("unit", str(name))
        if path is None:
            raise UserError(f"sweep.units: unknown unit kind {name!r}; allowed: {', '.join(config_options('unit'))}")
        kind = instantiate(OmegaConf.load(path))
        kind.name = str(name)
        kinds[str(name)] = kind
    return kinds
