"""Running plmbench's Hydra apps from the `plmbench` command.

Every command composes its config once with the compose API first: misspelled overrides, unknown options and
impossible combinations then fail in seconds with one line, before Hydra creates run directories or any compute
starts. The real Hydra app (run or multirun, with launchers such as submitit) runs afterwards.
"""

from __future__ import annotations

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
    app = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)
    argv = sys.argv
    sys.argv = [f"plmbench-{config_name}", *(["--multirun"] if multirun else []), *overrides]
    try:
        with paths.anchored():  # the roots stay where the user ran plmbench, whatever hydra.job.chdir says
            app()
    finally:
        sys.argv = argv
