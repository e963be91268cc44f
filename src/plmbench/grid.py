"""An experiment's grid: the Hydra sweeper params of `conf/experiment/<name>.yaml` expanded into cells.

The grid is data (the same `hydra.sweeper.params` that `--multirun` reads); this module only lists the cells so
that `describe`, the sweep runner and the tables agree on what the cells are.
"""

from __future__ import annotations

import itertools

from omegaconf import DictConfig


def grid_axes(hydra_cfg: DictConfig) -> dict[str, list[str]]:
    """{axis: [values]} from hydra.sweeper.params, read by Hydra's own override parser, so every sweep Hydra's
    multirun accepts means the same cells here: `a,b`, `choice(a,b)`, `range(0,3)`, quoted commas, `glob(e*)`."""
    params = hydra_cfg.get("sweeper", {}).get("params") or {}
    return {axis: axis_values(axis, str(values)) for axis, values in params.items()}


def axis_values(axis: str, values: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    override = OverridesParser.create().parse_override(f"{axis}={values}")
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if isinstance(override.value(), Glob):  # a glob over a config group's options (Hydra asks its config loader)
        from plmbench.configuration import config_options

        return override.value().filter(config_options(override.key_or_group))
    return list(override.sweep_string_iterator())


def grid_cells(axes: dict[str, list[str]]) -> list[list[str]]:
    """Each cell as a list of `axis=value` overrides, in the axes' declared order."""
    names = list(axes)
    return [[f"{name}={value}" for name, value in zip(names, combo)]
            for combo in itertools.product(*(axes[n] for n in names))]
