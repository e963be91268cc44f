"""The ELMo unit of a sweep (experiment elmo_gpt_bert): a pre-trained biLM cell x task x seed -> metrics.

Where a Transformer cell is fine-tuned by plmbench.lit.finetuning, an ELMo cell trains an ElmoTaskModel: a ScalarMix
of the biLM's layers into a pooled linear classifier, the biLM frozen (ELMo's feature-based use) or fine-tuned.
Task rows, features, caps, epochs, batch size, schedule and per-epoch dev metrics are fine-tuning's own, so the
three models of the experiment are scored the same way (the unit reuses fine-tuning's loader, trainer and JSON
cleaning for that reason). Settings come from the optional `sweep.elmo` node:

  sweep:
    elmo:
      freeze: true    # feature-based (ELMo's use); false fine-tunes the biLM too
      pool: mean      # mean | max over real tokens
      lr: null        # null: 1e-3 when frozen (a fresh mix and classifier on fixed features), else task.lr
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from plmbench import metrics as task_metrics
from plmbench.data.features import FeatureCollator, TaggingCollator
from plmbench.data.tokenizer import special_tokens
from plmbench.errors import UserError
from plmbench.lit import finetune_module
from plmbench.lit.finetune_module import FinetuneModule
from plmbench.lit.finetuning import Init, fit_task, json_safe, prepare_data, primary_metric, task_loader
from plmbench.lit.loggers import build_logger
from plmbench.lit.run_metrics import write_json_atomic
from plmbench.models.config import ModelConfig
from plmbench.models.elmo_task import HEADS, POOLS, ElmoTaskModel
from plmbench.units import Cell, Unit
from plmbench.units.finetune import FinetuneUnits

log = logging.getLogger(__name__)
ELMO_DEFAULTS = {"freeze": True, "pool": "mean", "lr": None}
FROZEN_LR = 1e-3  # Adam's usual rate for a task model trained on fixed ELMo features


class ElmoUnitError(UserError):
    """A cell or setting the ELMo unit cannot use; the message names the path or key."""


class ElmoFinetuneModule(FinetuneModule):
    """FinetuneModule training an ElmoTaskModel in place of a Transformer TaskModel; the optimiser, schedule,
    per-epoch metrics and best-epoch choice are inherited unchanged."""

    def __init__(self, model: ElmoTaskModel, task: dict, lr: float, total_steps: int, eval_splits: list, metric,
                 primary: str, optim: dict | None = None, fused_adamw: bool = False):
        pl.LightningModule.__init__(self)  # not FinetuneModule.__init__: it would build a Transformer TaskModel
        self.model = model
        self.task, self.lr, self.total_steps = task, float(lr), int(total_steps)
        self.eval_splits, self.metric, self.primary = eval_splits, metric, primary
        self.optim, self.fused_adamw = dict(optim or {}), fused_adamw
        self.history, self.best = [], None
        self.frozen = False  # the ELMo unit fine-tunes its whole model (task.frozen is a Transformer probe's)
        self._train_loss, self._train_batches = 0.0, 0
        self._logits = []


def elmo_settings(ft_cfg: DictConfig) -> dict:
    given = OmegaConf.to_container(ft_cfg.sweep.elmo, resolve=True) if OmegaConf.select(ft_cfg, "sweep.elmo") else {}
    unknown = set(given) - set(ELMO_DEFAULTS)
    if unknown:
        raise ElmoUnitError(f"sweep.elmo.{min(unknown)}: unknown key; allowed: {', '.join(ELMO_DEFAULTS)}")
    settings = {**ELMO_DEFAULTS, **given}
    if settings["pool"] not in POOLS:
        raise ElmoUnitError(f"sweep.elmo.pool={settings['pool']!r}: allowed values are {', '.join(POOLS)}")
    return settings


def load_bilm_run(run_dir: Path) -> tuple[ModelConfig, Tokenizer]:
    """The biLM's shape and tokenizer from a BiLM pre-training run directory."""
    missing = [n for n in ("config.yaml", "tokenizer/tokenizer.json", "checkpoints/last.ckpt")
               if not (run_dir / n).is_file()]
    if missing:
        raise ElmoUnitError(f"{run_dir}: not a pre-training run (missing {', '.join(missing)})")
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    if OmegaConf.select(run_cfg, "objective.name") != "bilm":
        raise ElmoUnitError(f"{run_dir}: objective={OmegaConf.select(run_cfg, 'objective.name')}; the ELMo unit "
                            "needs a biLM pre-training run (model=elmo objective=bilm)")
    return ModelConfig.from_mapping(run_cfg.model), Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json"))


