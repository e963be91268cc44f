"""An experiment's grid is read by Hydra's own override parser: every sweep syntax Hydra's multirun accepts gives
the same cells in `describe`, the sweep planner and the tables (issue 14; splitting on commas broke quoting)."""

from omegaconf import OmegaConf

from plmbench.grid import grid_axes, grid_cells


def axes_of(params: dict) -> dict:
    return grid_axes(OmegaConf.create({"sweeper": {"params": params}}))


def test_every_hydra_sweep_syntax_lists_its_values():
    axes = axes_of({"objective": "mlm,mlm_nsp", "seed": "range(0,3)", "optim.lr": "choice(1e-3,2e-3)",
                    "sharing": "glob(a*)", "+recipe": "untrained", "data.note": "'a,b',c"})
    assert axes == {"objective": ["mlm", "mlm_nsp"], "seed": ["0", "1", "2"], "optim.lr": ["0.001", "0.002"],
                    "sharing": ["all", "attention"], "+recipe": ["untrained"], "data.note": ["'a,b'", "c"]}
    cells = grid_cells(axes)
    assert len(cells) == 2 * 3 * 2 * 2 * 1 * 2
    assert cells[0] == ["objective=mlm", "seed=0", "optim.lr=0.001", "sharing=all", "+recipe=untrained",
                        "data.note='a,b'"]


def test_no_params_no_cells():
    assert axes_of({}) == {} and grid_cells({}) == [[]]
