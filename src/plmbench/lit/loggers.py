"""Experiment loggers: W&B (offline by default, online when the user has credentials and asks), CSV, or none.

A W&B failure never fails a run: if the logger cannot be created, the run falls back to CSV and says why.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from plmbench.safety import drop_secrets, wandb_settings  # W&B keys never reach logs, results or tables

log = logging.getLogger(__name__)


def build_logger(logger_cfg: dict, run_dir: Path, name: str, config: dict, group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None):
    kind = logger_cfg.get("kind", "none")
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if kind != "wandb":
        raise ValueError(f"logger.kind={kind!r}: allowed values are wandb, csv, none")
    try:
        from pytorch_lightning.loggers import WandbLogger

        mode = logger_cfg.get("mode", "offline")
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists()):
            log.warning("logger.mode=online but no W&B credentials found: logging offline (wandb sync later)")
            mode = "offline"
        logger = WandbLogger(project=logger_cfg.get("project", "plmbench"), entity=logger_cfg.get("entity"),
                             name=name, group=group, job_type=job_type, tags=tags, mode=mode,
                             save_dir=str(Path(logger_cfg.get("dir", ".")).resolve()), config=drop_secrets(config),
                             settings=wandb_settings())
        _ = logger.experiment  # create the run now, inside this try
        return logger
    except Exception as error:  # noqa: BLE001 - a logging backend must never take a run down
        log.warning("W&B logger unavailable (%s: %s); falling back to CSV", type(error).__name__, error)
        from pytorch_lightning.loggers import CSVLogger
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")


def save_config(cfg, path: Path) -> None:
    """A run's resolved config.yaml, without secret-named keys (logger.api_key=...): run directories get shared."""
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create(drop_secrets(OmegaConf.to_container(cfg, resolve=True))), path)
