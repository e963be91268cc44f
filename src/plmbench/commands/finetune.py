"""`plmbench finetune <overrides>`: one fine-tuning run (task=..., init=...) in its Hydra run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from plmbench.errors import report_user_errors
from plmbench.hydra_app import run_app
from plmbench.lit.finetuning import run_finetuning, validate_finetune


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with report_user_errors():
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        metrics = run_finetuning(cfg, run_dir)
    primary = metrics["primary"]
    print(f"fine-tuning finished: {metrics['task']} {primary['split']} {primary['name']} = {primary['value']} "
          f"(epoch {metrics['best_epoch']}, lr {metrics['lr']:g}); {run_dir / 'metrics.json'}")


def main(overrides: list[str]) -> None:
    run_app("finetune", _task, overrides, validate=validate_finetune)
