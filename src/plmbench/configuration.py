"""Composing plmbench's Hydra configs outside of a Hydra app (describe, tests) and the resolvers they use.

Where configs come from: plmbench's own conf/ (inside the installed package, or the repository's in a source
tree; PLMBENCH_CONF replaces it), and before it the user's folders named by PLMBENCH_CONFIG_PATH (separated by
os.pathsep, first wins): config folders laid out like conf/, whose group options extend ours and whose files
replace ours of the same name.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from plmbench.errors import UserError
from plmbench.paths import shipped, user_config_dirs

CONF_DIR = Path(os.environ.get("PLMBENCH_CONF") or shipped("conf"))


def config_dirs() -> list[Path]:
    """Every config folder, in the order Hydra searches them: the user's, then plmbench's own."""
    return [*user_config_dirs(), CONF_DIR]


def config_file(group: str, option: str) -> Path | None:
    """The YAML file Hydra loads for `group=option` (the first folder that has it), or None."""
    return next((path for root in config_dirs() if (path := root / group / f"{option}.yaml").is_file()), None)


def config_options(group: str) -> list[str]:
    """The options of a group across every config folder, nested ones as `glue/rte`."""
    return sorted({str(path.relative_to(root / group).with_suffix("")) for root in config_dirs()
                   for path in (root / group).rglob("*.yaml")})


class UserConfigPath(SearchPathPlugin):
    """Puts the $PLMBENCH_CONFIG_PATH folders before plmbench's conf/ in Hydra's search path, for compose and
    for the Hydra apps alike (module level: a launcher pickles Hydra's state, this class included)."""

    def manipulate_search_path(self, search_path) -> None:
        for directory in user_config_dirs():  # each just before ours: the first folder is searched first
            search_path.prepend(provider="plmbench-user", path=f"file://{directory}", anchor="main")


def register_user_config_path() -> None:
    from hydra.core.plugins import Plugins

    user_config_dirs()  # a folder that does not exist fails here, on one line
    Plugins.instance().register(UserConfigPath)  # idempotent


def _div(a, b):
    return int(a) // int(b)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", _div)  # E = H/6 at small scales (Table 4's 768 -> 128)
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)


def compose(config_name: str = "pretrain", overrides: list[str] | None = None, return_hydra: bool = False) -> DictConfig:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    register_user_config_path()
    if GlobalHydra.instance().is_initialized():  # inside a running Hydra app (a sweep job): same config dir
        return _checked_compose(config_name, list(overrides or []), return_hydra)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _checked_compose(config_name, list(overrides or []), return_hydra)


def _checked_compose(config_name: str, overrides: list[str], return_hydra: bool) -> DictConfig:
    """Hydra's compose, plus the group checks Hydra skips: it loads `experiment=../x` from outside conf/ and
    silently drops an unknown option of an `optional` group (scale=smokee would train the default, base size)."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    for override in OverridesParser.create().parse_overrides(overrides):  # before any file is read
        group = override.key_or_group
        if override.is_delete() or not loader.repository.group_exists(group):
            continue
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.value()])
        for value in values:
            _check_option(loader, group, value)
    cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    for group, value in cfg.hydra.runtime.choices.items():  # also what the defaults lists chose
        _check_option(loader, str(group), value)
    if not return_hydra:  # as Hydra's compose(return_hydra_config=False) does
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
    return cfg


_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def _check_option(loader, group: str, value) -> None:
    if value is None:  # `optional x: null`: the group is not used
        return
    allowed = group_options(loader, group)
    value = str(value)
    if not _PLAIN.fullmatch(value) or ".." in value.split("/"):
        raise UserError(f"{group}={value}: options are plain names under conf/{group}/, not paths; "
                        f"allowed: {', '.join(allowed)}")
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        guess = f" (did you mean {group}={close[0]}?)" if close else ""
        raise UserError(f"{group}={value}: no such option{guess}; allowed: {', '.join(allowed)}")


def group_options(loader, group: str) -> list[str]:
    """Every option of a group, nested ones as `glue/rte` (the task group's options live in subfolders)."""
    options = list(loader.get_group_options(group))
    for sub in loader.list_groups(group):
        options += [f"{sub}/{option}" for option in group_options(loader, f"{group}/{sub}")]
    return sorted(options)
