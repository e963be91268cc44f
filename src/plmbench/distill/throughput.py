"""The throughput unit kind (conf/unit/throughput.yaml): sequences per second of a cell's backbone forward, and for
a distillation student its speed-up over its teacher, the two measured in one process taking turns call by call,
so load from other processes slows them alike. Settings: `sweep.throughput` (defaults below)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from plmbench import paths
from plmbench.distill import DistillError
from plmbench.errors import load_weights_only
from plmbench.lineage import teacher_id, unit_id
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.units import Cell, Unit, UnitKind

DEFAULTS = {"batch_size": 1, "seq_len": 128, "seconds": 2.0}


def throughput_settings(cfg: DictConfig) -> dict:
    given = OmegaConf.to_container(cfg.sweep.throughput, resolve=True) if OmegaConf.select(cfg, "sweep.throughput") \
        else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise DistillError(f"sweep.throughput: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(DEFAULTS)}")
    settings = {**DEFAULTS, **given}
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise DistillError(f"sweep.throughput.{key}={value!r}: must be a positive number")
    return settings


class ThroughputUnits(UnitKind):
    def units(self, cell: Cell) -> list[Unit]:
        settings = throughput_settings(cell.cfg)
        return [Unit(self.name, unit_id(cell.id, {"name": "throughput", **settings}, 0, {}), "throughput", 0)]

    def config(self, unit: Unit, cell: Cell) -> DictConfig:
        return cell.cfg  # no task: the record keeps the cell's config

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        settings = throughput_settings(cell.cfg)
        models = {"cell": load_backbone(cell.dir)}
        if OmegaConf.select(cell.cfg, "distill") is not None:  # a student: timed beside its teacher
            models["teacher"] = load_backbone(paths.runs_root() / "cells" / teacher_id(cell.cfg))
        device = torch.device("cuda") if torch.cuda.is_available() and cell.cfg.trainer.accelerator != "cpu" \
            else torch.device("cpu")
        rates = inference_throughput(models, models["cell"].config.vocab_size, int(settings["batch_size"]),
                                     int(settings["seq_len"]), float(settings["seconds"]), device)
        speedup = rates["cell"] / rates["teacher"] if "teacher" in rates else 1.0
        return {"best": {"sequences_per_second": rates["cell"], "speedup": speedup, "device": str(device),
                         "threads": torch.get_num_threads()}}


def load_backbone(run_dir: Path) -> Backbone:
    """The backbone of a pre-training or distillation run directory (the model as built: its checkpoint's shape)."""
    checkpoint = load_weights_only(Path(run_dir) / "checkpoints" / "last.ckpt")
    model = (checkpoint.get("hyper_parameters") or {}).get("model") or \
        OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml").model, resolve=True)
    backbone = Backbone(ModelConfig.from_mapping(model))
    backbone.load_state_dict({k.removeprefix("model.backbone."): v for k, v in checkpoint["state_dict"].items()
                              if k.startswith("model.backbone.")})
    return backbone


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
