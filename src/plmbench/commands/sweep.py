"""`plmbench sweep experiment=<name> scale=<scale> [overrides]`: an experiment's grid, end to end.

Every cell of the grid (Hydra sweeper params in conf/experiment/<name>.yaml) is checked first, so a typo fails in
seconds. Then Hydra multirun runs one job per cell (in-process by default; one SLURM job per cell with
`hydra/launcher=submitit_slurm`): pre-train once by lineage, fine-tune every task x seed, append records. At the
end the paper-style table is rendered and logged to W&B. An experiment with `parts` (e.g. `albert` = Tables 4 and
5) runs each part's grid in turn into one results store; cells they share train once.
"""

from __future__ import annotations

import logging
import os
import time

from omegaconf import DictConfig, OmegaConf

from plmbench import paths
from plmbench.configuration import compose, config_file, config_options
from plmbench.grid import grid_axes, grid_cells
from plmbench.hydra_app import run_app
from plmbench.lineage import cell_id
from plmbench.lit.pretraining import validate_pretrain
from plmbench.models.config import ConfigError
from plmbench.sweep.progress import SweepProgress
from plmbench.sweep.runner import CellRunner
from plmbench.sweep.store import ResultsStore
from plmbench.units import sweep_seeds

log = logging.getLogger(__name__)
PROGRESS: SweepProgress | None = None


def _cell_job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from plmbench.errors import report_user_errors

    hydra_cfg = HydraConfig.get()
    with report_user_errors():  # a full disk or unwritable store stops the sweep at once, on one line
        CellRunner(cfg, list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices), PROGRESS).run()


def plan(overrides: list[str]) -> tuple[str, list[list[str]], dict[str, set[str]], DictConfig]:
    """(results name, overrides per part, {cell id: its unit ids}, a composed config), checking every cell before
    compute."""
    cfg = compose("pretrain", overrides, return_hydra=True)
    name = OmegaConf.select(cfg, "experiment.name")
    if not name:
        raise ConfigError(f"experiment is not set: pass experiment=<name> (one of "
                          f"{', '.join(config_options('experiment'))})")
    results = str(cfg.experiment.get("results", name))
    _check_published_table(results)
    parts = list(cfg.experiment.get("parts") or [name])
    part_overrides, cells = [], {}
    for part in parts:
        extra = [] if part == name else [f"experiment={part}", f"experiment.results={results}"]
        part_cfg = compose("pretrain", _replace_experiment(overrides, extra), return_hydra=True)
        axes = grid_axes(part_cfg.hydra)
        for cell in grid_cells(axes) or [[]]:
            cell_cfg = compose("pretrain", _replace_experiment(overrides, extra) + cell)
            validate_pretrain(cell_cfg)
            _check_tasks(cell_cfg)
            sweep_seeds(cell_cfg)
            cells[cell_id(cell_cfg)] = CellRunner(cell_cfg, [], {}).expected_units()
        part_overrides.append(_replace_experiment(overrides, extra))
    return results, part_overrides, cells, cfg


def _replace_experiment(overrides: list[str], extra: list[str]) -> list[str]:
    if not extra:
        return list(overrides)
    return [o for o in overrides if not o.startswith("experiment=")] + extra


def _check_published_table(results: str) -> None:
    """experiments/<results>.yaml is read to render the table at the end: a mistake in it fails now, not after
    the grid has trained."""
    from plmbench.safety import check_plain_name
    from plmbench.tables.references import load_experiment

    check_plain_name("experiment.results", results)  # a plain name before it becomes a path to read
    try:
        load_experiment(results)
    except ValueError as error:
        raise ConfigError(" ".join(str(error).split())) from None


def _check_tasks(cfg: DictConfig) -> None:
    for task in cfg.sweep.tasks:
        if config_file("task", task) is None:  # a user's task/ folder (PLMBENCH_CONFIG_PATH) counts too
            options = ", ".join(config_options("task"))
            raise ConfigError(f"sweep.tasks: unknown task {task!r}; allowed: {options}")


def main(overrides: list[str]) -> None:
    global PROGRESS
    results, part_overrides, cells, cfg = plan(overrides)
    store = ResultsStore(paths.results_root() / results / "records.jsonl")
    store.check_writable()  # before any compute
    if store.exists():
        store.repair()  # drop a record torn by a killed write before appending new ones
    expected = set().union(*cells.values())  # records of other settings (an earlier budget) are not progress
    retry = bool(OmegaConf.select(cfg, "sweep.retry_failed", default=True))
    failed = expected & store.failed_units()
    PROGRESS = SweepProgress(len(expected), len(expected & store.completed_units(retry_failed=retry)))
    print(f"[sweep] {results}: {len(cells)} pre-training cells, {len(expected)} units; {PROGRESS.line()}", flush=True)
    if failed:
        print(f"[sweep] {len(failed)} failed unit(s) " + ("run again (sweep.retry_failed=false keeps them failed)"
                                                       if retry else "kept failed (sweep.retry_failed=false)"),
              flush=True)
    launch = f"++sweep.launch={time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"  # its failures wait for the next
    for part in part_overrides:
        run_app("pretrain", _cell_job, [*part, launch], multirun=True)
    render_table(cfg, results)


def render_table(cfg: DictConfig, results: str) -> None:
    """`plmbench table` over the experiment's store, with a W&B summary run when the sweep logs to W&B."""
    from plmbench.commands.table import main as table_main

    logger = OmegaConf.to_container(cfg.logger, resolve=True)
    table_main([f"experiment={results}", f"wandb={str(logger.get('kind') == 'wandb').lower()}",
                *(f"logger.{k}={v}" for k, v in logger.items() if k in ("mode", "project", "dir") and v)])
