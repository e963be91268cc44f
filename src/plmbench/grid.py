"""An experiment's grid: the Hydra sweeper params of `conf/experiment/<name>.yaml` expanded into cells.

The grid is data (the same `hydra.sweeper.params` that `--multirun` reads); this module only lists the cells so
that `describe`, the sweep runner and the tables agree on what the cells are.
"""

from __future__ import annotations

import itertools

from omegaconf import DictConfig


def grid_axes(hydra_cfg: DictConfig) -> dict[str, list[str]]:
    """{axis: [values]} from hydra.sweeper.params (comma-separated choice lists, as Hydra writes them)."""
    params = hydra_cfg.get("sweeper", {}).get("params") or {}
    return {axis: [v.strip() for v in str(values).split(",")] for axis, values in params.items()}


def grid_cells(axes: dict[str, list[str]]) -> list[list[str]]:
    """Each cell as a list of `axis=value` overrides, in the axes' declared order."""
    names = list(axes)
    return [[f"{name}={value}" for name, value in zip(names, combo)]
            for combo in itertools.product(*(axes[n] for n in names))]
