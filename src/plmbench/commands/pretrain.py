"""`plmbench pretrain <overrides>`: one pre-training run in its Hydra run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from plmbench.errors import report_user_errors
from plmbench.hydra_app import run_app
from plmbench.lit.pretraining import run_pretraining, validate_pretrain


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with report_user_errors():
        metrics = run_pretraining(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(f"pre-training finished: step {metrics['step']}, loss {metrics['first_train_loss']:.3f} -> "
          f"{metrics['last_train_loss']:.3f}, {metrics['tokens_per_second']:.0f} tokens/s")


def main(overrides: list[str]) -> None:
    run_app("pretrain", _task, overrides, validate=validate_pretrain)
