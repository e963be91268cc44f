"""One fine-tuning run, from a composed `finetune` config to run_dir/metrics.json.

`init` says where the backbone comes from, and with it the architecture and the tokenizer: random, a pre-training
run directory or a Hugging Face folder (lit/finetune_init.py reads each). The fine-tuning config picks only the
task, seeds and hyper-parameters; model/size/... options apply to random only.

Every learning rate of `task.lr_grid` (or just `task.lr`) runs once per seed; the rate whose median dev score is
best is kept (BERT's protocol), and of its seeds the median run (the lower middle one for an even count, as
ALBERT and ELECTRA report medians) gives the headline metrics.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from plmbench import metrics as task_metrics
from plmbench.data.entity_features import attach_entity_ids
from plmbench.data.features import (
    MODEL_COLUMNS,
    FeatureCollator,
    TaggingCollator,
    build_features,
    span_window,
)
from plmbench.errors import check_checkpoint_file
from plmbench.lit.finetune_init import (
    FinetuneError,
    Init,
    cap_to_pretraining_length,
    init_kind,
    init_model_config,
    load_init,
)
from plmbench.lit.finetune_module import EvalSplit, FinetuneModule, finite
from plmbench.lit.graph_reasoning import NoReasoner, build_reasoning
from plmbench.lit.loggers import build_logger, finished, log_final, save_config
from plmbench.lit.run_metrics import write_json_atomic
from plmbench.lit.trainer import build_trainer
from plmbench.models.task_heads import HEADS, READOUTS
from plmbench.numbers import FINETUNING, check_numbers

log = logging.getLogger(__name__)

CAP_SEED = 0  # the rows a cap keeps do not depend on the run's seed, so seeds differ only in training


# ------------------------------------------------------------------------------------------ checks


def _positive(value, key: str, kind=int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or kind(value) != value:
        raise FinetuneError(f"{key}={value!r}: must be a positive {kind.__name__}" + (" or null" if allow_none else ""))
    return kind(value)


def run_seeds(cfg: DictConfig) -> list[int]:
    seeds = [cfg.seed] if cfg.get("seed") is not None else list(cfg.get("seeds") or [])
    if not seeds:
        raise FinetuneError("seeds=[]: give at least one fine-tuning seed, e.g. seeds=[0,1,2] or seed=0")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FinetuneError(f"seeds={seeds}: seeds must be integers")
    return seeds


def learning_rates(task: DictConfig) -> list[float]:
    grid = list(task.lr_grid) if task.get("lr_grid") else [task.lr]
    return [_positive(lr, "task.lr_grid" if task.get("lr_grid") else "task.lr", float) for lr in grid]


def primary_metric(task: DictConfig) -> str:
    name, config = task.metric.name, task.metric.get("config")
    key = config or name
    if name not in task_metrics.CONFIGS or config not in task_metrics.CONFIGS[name] or key not in task_metrics.PRIMARY:
        raise FinetuneError(f"task.metric={{name: {name}, config: {config}}}: unknown metric; allowed names: "
                            f"{', '.join(task_metrics.CONFIGS)} (glue takes the task as config)")
    return task_metrics.PRIMARY[key]


def validate_finetune(cfg: DictConfig) -> None:
    """Everything that can be checked without data or weights: fails in seconds, naming the key."""
    check_numbers(cfg, FINETUNING)
    task = cfg.task
    if task.kind not in HEADS:
        raise FinetuneError(f"task.kind={task.kind!r}: allowed values are {', '.join(HEADS)}")
    if task.kind == "regression" and int(task.num_labels) != 1:
        raise FinetuneError(f"task.num_labels={task.num_labels} for a regression task: must be 1")
    primary_metric(task)
    run_seeds(cfg)
    learning_rates(task)
    explicit = run_epochs_key(cfg) == "epochs"
    _positive(cfg.epochs if explicit else task.epochs, "epochs" if explicit else "task.epochs")
    _positive(task.batch_size, "task.batch_size")
    for key in ("max_train_examples", "max_eval_examples"):
        _positive(cfg.get(key), key, allow_none=True)
    if not 0.0 <= float(task.get("warmup_ratio", 0.0)) < 1.0:
        raise FinetuneError(f"task.warmup_ratio={task.warmup_ratio}: must be in [0, 1)")
    model = init_model_config(cfg)
    kind, path = init_kind(cfg.init)
    if kind == "pretrain_run":
        check_checkpoint_file(path / "checkpoints" / "last.ckpt")
    if int(task.max_length) > model.max_positions:
        raise FinetuneError(f"task.max_length={task.max_length} exceeds the model's max_positions="
                            f"{model.max_positions} (init={cfg.init})")
    if task.kind == "span":
        try:
            span_window(task)
        except ValueError as error:
            raise FinetuneError(str(error)) from None
    check_readout(task)


def check_readout(task: DictConfig) -> None:
    """task.readout (where the classifier reads) and its mention markers; task.frozen must be a boolean."""
    readout = task.get("readout", "summary")
    if readout not in READOUTS:
        raise FinetuneError(f"task.readout={readout!r}: allowed values are {', '.join(READOUTS)}")
    if readout == "mention":
        if task.kind != "classification":
            raise FinetuneError(f"task.readout=mention needs task.kind=classification, not {task.kind}")
        markers = task.get("mention_markers")
        if markers is None or len(markers) != 2 or not all(isinstance(m, str) and m for m in markers):
            raise FinetuneError(f"task.mention_markers={markers}: give the two strings around a mention, "
                                f"e.g. ['[', ']']")
    if not isinstance(task.get("frozen", False), bool):
        raise FinetuneError(f"task.frozen={task.frozen!r}: must be true or false")


def run_epochs_key(cfg: DictConfig) -> str:
    """Which key sets the epochs: `epochs` (given, or the width budget of conf/finetune.yaml) or `task.epochs`.
    A frozen probe trains a linear head on fixed features, which needs more passes than fine-tuning: the width
    budget (an interpolation) does not apply to it, an explicit `epochs=N` does."""
    if cfg.get("epochs") is None:
        return "task.epochs"
    if cfg.task.get("frozen", False) and OmegaConf.is_interpolation(cfg, "epochs"):
        return "task.epochs"
    return "epochs"


def run_epochs(cfg: DictConfig) -> int:
    return int(cfg.epochs if run_epochs_key(cfg) == "epochs" else cfg.task.epochs)


def check_rows(task: DictConfig, data) -> None:
    """What only the data can tell: a pair task needs second sentences, a single-sentence task has none."""
    if task.kind in ("classification", "regression"):
        sample = data["train"].select(range(min(1000, len(data["train"]))))["text_b"]
        has_b = any(text.strip() for text in sample)
        if bool(task.pair) != has_b:
            found = "has second sentences (text_b)" if has_b else "has no second sentence (text_b is empty)"
            raise FinetuneError(f"task.pair={str(bool(task.pair)).lower()} but task {task.name}'s data {found}; "
                                f"set task.pair={str(has_b).lower()} or check the task's files")
    if task.kind == "multiple_choice":
        counts = {len(options) for options in data["train"]["options"]}
        if counts != {int(task.num_labels)}:
            raise FinetuneError(f"task.num_labels={task.num_labels} but task {task.name}'s questions have "
                                f"{sorted(counts)} options")


# ------------------------------------------------------------------------------------------ data


def _cap(rows, limit: int | None):
    if limit is None or len(rows) <= limit:
        return rows
    return rows.shuffle(seed=CAP_SEED).select(range(limit))


def load_checked_task(cfg: DictConfig):
    """The task's rows, checked: run before the init is loaded, so a data error costs seconds, not a tokenizer."""
    from plmbench.data.tasks import load_task

    data = load_task(cfg.task, cfg.get("data_dir"))
    check_rows(cfg.task, data)
    return data


