"""`plmbench pretrain <overrides>`: one pre-training run in its Hydra run directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench.configuration import compose
from plmbench.errors import report_user_errors
from plmbench.hydra_app import run_app
from plmbench.lit.pretraining import check_run_dir, run_pretraining, validate_pretrain


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with report_user_errors():
        metrics = run_pretraining(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(f"pre-training finished: step {metrics['step']}, loss {metrics['first_train_loss']:.3f} -> "
          f"{metrics['last_train_loss']:.3f}, {metrics['tokens_per_second']:.0f} tokens/s")


def _validate(cfg: DictConfig, overrides: list[str]) -> None:
    validate_pretrain(cfg)
    if any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides):  # the default is a new, dated folder
        # Checked before Hydra starts: it writes .hydra/ into the folder before the run does anything.
        hydra_cfg = compose("pretrain", overrides, return_hydra=True)
        run_dir = OmegaConf.select(hydra_cfg, "hydra.run.dir", throw_on_resolution_failure=False)
        if run_dir:  # None: an interpolation only a running Hydra resolves (${now:...}): a new folder
            check_run_dir(cfg, Path(str(run_dir)).resolve(), key="hydra.run.dir")


def main(overrides: list[str]) -> None:
    run_app("pretrain", _task, overrides, validate=lambda cfg: _validate(cfg, overrides))
