"""LightningModules of distillation: a frozen teacher, a student and a loss.

- `GeneralDistillation`: the student learns from the teacher on pre-training batches (PretrainData's masked
  batches); DistilBERT's and TinyBERT's first stage. The student is `self.model`, so checkpoints hold it under
  `model.backbone.*` / `model.mlm_head.*`, the keys fine-tuning reads from a pre-training run.
- `TaskDistillation`: TinyBERT's second stage on a fine-tuning task, from a fine-tuned teacher: first the
  intermediate layers (embeddings, hidden states, attention scores), then the predictions. It is a FinetuneModule,
  so evaluation, best-epoch choice and history are fine-tuning's own.

The teacher is frozen (requires_grad False), stays in eval mode whatever Lightning switches the module to, runs
under torch.no_grad, and is left out of checkpoints: it is read from its own directory on every start.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.distill.attention_scores import Trace, last_hidden_only, trace_backbone
from plmbench.distill.losses import TinyBertLoss
from plmbench.lit.finetune_module import FinetuneModule
from plmbench.lit.pretrain_module import rng_state, set_rng_state
from plmbench.models.task_heads import TaskModel
from plmbench.optim import build_optimizer, build_scheduler

TEACHER_PREFIX = "teacher."


def freeze(teacher: nn.Module) -> nn.Module:
    teacher.requires_grad_(False)
    return teacher.eval()


class FrozenTeacher:
    """Mixin for a LightningModule with a `teacher` attribute."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # no dropout in the teacher, ever: its outputs are the targets
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith(TEACHER_PREFIX)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put the teacher's (unchanged) weights back, so that loading stays strict for everything else."""
        checkpoint["state_dict"].update({TEACHER_PREFIX + k: v for k, v in self.teacher.state_dict().items()})


def _trainable(module: nn.Module, loss: nn.Module, settings: dict, fused: bool, warmup: int, total: int) -> dict:
    """The optimiser over the student and the loss's projections (the teacher has no trainable parameters)."""
    optimizer = build_optimizer(nn.ModuleDict({"student": module, "loss": loss}), settings,
                                fused=fused and torch.cuda.is_available())
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": build_scheduler(optimizer, settings, warmup, total), "interval": "step"}}


# ------------------------------------------------------------------------------------------ general


class GeneralDistillation(FrozenTeacher, pl.LightningModule):
    def __init__(self, teacher: nn.Module, student: nn.Module, loss: nn.Module, optim: dict, impl: dict,
                 total_steps: int):
        super().__init__()
        self.teacher = freeze(teacher)
        self.model = student
        self.loss = loss
        self.optim, self.impl, self.total_steps = optim, impl, int(total_steps)
        self.tokens_seen = 0
        self._val: dict = {}

    def distill_step(self, batch: dict) -> dict:
        ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch["labels"]
        # Predictions are matched at every real token, masked or not (distiller.py's default,
        # restrict_ce_to_mask=False); the MLM loss and accuracies count the masked ones
        # (labels != IGNORE_INDEX).
        real = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        forward = trace_backbone if self.loss.needs_layers else last_hidden_only
        # The teacher sees what the student sees: a student without segment embeddings (DistilBERT) cannot see
        # the batch's segment ids, so neither does the teacher (it adds segment A everywhere), as distiller.py
        # passes both models input_ids and attention_mask only. TinyBERT's student keeps segments: both get them.
        types = batch.get("token_type_ids") if self.model.backbone.embeddings.segment is not None else None
        with torch.no_grad():
            teacher = forward(self.teacher.backbone, ids, mask, types)
            teacher_logits = self.teacher.mlm_head(teacher.last_hidden[real]) if self.loss.needs_logits else None
        student = forward(self.model.backbone, ids, mask, types)
        student_logits = self.model.mlm_head(student.last_hidden[real]) if self.loss.needs_logits else None
        labels = labels[real]  # one per logits row
        out = self.loss(student, teacher, mask, student_logits, teacher_logits, labels)
        if student_logits is not None:
            masked = labels != IGNORE_INDEX
            out["mlm_correct"] = (student_logits[masked].argmax(-1) == labels[masked]).sum()
            out["teacher_mlm_correct"] = (teacher_logits[masked].argmax(-1) == labels[masked]).sum()
            out["mlm_count"] = masked.sum()
        return out

    def training_step(self, batch: dict, batch_idx: int):
        out = self.distill_step(batch)
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"non-finite distillation loss ({out['loss'].item()}) at step {self.global_step}")
        self.tokens_seen += int(batch["attention_mask"].sum()) if "attention_mask" in batch \
            else batch["input_ids"].numel()
        self.log("train/loss", out["loss"], prog_bar=True)
        for key, value in out.items():
            if key.endswith("_loss"):
                self.log(f"train/{key}", value)
        return out["loss"]

    def on_validation_epoch_start(self):
        self._val = {"batches": 0}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0):
        out = self.distill_step(batch)
        self._val["batches"] += 1
        for key, value in out.items():
            self._val[key] = self._val.get(key, 0.0) + float(value)

    def on_validation_epoch_end(self):
        for key, value in self.validation_metrics().items():
            self.log(f"val/{key}", value, prog_bar=key == "loss")

    def validation_metrics(self) -> dict:
        """Held-out loss and terms; the student's and the teacher's MLM accuracy where predictions are matched."""
        batches = self._val.get("batches", 0)
        if not batches:
            return {}
        metrics = {key: self._val[key] / batches for key in self._val if key == "loss" or key.endswith("_loss")}
        if self._val.get("mlm_count"):
            metrics["mlm_acc"] = self._val["mlm_correct"] / self._val["mlm_count"]
            metrics["teacher_mlm_acc"] = self._val["teacher_mlm_correct"] / self._val["mlm_count"]
        return metrics

    def configure_optimizers(self):
        warmup = int(self.optim.get("warmup_steps") or round(self.optim.get("warmup_ratio", 0.0) * self.total_steps))
        return _trainable(self.model, self.loss, self.optim, bool(self.impl.get("fused_adamw")), warmup,
                          self.total_steps)

    # Resuming continues the same random stream (the student's dropout) and token count, as pre-training does.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["plmbench"] = {"tokens_seen": self.tokens_seen, **rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("plmbench", {})
        self.tokens_seen = state.get("tokens_seen", 0)
        set_rng_state(state)


