"""Lineage: what identifies a pre-training cell and a fine-tuning unit.

A cell's id hashes exactly the settings that determine its weights: architecture, objective, corpus, data and
masking, optimiser and schedule, steps, effective batch, seed and numeric precision (impl.precision: bf16 and
fp32 give different weights). Run names, timestamps, the experiment or scale name, loggers and impl's pure speed
settings (compile, threads, kernels) do not enter it, so Table 4's E=128 all-shared cell *is* Table 5's SOP row,
and a rerun finds what it already trained. A unit (cell x task x seed) hashes the cell id with the task's
config, the fine-tuning settings and the seed. A distillation student's weights follow from its teacher's and
how it is distilled, so its id hashes its teacher's cell id with the `distill` settings.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from plmbench.optim import identity as optim_identity

LINEAGE_VERSION = 2  # bump when training code changes what a config produces, so old cells are not reused
WEIGHT_TRAINER_KEYS = ("max_steps", "batch_size", "accumulate_grad_batches", "gradient_clip_val", "devices",
                       "num_nodes")


def digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def cell_spec(cfg: DictConfig) -> dict:
    trainer = _plain(cfg.trainer)
    spec = {
        "version": LINEAGE_VERSION,
        "model": _plain(cfg.model),
        "objective": _plain(cfg.objective),
        "corpus": _plain(cfg.corpus),
        "data": _plain(cfg.data),
        "optim": optim_identity(_plain(cfg.optim)),
        "trainer": {k: trainer.get(k) for k in WEIGHT_TRAINER_KEYS},
        "seed": int(cfg.seed),
        # bf16-mixed and 32-true train different weights: a GPU bf16 cell is not a CPU fp32 cell
        "precision": str(OmegaConf.select(cfg, "impl.precision", default="32-true")),
    }
    knowledge = _plain(OmegaConf.select(cfg, "knowledge"))
    if knowledge and knowledge.get("enabled"):  # knowledge=none stays out: cells from before the group keep ids
        spec["knowledge"] = knowledge
    return spec


def cell_id(cfg: DictConfig) -> str:
    distill = OmegaConf.select(cfg, "distill")
    if distill is None:
        return digest(cell_spec(cfg))
    # the teacher's directory and the task-stage settings do not change the student's general-distillation weights
    settings = {k: v for k, v in _plain(distill).items() if k not in ("teacher", "task")}
    return digest({"version": LINEAGE_VERSION, "teacher": teacher_id(cfg), "distill": settings, "seed": int(cfg.seed),
                   "optim": optim_identity(_plain(cfg.optim))})


def teacher_id(cfg: DictConfig) -> str:
    """The cell a student is distilled from: the same config without `distill`."""
    return digest(cell_spec(cfg))


def unit_id(cell: str, task: dict, seed: int, finetune: dict) -> str:
    return digest({"version": LINEAGE_VERSION, "cell": cell, "task": task, "seed": int(seed), "finetune": finetune})
