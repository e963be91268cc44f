"""Composing plmbench's Hydra configs outside of a Hydra app (describe, tests) and the resolvers they use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(os.environ.get("PLMBENCH_CONF", Path(__file__).resolve().parents[2] / "conf"))


def _div(a, b):
    return int(a) // int(b)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", _div)  # E = H/6 at small scales (Table 4's 768 -> 128)
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)


def compose(config_name: str = "pretrain", overrides: list[str] | None = None, return_hydra: bool = False) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():  # inside a running Hydra app (a sweep job): same config dir
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=return_hydra)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra)