def prepare_data(cfg: DictConfig, init: Init, data=None, reasoning: NoReasoner | None = None) -> tuple:
    """(train features, [EvalSplit], number of train rows) for the task, with the configured caps; a graph
    reasoner adds each row's subgraphs to its features."""
    task, reasoning = cfg.task, reasoning or NoReasoner()
    data = load_checked_task(cfg) if data is None else data
    train_rows = _cap(data["train"], cfg.get("max_train_examples"))
    linking = init.linking()

    def features(rows):
        built = build_features(rows, init.tokenizer, init.special, task)
        if linking is not None:  # a fused model: the task's text linked to WordNet as in its pre-training
            built = attach_entity_ids(rows, built, init.tokenizer, task, linking)
        return reasoning.attach(rows, built)
    train = features(train_rows)
    splits = []
    for name in task.eval_splits:
        examples = _cap(data[name], cfg.get("max_eval_examples"))
        splits.append(EvalSplit(name, examples, features(examples)))
    log.info("task %s: %d train rows (%d inputs), eval %s", task.name, len(train_rows), len(train),
             {s.name: len(s.examples) for s in splits})
    return train, splits, len(train_rows)


def task_loader(features, collate, batch_size: int, shuffle: bool, seed: int, workers: int,
                extra_columns: tuple[str, ...] = ()) -> DataLoader:
    columns = [c for c in (*MODEL_COLUMNS, *extra_columns) if c in features.column_names]
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(features.select_columns(columns), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collate, num_workers=workers)