# ------------------------------------------------------------------------------------------ task-specific


def task_forward(model: TaskModel, batch: dict, traced: bool) -> tuple[Trace, torch.Tensor, torch.Tensor]:
    """(trace, logits, flat attention mask) of a TaskModel: its own forward, with the backbone traced."""
    flat = lambda t: t.reshape(-1, t.shape[-1])  # (B, C, T) -> (B*C, T), as TaskModel.forward
    mask = flat(batch["attention_mask"])
    types = flat(batch["token_type_ids"]) if model.uses_segments else None
    trace = (trace_backbone if traced else last_hidden_only)(model.backbone, flat(batch["input_ids"]), mask, types)
    return trace, model.head(trace.last_hidden, mask), mask


class TaskDistillation(FrozenTeacher, FinetuneModule):
    """TinyBERT's task-specific stage: epochs [0, intermediate_epochs) match the layers, the rest the predictions."""

    def __init__(self, teacher: TaskModel, student_config, task: dict, lr: float, total_steps: int, eval_splits,
                 metric, primary: str, loss: TinyBertLoss, intermediate_epochs: int, optim: dict | None = None,
                 fused_adamw: bool = False):
        super().__init__(student_config, task, lr, total_steps, eval_splits, metric, primary, optim, fused_adamw)
        self.teacher = freeze(teacher)
        self.loss = loss
        self.intermediate_epochs = int(intermediate_epochs)
        layers = {k: v for k, v in loss.weights.items() if k != "prediction"}
        self.stage_weights = {"intermediate": {**layers, "prediction": 0.0},
                              "prediction": {**{k: 0.0 for k in layers}, "prediction": 1.0}}

    def stage(self) -> str:
        return "intermediate" if self.current_epoch < self.intermediate_epochs else "prediction"

    def training_step(self, batch: dict, batch_idx: int):
        stage = self.stage()
        traced = stage == "intermediate"
        with torch.no_grad():
            teacher, teacher_logits, mask = task_forward(self.teacher, batch, traced)
        student, student_logits, _ = task_forward(self.model, batch, traced)
        out = self.loss(student, teacher, mask, student_logits, teacher_logits, weights=self.stage_weights[stage])
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite distillation loss ({loss.item()}) at step {self.global_step}")
        self._train_loss += float(loss.detach())
        self._train_batches += 1
        self.log("train/loss", loss, prog_bar=True)
        for key, value in out.items():
            if key.endswith("_loss"):
                self.log(f"train/{key}", value)
        return loss

    def configure_optimizers(self):
        settings = {"name": "adamw", "lr": self.lr, "weight_decay": float(self.task["weight_decay"]),
                    "eps": float(self.optim.get("eps", 1e-6)), "betas": tuple(self.optim.get("betas", (0.9, 0.999)))}
        warmup = round(float(self.task.get("warmup_ratio", 0.0)) * self.total_steps)
        return _trainable(self.model, self.loss, settings, self.fused_adamw, warmup, self.total_steps)
