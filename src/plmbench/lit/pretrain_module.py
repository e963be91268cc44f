"""The LightningModule of pre-training: one objective module, the papers' optimiser and schedule, and the
intrinsic validation metrics of ALBERT Table 5 (MLM accuracy; NSP and SOP accuracy with the sentence head)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from plmbench.models.config import ModelConfig
from plmbench.objectives import build_objective
from plmbench.optim import build_optimizer, build_scheduler

COUNTERS = ("mlm", "sentence", "disc", "lm", "dea")  # each objective returns <name>_correct and <name>_count


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stops at that step."""


class PretrainModule(pl.LightningModule):
    def __init__(self, model: dict, objective: dict, optim: dict, impl: dict, total_steps: int,
                 val_names: tuple[str, ...] = ("main",), knowledge: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model_config = ModelConfig.from_mapping(model)
        self.model = build_objective(self.model_config, objective, masked_only=impl.get("mlm_masked_only", True),
                                     fused_cross_entropy=bool(impl.get("fused_cross_entropy", False)),
                                     knowledge=knowledge)
        self.forward_fn = torch.compile(self.model, dynamic=False) if impl.get("compile") else self.model
        self.optim, self.impl, self.total_steps = optim, impl, total_steps
        self.val_names = tuple(val_names)
        self.tokens_seen = 0
        self._val = {}

    def training_step(self, batch: dict, batch_idx: int):
        out = self.forward_fn(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at step {self.global_step}")
        self.tokens_seen += int(batch["attention_mask"].sum()) if "attention_mask" in batch \
            else batch["input_ids"].numel()
        self.log("train/loss", loss, prog_bar=True)
        for key in ("mlm_loss", "sentence_loss", "disc_loss", "lm_loss", "dea_loss"):
            if key in out:
                self.log(f"train/{key}", out[key])
        self.log("train/tokens_seen", float(self.tokens_seen))
        return loss

    def on_validation_epoch_start(self):
        self._val = {name: {"loss": 0.0, "batches": 0} for name in self.val_names}
        self._train_rng = rng_state()  # validation (ELECTRA's sampling) must not move training's random stream

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0):
        out = self.model(batch)
        acc = self._val[self.val_names[dataloader_idx]]
        acc["loss"] += float(out["loss"])
        acc["batches"] += 1
        for counter in COUNTERS:
            if f"{counter}_count" in out:
                acc[f"{counter}_correct"] = acc.get(f"{counter}_correct", 0) + int(out[f"{counter}_correct"])
                acc[f"{counter}_count"] = acc.get(f"{counter}_count", 0) + int(out[f"{counter}_count"])

    def on_validation_epoch_end(self):
        if getattr(self, "_train_rng", None) is not None:
            set_rng_state(self._train_rng)
            self._train_rng = None
        metrics = self.validation_metrics()
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key in ("loss", "mlm_acc"))

    def validation_metrics(self) -> dict:
        """loss and accuracies; the `nsp` and `sop` held-out sets give Table 5's NSP and SOP columns."""
        metrics = {}
        main = self._val.get("main", {})
        if main.get("batches"):
            metrics["loss"] = main["loss"] / main["batches"]
            if self.model_config.causal:
                metrics["perplexity"] = math.exp(min(50.0, metrics["loss"]))
        for counter, name in (("mlm", "mlm_acc"), ("disc", "rtd_acc"), ("lm", "lm_acc"), ("dea", "dea_acc")):
            if main.get(f"{counter}_count"):
                metrics[name] = main[f"{counter}_correct"] / main[f"{counter}_count"]
        for task in ("nsp", "sop"):
            held_out = self._val.get(task, {})
            if held_out.get("sentence_count"):
                metrics[f"{task}_acc"] = held_out["sentence_correct"] / held_out["sentence_count"]
        return metrics

    def configure_optimizers(self):
        fused = bool(self.impl.get("fused_adamw")) and torch.cuda.is_available()
        optimizer = build_optimizer(self.model, self.optim, fused=fused)
        warmup = int(self.optim.get("warmup_steps") or round(self.optim.get("warmup_ratio", 0.0) * self.total_steps))
        schedule = build_scheduler(optimizer, self.optim, warmup, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # Resuming must continue the same stream of random numbers (dropout, generator sampling) and token count.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["plmbench"] = {"tokens_seen": self.tokens_seen, **rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("plmbench", {})
        self.tokens_seen = state.get("tokens_seen", 0)
        set_rng_state(state)


def rng_state() -> dict:
    """The CPU generator, and on GPUs each device's (dropout on CUDA draws from those)."""
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
