"""`plmbench describe <overrides>`: parameter counts and training FLOPs per token, as JSON.

With `experiment=<name>`, one JSON line per cell of the experiment's grid (the same cells a sweep would run).
"""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.grid import grid_axes, grid_cells
from plmbench.lit.pretraining import validate_pretrain
from plmbench.objectives.counting import describe_config


def main(overrides: list[str]) -> None:
    cfg = compose("pretrain", overrides, return_hydra=True)
    axes = grid_axes(cfg.hydra)
    if not OmegaConf.select(cfg, "experiment.name") or not axes:
        validate_pretrain(cfg)  # the checks `pretrain` makes: a bad key fails here too, not after a long describe
        print(json.dumps(describe_config(cfg)))
        return
    for cell in grid_cells(axes):
        cell_cfg = compose("pretrain", overrides + cell)
        validate_pretrain(cell_cfg)
        print(json.dumps({"cell": " ".join(cell), **describe_config(cell_cfg)}))