def run_elmo_unit(ft_cfg: DictConfig, cell_dir: Path, seed: int, out_dir: Path,
                  logger_meta: dict | None = None) -> dict:
    """Train and evaluate an ElmoTaskModel on ft_cfg.task from the biLM in `cell_dir`; writes out_dir/metrics.json.

    `ft_cfg` is the composed `finetune` config the sweep builds for a unit (task=<task>, init=<cell dir>, the task
    source, caps, epochs). Returns metrics with fine-tuning's result keys ("best", "best_by_split", "primary",
    "best_epoch", "history") plus the ELMo settings (freeze, pool, lr) and trainable parameter counts.
    """
    started, cell_dir, out_dir = time.perf_counter(), Path(cell_dir), Path(out_dir)
    task, settings = ft_cfg.task, elmo_settings(ft_cfg)
    if task.kind not in HEADS or task.kind not in finetune_module.SCORERS:
        allowed = sorted(set(HEADS) & set(finetune_module.SCORERS))
        raise ElmoUnitError(f"task.kind={task.kind}: the ELMo unit trains and scores {', '.join(allowed)}")
    config, tokenizer = load_bilm_run(cell_dir)
    init = Init("pretrain_run", cell_dir, config, tokenizer, special_tokens(tokenizer))
    train, splits, train_rows = prepare_data(ft_cfg, init)
    metric = task_metrics.load(task.metric.name, task.metric.get("config"))
    epochs = int(ft_cfg.epochs if ft_cfg.get("epochs") is not None else task.epochs)
    lr = float(settings["lr"] or (FROZEN_LR if settings["freeze"] else task.lr))

    pl.seed_everything(int(seed), workers=True, verbose=False)
    model = ElmoTaskModel(config, str(task.kind), int(task.num_labels), freeze=bool(settings["freeze"]),
                          pool=str(settings["pool"]))
    model.load_pretrained(cell_dir / "checkpoints" / "last.ckpt")
    batch_size, workers = int(task.batch_size), int(ft_cfg.trainer.get("num_workers", 0))
    collate = (TaggingCollator if task.kind == "tagging" else FeatureCollator)(init.special)
    train_loader = task_loader(train, collate, batch_size, True, int(seed), workers)
    eval_loaders = [task_loader(s.features, collate, 2 * batch_size, False, int(seed), workers) for s in splits]
    primary = primary_metric(task)
    module = ElmoFinetuneModule(model, OmegaConf.to_container(task, resolve=True), lr, epochs * len(train_loader),
                                splits, metric, primary, optim=OmegaConf.to_container(ft_cfg.optim, resolve=True),
                                fused_adamw=bool(ft_cfg.impl.get("fused_adamw")))
    meta = logger_meta or {}
    name = f"elmo-{'frozen' if settings['freeze'] else 'tuned'}-seed{seed}"
    logger = build_logger(OmegaConf.to_container(ft_cfg.logger, resolve=True), out_dir / "runs" / name,
                          f"{meta.get('name', out_dir.name)}-{name}", OmegaConf.to_container(ft_cfg, resolve=True),
                          group=meta.get("group"), job_type="finetune", tags=meta.get("tags"))
    fit_task(ft_cfg, module, train_loader, eval_loaders, epochs, logger, out_dir)  # the W&B run ends, whatever
    first = splits[0].name
    best = module.best["metrics"]
    flat = dict(best[first])
    for split, values in best.items():
        if split != first:
            flat.update({f"{split}/{key}": value for key, value in values.items()})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics = {
        "status": "finished", "task": str(task.name), "task_kind": str(task.kind), "task_source": str(task.source),
        "init": init.describe(), "seed": int(seed), "lr": lr, "epochs": epochs, "batch_size": batch_size,
        "elmo": {"freeze": bool(settings["freeze"]), "pool": str(settings["pool"])},
        "train_examples": train_rows, "eval_examples": {s.name: len(s.examples) for s in splits},
        "best": flat, "best_by_split": best, "best_epoch": module.best["epoch"],
        "primary": {"name": primary, "split": first, "value": best[first].get(primary)},
        "history": module.history,
        "params": {"backbone": sum(p.numel() for p in model.backbone.parameters()), "trainable": trainable},
        "wall_seconds": time.perf_counter() - started,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = json_safe(metrics)
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


class ElmoUnits(FinetuneUnits):
    """The fine-tuning units of a biLM cell (the same ids), each training ELMo's task model instead."""

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        return run_elmo_unit(unit_cfg, cell.dir, unit.seed, out_dir, logger_meta=meta)
