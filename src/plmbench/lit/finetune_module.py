"""The LightningModule of fine-tuning: backbone + task head, AdamW with linear warm-up and decay, and at the end
of every epoch the task's own metric on each evaluation split. It remembers the epoch whose dev score (the
primary metric on the first evaluation split) was best, and that epoch's metrics on every split."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import datasets
import numpy as np
import pytorch_lightning as pl
import torch

from plmbench.data.span_decoding import decode_spans, score_with_best_threshold
from plmbench.data.tagging_decoding import score_tagging
from plmbench.models.config import ModelConfig
from plmbench.models.task_heads import TaskModel
from plmbench.optim import build_optimizer, build_scheduler

NULL_ANSWER_METRICS = frozenset({"squad_v2"})  # span tasks whose questions may have no answer
TARGET_KEYS = frozenset({"labels", "start_positions", "end_positions"})  # what evaluation must not feed the model


@dataclass
class EvalSplit:
    name: str
    examples: datasets.Dataset  # normalised task rows: the references
    features: datasets.Dataset  # model inputs; for SQuAD one row per window, with example_id and offsets


def _labels(split: EvalSplit, logits: list[torch.Tensor], task: Mapping, metric) -> dict:
    predictions = torch.cat(logits).argmax(-1).numpy()
    return metric.compute(predictions=predictions, references=split.examples["label"])


def _scores(split: EvalSplit, logits: list[torch.Tensor], task: Mapping, metric) -> dict:
    return metric.compute(predictions=torch.cat(logits).numpy().astype(np.float64),
                          references=np.asarray(split.examples["label"], dtype=np.float64))


def _choices(split: EvalSplit, logits: list[torch.Tensor], task: Mapping, metric) -> dict:
    predictions = torch.cat(logits).argmax(-1).numpy()
    # RACE rows carry a school level (scored per level); CommonsenseQA's have none, and its metric takes none.
    by_level = {"levels": split.examples["level"]} if "level" in split.examples.column_names else {}
    return metric.compute(predictions=predictions, references=split.examples["label"], **by_level)


def _spans(split: EvalSplit, logits: list[torch.Tensor], task: Mapping, metric) -> dict:
    windows = split.features.select_columns(["example_id", "context_start", "offsets", "input_ids"]).to_list()
    rows = [row for batch in logits for row in batch]  # (T_batch, 2) per window, padded to its batch
    start = [row[: len(w["input_ids"]), 0].numpy() for row, w in zip(rows, windows)]
    end = [row[: len(w["input_ids"]), 1].numpy() for row, w in zip(rows, windows)]
    examples = split.examples.select_columns(["id", "context", "answers"]).to_list()
    with_null = task["metric"]["name"] in NULL_ANSWER_METRICS
    predictions = decode_spans(examples, windows, start, end, n_best=int(task.get("n_best", 20)),
                               max_answer_length=int(task.get("max_answer_length", 30)), with_null=with_null)
    references = [{"id": e["id"], "answers": e["answers"]} for e in examples]
    if with_null:
        return score_with_best_threshold(metric, predictions, references)
    return metric.compute(predictions=predictions, references=references)


SCORERS: dict[str, Callable] = {
    "classification": _labels,
    "regression": _scores,
    "multiple_choice": _choices,
    "span": _spans,
    "tagging": score_tagging,
}


def finite(value: float | None) -> float:
    """A score to compare: NaN (e.g. Pearson of constant predictions) and missing count as the worst."""
    return value if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


class FinetuneModule(pl.LightningModule):
    def __init__(self, model_config: ModelConfig, task: dict, lr: float, total_steps: int, eval_splits: list[EvalSplit],
                 metric, primary: str, optim: Mapping | None = None, fused_adamw: bool = False,
                 head: torch.nn.Module | None = None, backbone: torch.nn.Module | None = None):
        super().__init__()
        self.model = TaskModel(model_config, task["kind"], int(task["num_labels"]), head, backbone,
                               readout=str(task.get("readout", "summary")))
        self.frozen = bool(task.get("frozen", False))  # a probe: only the head learns, on fixed representations
        if self.frozen:
            self.model.backbone.requires_grad_(False)  # outside the optimiser (optim.py skips them)
        self.task, self.lr, self.total_steps = task, float(lr), int(total_steps)
        self.eval_splits, self.metric, self.primary = eval_splits, metric, primary
        self.optim, self.fused_adamw = dict(optim or {}), fused_adamw
        self.history: list[dict] = []
        self.best: dict | None = None  # {"epoch", "metrics": {split: {...}}}
        self._train_loss, self._train_batches = 0.0, 0
        self._logits: list[list[torch.Tensor]] = []

    def on_train_epoch_start(self):
        if self.frozen:  # Lightning puts the whole model in train mode each epoch: no dropout in a fixed encoder
            self.model.backbone.eval()

    def training_step(self, batch: dict, batch_idx: int):
        loss = self.model(batch)["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite fine-tuning loss ({loss.item()}) at step {self.global_step}")
        self._train_loss += float(loss.detach())
        self._train_batches += 1
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self):
        self._logits = [[] for _ in self.eval_splits]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0):
        inputs = {k: v for k, v in batch.items() if k not in TARGET_KEYS}  # inputs, and a graph head's graphs
        self._logits[dataloader_idx].append(self.model(inputs)["logits"].float().cpu())

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        scorer = SCORERS[self.task["kind"]]
        metrics = {split.name: scorer(split, logits, self.task, self.metric)
                   for split, logits in zip(self.eval_splits, self._logits)}
        epoch = self.current_epoch + 1  # epochs are counted from 1: "after the first epoch"
        train_loss = self._train_loss / self._train_batches if self._train_batches else None
        self.history.append({"epoch": epoch, "train_loss": train_loss, "metrics": metrics})
        self._train_loss, self._train_batches = 0.0, 0
        if self.best is None or self.score(metrics) > self.score(self.best["metrics"]):
            self.best = {"epoch": epoch, "metrics": metrics}
        for split, values in metrics.items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.log(f"val/{split}/{key}", float(value), prog_bar=key == self.primary)

    def score(self, metrics: Mapping) -> float:
        """The dev score that picks the best epoch: the primary metric on the first evaluation split."""
        return finite(metrics[self.eval_splits[0].name].get(self.primary))

    def configure_optimizers(self):
        settings = {"name": "adamw", "lr": self.lr, "weight_decay": float(self.task["weight_decay"]),
                    "eps": float(self.optim.get("eps", 1e-6)), "betas": tuple(self.optim.get("betas", (0.9, 0.999)))}
        optimizer = build_optimizer(self.model, settings, fused=self.fused_adamw and torch.cuda.is_available())
        warmup = round(float(self.task.get("warmup_ratio", 0.0)) * self.total_steps)
        schedule = build_scheduler(optimizer, settings, warmup, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
