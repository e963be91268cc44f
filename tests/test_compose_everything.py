"""Every option of every config group composes, and every experiment plans (issue 14): an option that breaks
composition, or an experiment whose grid no longer validates, fails here in seconds instead of in a user's sweep.

An option may be refused in combination with the defaults (objective=rtd needs an ELECTRA model); it must then be
refused as a one-line user error, never with another exception."""

import pytest

from plmbench.commands import sweep
from plmbench.configuration import CONF_DIR, compose, config_options
from plmbench.lit.pretraining import validate_pretrain

PRETRAIN_GROUPS = sorted(p.name for p in CONF_DIR.iterdir()
                         if p.is_dir() and p.name not in ("hydra", "task", "unit", "experiment"))
OPTIONS = [(group, option) for group in PRETRAIN_GROUPS for option in config_options(group)]
DEFAULT_GROUPS = set(compose("pretrain", [], return_hydra=True).hydra.runtime.choices)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_pretraining_option_composes_and_validates_or_is_one_line(group, option):
    # a group outside pretrain's defaults (recipe, a fine-tuning-only group) is appended, as a user would
    override = f"{group}={option}" if group in DEFAULT_GROUPS else f"+{group}={option}"
    cfg = compose("pretrain", ["scale=smoke", override])
    try:
        validate_pretrain(cfg)
    except ValueError as error:  # what `plmbench` reports as one line (errors.report_user_errors)
        assert type(error).__module__.startswith("plmbench"), (group, option, type(error))
        assert "\n" not in str(error) and str(error), (group, option)


@pytest.mark.parametrize("task", config_options("task"))
def test_every_task_composes_for_fine_tuning(task):
    cfg = compose("finetune", [f"task={task}"])
    assert cfg.task.name and cfg.task.kind


@pytest.mark.parametrize("experiment", config_options("experiment"))
def test_every_experiment_plans_at_smoke_scale(experiment):
    results, parts, cells, _ = sweep.plan([f"experiment={experiment}", "scale=smoke"])
    assert results and parts and cells and all(units for units in cells.values())