# ------------------------------------------------------------------------------------------ runs


def task_trainer(cfg: DictConfig, epochs: int, logger, log_every: int, run_dir: Path) -> pl.Trainer:
    # One device: evaluation gathers every logit of a split in one process to score it with the task's metric.
    return build_trainer(cfg, run_dir, logger, max_epochs=epochs, devices=1, num_nodes=1, strategy="auto",
                         enable_checkpointing=False, log_every_n_steps=log_every)


def fit_task(cfg: DictConfig, module: pl.LightningModule, train_loader, eval_loaders, epochs: int, logger,
             run_dir: Path) -> None:
    """Fits a task module (a FinetuneModule) and logs its best dev metrics; its W&B run ends whatever happens,
    failed (exit code 1) if the fit raised, so that the next unit's logger never attaches to it."""
    log_every = max(1, min(int(cfg.trainer.log_every_n_steps), len(train_loader)))
    with finished(logger):
        task_trainer(cfg, epochs, logger, log_every, run_dir).fit(module, train_dataloaders=train_loader,
                                                                  val_dataloaders=eval_loaders)
        log_final(logger, {"score": module.score(module.best["metrics"]), "best_epoch": module.best["epoch"],
                           "best": module.best["metrics"]})


def train_one(cfg: DictConfig, init: Init, train, splits: list[EvalSplit], metric, lr: float, seed: int,
              run_dir: Path, logger_meta: dict, reasoning: NoReasoner | None = None) -> dict:
    """Fine-tune from the init once with one learning rate and seed; its per-epoch history and best epoch."""
    task, started = cfg.task, time.perf_counter()
    pl.seed_everything(seed, workers=True, verbose=False)
    epochs = run_epochs(cfg)
    batch_size, workers = int(task.batch_size), int(cfg.trainer.get("num_workers", 0))
    reasoning = reasoning or NoReasoner()
    collate = reasoning.collator(init.special) or collator_for(str(task.kind))(init.special)
    train_loader = task_loader(train, collate, batch_size, True, seed, workers, reasoning.columns)
    eval_loaders = [task_loader(s.features, collate, 2 * batch_size, False, seed, workers, reasoning.columns)
                    for s in splits]
    total_steps = epochs * len(train_loader)
    primary = primary_metric(task)
    module = FinetuneModule(init.config, OmegaConf.to_container(task, resolve=True), lr, total_steps, splits, metric,
                            primary, optim=OmegaConf.to_container(cfg.optim, resolve=True),
                            fused_adamw=bool(cfg.impl.get("fused_adamw")),
                            head=reasoning.head(init.config, int(task.num_labels)), backbone=init.backbone())
    init.load_weights(module.model)
    name = f"lr{lr:g}-seed{seed}"
    logger = build_logger(OmegaConf.to_container(cfg.logger, resolve=True), run_dir / "runs" / name,
                          f"{logger_meta.get('name', run_dir.name)}-{name}",
                          OmegaConf.to_container(cfg, resolve=True), group=logger_meta.get("group"),
                          job_type="finetune", tags=logger_meta.get("tags"))
    fit_task(cfg, module, train_loader, eval_loaders, epochs, logger, run_dir)
    return {"lr": lr, "seed": seed, "best_epoch": module.best["epoch"], "best": module.best["metrics"],
            "score": module.score(module.best["metrics"]), "history": module.history,
            "wall_seconds": time.perf_counter() - started,
            "params": {"backbone": _count(module.model.backbone), "head": _count(module.model.head)}}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a shared tensor is counted once


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda run: run["score"])
    return ordered[(len(ordered) - 1) // 2]


def flat_metrics(best: dict, first_split: str) -> dict:
    """The first evaluation split's metrics as they are; other splits' as '<split>/<metric>'."""
    flat = dict(best[first_split])
    for split, values in best.items():
        if split != first_split:
            flat.update({f"{split}/{key}": value for key, value in values.items()})
    return flat


def json_safe(value):
    """NaN (Pearson of constant predictions) becomes null: metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def run_finetuning(cfg: DictConfig, run_dir: Path, logger_meta: dict | None = None) -> dict:
    from plmbench.impl import apply_threads

    capped_from = cap_to_pretraining_length(cfg)
    validate_finetune(cfg)
    apply_threads(cfg.impl)  # impl.threads, when set: before anything is built
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    reasoning = build_reasoning(cfg)  # reasoner=none: plain fine-tuning; rgcn: a graph reasoner (issue 16)
    reasoning.check(cfg.task)
    data = load_checked_task(cfg)
    init = load_init(cfg)
    train, splits, train_rows = prepare_data(cfg, init, data, reasoning)
    task, seeds, meta = cfg.task, run_seeds(cfg), logger_meta or {}
    metric = task_metrics.load(task.metric.name, task.metric.get("config"))
    runs = [train_one(cfg, init, train, splits, metric, lr, seed, run_dir, meta, reasoning)
            for lr in learning_rates(task) for seed in seeds]
    by_lr = {lr: [run for run in runs if run["lr"] == lr] for lr in learning_rates(task)}
    lr = max(by_lr, key=lambda rate: finite(statistics.median([run["score"] for run in by_lr[rate]])))
    chosen = _median_run(by_lr[lr])
    primary, first_split = primary_metric(task), splits[0].name
    metrics = {
        "status": "finished",
        "task": str(task.name), "task_kind": str(task.kind), "task_source": str(task.source),
        "init": init.describe(),
        "seeds": seeds, "seed": chosen["seed"], "lr": lr, "lr_grid": learning_rates(task),
        "epochs": run_epochs(cfg),
        "batch_size": int(task.batch_size),
        "max_length": int(task.max_length), "max_length_capped_from": capped_from,
        "train_examples": train_rows, "train_inputs": len(train),  # inputs: SQuAD windows, one per row elsewhere
        "eval_examples": {s.name: len(s.examples) for s in splits},
        "best": flat_metrics(chosen["best"], first_split), "best_epoch": chosen["best_epoch"],
        "best_by_split": chosen["best"],
        "primary": {"name": primary, "split": first_split, "value": chosen["best"][first_split].get(primary),
                    "per_seed": {str(run["seed"]): run["best"][first_split].get(primary) for run in by_lr[lr]}},
        "history": chosen["history"],
        "runs": [{k: v for k, v in run.items() if k != "params"} for run in runs],
        "params": {**chosen["params"], "total": sum(chosen["params"].values())},
        "vocab_size": init.config.vocab_size,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json_atomic(run_dir / "metrics.json", json_safe(metrics))
    return json_safe(metrics)


def collator_for(kind: str):
    """Tagging pads per-piece labels too; every other kind uses the plain feature collator."""
    if kind == "tagging":
        return TaggingCollator
    return FeatureCollator
