"""Trainer settings this machine cannot run, refused before any data is prepared: Lightning would fail after the
data with a traceback (`accelerator=gpu` without a GPU) or, worse, quietly run something else (fp16 on a CPU
becomes bf16, while the cell's id still says fp16)."""

from __future__ import annotations

import torch

from plmbench.models.config import ConfigError

FP16 = ("16-mixed", "16", "16-true")


def check_machine(accelerator: str, devices, precision: str) -> None:
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU "
                          "(torch.cuda.is_available() is False); use trainer.accelerator=auto or cpu")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if on_gpu and isinstance(devices, int) and devices > gpus:
        raise ConfigError(f"trainer.devices={devices}: this machine has {gpus} GPU(s); use at most {gpus}, or "
                          "trainer.devices=-1 for all of them")
    if not on_gpu and str(precision) in FP16:
        raise ConfigError(f"impl.precision={precision}: fp16 needs a GPU (on a CPU Lightning would run bf16-mixed "
                          "instead, under this cell's fp16 id); use 32-true or bf16-mixed")
