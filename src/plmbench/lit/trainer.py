"""The one Lightning Trainer builder, and the callbacks of the `callbacks` config group.

Every run (pre-training, fine-tuning, distillation) builds its Trainer here: the machine (accelerator, devices,
nodes, strategy, precision), gradient clipping and logging come from the config; the callbacks are the run's own
(its metrics file, its checkpointing: what a sweep resumes) followed by cfg.callbacks, each entry built from its
`_target_` (conf/callbacks/default.yaml), so that a user adds one in YAML:

    plmbench pretrain +callbacks.swa._target_=pytorch_lightning.callbacks.StochasticWeightAveraging \
        +callbacks.swa.swa_lrs=1e-5
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def build_trainer(cfg: DictConfig, run_dir: Path, logger, callbacks: list = (), **overrides):
    """A Trainer for `cfg` (its trainer, impl and callbacks nodes) writing under run_dir; `callbacks` come first,
    `overrides` are the run's own Trainer arguments (steps or epochs, validation, devices)."""
    # Lightning is imported here, not at the top: a config error must not wait seconds for its import.
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ProgressBar

    t = cfg.trainer
    callbacks = [*callbacks, *config_callbacks(cfg, logger)]
    arguments = {"accelerator": t.accelerator, "devices": t.devices, "num_nodes": t.num_nodes,
                 "strategy": t.strategy, "precision": cfg.impl.precision, "gradient_clip_val": t.gradient_clip_val,
                 "log_every_n_steps": int(t.log_every_n_steps), "logger": logger, "callbacks": callbacks,
                 "enable_progress_bar": any(isinstance(c, ProgressBar) for c in callbacks),
                 "default_root_dir": str(run_dir), "num_sanity_val_steps": 0, "enable_model_summary": False}
    return pl.Trainer(**{**arguments, **overrides})


def config_callbacks(cfg: DictConfig, logger) -> list:
    """cfg.callbacks built, in order: a null entry, or one whose target returns None, is skipped; those that need
    a logger (LearningRateMonitor refuses a Trainer without one) are left out of a run that has none."""
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import LearningRateMonitor

    nodes = OmegaConf.select(cfg, "callbacks", default=None) or {}  # callbacks=none: no callback at all
    built = [instantiate(node, _convert_="all") for node in nodes.values() if node is not None]
    return [c for c in built if c is not None and (logger or not isinstance(c, LearningRateMonitor))]


def progress_bar(kind: str | None):
    """trainer.progress_bar as a callback: rich, tqdm, or none (None: no bar)."""
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

    bar = {"rich": RichProgressBar, "tqdm": TQDMProgressBar}.get(kind)
    return bar() if bar else None
