"""Running plmbench's Hydra apps from the `plmbench` command.

Every command composes its config once with the compose API first: misspelled overrides, unknown options and
impossible combinations then fail in seconds with one line, before Hydra creates run directories or any compute
starts. The real Hydra app (run or multirun, with launchers such as submitit) runs afterwards.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from plmbench import paths
from plmbench.configuration import CONF_DIR, compose, register_resolvers


def run_app(config_name: str, task: Callable, overrides: list[str], validate: Callable | None = None,
            multirun: bool = False) -> None:
    import hydra

    cfg = compose(config_name, overrides)
    if validate is not None:
        validate(cfg)
    register_resolvers()

    @functools.wraps(task)
    def quiet_task(cfg):
        quiet_lightning()  # after Hydra has set up the job's logging, which would reset it
        return task(cfg)

    app = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(quiet_task)
    argv = sys.argv
    sys.argv = [f"plmbench-{config_name}", *(["--multirun"] if multirun else []), *overrides]
    try:
        with paths.anchored():  # the roots stay where the user ran plmbench, whatever hydra.job.chdir says
            app()
    finally:
        sys.argv = argv


# Lightning's per-Trainer banners ("GPU available: False", "TPU available", a tip advertising its cloud logger)
# repeat for every unit of a sweep and drown the sweep's own progress lines; its warnings still show.
LIGHTNING_BANNERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                     "lightning_fabric.utilities.rank_zero")


def quiet_lightning() -> None:
    for name in LIGHTNING_BANNERS:
        logging.getLogger(name).setLevel(logging.WARNING)
