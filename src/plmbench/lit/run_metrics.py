"""Writes metrics.json for a run: first/last training loss, validation metrics, tokens seen, wall time,
throughput and peak memory. Its state travels in checkpoints, so a resumed run reports its true first loss, total
wall time, last validation and the steps it was resumed at; a checkpoint after each validation keeps that durable
(lit/checkpoints.py)."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class RunMetrics(pl.Callback):
    def __init__(self, path: Path, extra: dict | None = None):
        self.path = Path(path)
        self.extra = dict(extra or {})
        self.first_loss = None
        self.last_loss = None
        self.train_seconds = 0.0  # time inside training steps only, summed across resumptions
        self.wall_seconds_before = 0.0
        self._start = None
        self._step_start = None
        self.validation = {}
        self.curve: list[dict] = []  # every validation: step, tokens seen and its metrics (the learning curve)
        self.resumed_at_steps: list[int] = []  # the step of each restart from a checkpoint, for the record

    def on_fit_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    @property
    def started(self) -> bool:
        return self._start is not None

    def on_train_start(self, trainer, pl_module):
        if trainer.global_step > 0:  # restored from a checkpoint before training started
            self.resumed_at_steps.append(int(trainer.global_step))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_seconds += time.perf_counter() - self._step_start
        loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        if self.first_loss is None:
            self.first_loss = loss
        self.last_loss = loss

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validation = pl_module.validation_metrics()
            point = {"step": int(trainer.global_step), "tokens_seen": int(getattr(pl_module, "tokens_seen", 0))}
            self.curve = [p for p in self.curve if p["step"] != point["step"]] + [{**point, **self.validation}]

    def on_fit_end(self, trainer, pl_module):
        self.write(trainer, pl_module, "finished")

    def write(self, trainer, pl_module, status: str, **fields) -> None:
        """metrics.json; `status` other than "finished" (a run stopped by SIGTERM) is resumed by a relaunch."""
        wall = self.wall_seconds_before + (time.perf_counter() - self._start)
        tokens = pl_module.tokens_seen
        write_json_atomic(self.path, {
            **self.extra,
            **fields,
            "status": status,
            "step": trainer.global_step,
            "resumed_at_steps": self.resumed_at_steps,
            "first_train_loss": self.first_loss,
            "last_train_loss": self.last_loss,
            "validation": self.validation,
            "curve": self.curve,
            "tokens_seen": tokens,
            "wall_seconds": wall,
            "train_step_seconds": self.train_seconds,
            "tokens_per_second": tokens / self.train_seconds if self.train_seconds else None,
            "peak_memory_mb": peak_memory_mb(),
        })

    def state_dict(self):
        elapsed = (time.perf_counter() - self._start) if self._start else 0.0
        return {"first_loss": self.first_loss, "last_loss": self.last_loss, "train_seconds": self.train_seconds,
                "wall_seconds": self.wall_seconds_before + elapsed, "resumed_at_steps": list(self.resumed_at_steps),
                "validation": dict(self.validation), "curve": list(self.curve)}

    def load_state_dict(self, state):
        self.first_loss, self.last_loss = state.get("first_loss"), state.get("last_loss")
        self.train_seconds = state.get("train_seconds", 0.0)
        self.wall_seconds_before = state.get("wall_seconds", 0.0)
        self.resumed_at_steps = list(state.get("resumed_at_steps", []))
        self.validation = dict(state.get("validation", {}))  # the last validation before the checkpoint
        self.curve = list(state.get("curve", []))

