"""`plmbench <command> --help` and `plmbench <command> --cfg job|hydra|all [--resolve]`: what a command does, the
config groups it takes with their options, and the config it would run with; printed, nothing run.

Hydra's own flags never reach a Hydra app here: every command composes its config first (hydra_app.run_app), and
`--help` is no override. So they are answered from the same composition, and the config folders of
PLMBENCH_CONFIG_PATH count as they do for a run.
"""

from __future__ import annotations

import importlib

from plmbench.errors import UserError

HELP = ("-h", "--help")
CFG = ("-c", "--cfg")
CFG_PARTS = ("job", "hydra", "all")
# The commands that compose a Hydra config, and which one; export-hf takes a few keys of its own besides.
CONFIGS = {"describe": "pretrain", "pretrain": "pretrain", "finetune": "finetune", "sweep": "pretrain",
           "distill": "pretrain", "export-hf": "pretrain"}


def split_flags(args: list[str]) -> tuple[dict, list[str]]:
    """({"help": bool, "cfg": job|hydra|all|None, "resolve": bool}, the other arguments)."""
    flags, rest, items = {"help": False, "cfg": None, "resolve": False}, [], iter(args)
    for arg in items:
        if arg in HELP:
            flags["help"] = True
        elif arg in CFG or arg.startswith("--cfg="):
            part = arg.partition("=")[2] if "=" in arg else next(items, "")
            if part not in CFG_PARTS:
                raise UserError(f"--cfg {part}: allowed: {', '.join(CFG_PARTS)} (e.g. `--cfg job`)")
            flags["cfg"] = part
        elif arg == "--resolve":
            flags["resolve"] = True
        else:
            rest.append(arg)
    return flags, rest


def answer_flags(command: str, module: str, args: list[str]) -> bool:
    """Prints the command's help or config when `args` ask for it (and returns True); else False."""
    flags, rest = split_flags(args)
    if flags["help"]:
        print(command_help(command, module, rest))
        return True
    if flags["cfg"]:
        print(command_config(command, rest, flags["cfg"], flags["resolve"]), end="")
        return True
    return False


def command_help(command: str, module: str, overrides: list[str]) -> str:
    from plmbench.configuration import config_dirs

    doc = (importlib.import_module(module).__doc__ or "").strip()
    if command not in CONFIGS:
        return f"{doc}\n\n`plmbench {command} --cfg job [key=value ...]` prints the options it would run with."
    choices = _choices(CONFIGS[command], _hydra_overrides(command, overrides))
    groups = config_groups()
    width = max(len(group) for group in groups) + 2
    return "\n".join([
        doc, "",
        f"usage: plmbench {command} [group=option ...] [key=value ...]",
        f"       plmbench {command} --cfg job|hydra|all [--resolve] [overrides]   the composed config, not run",
        "",
        "config groups (* the choice with these overrides; a group without one is added as +group=option):",
        *(f"  {group:<{width}}{options_line(group, choices.get(group))}" for group in groups),
        "",
        f"config folders, first wins: {', '.join(str(d) for d in config_dirs())} (PLMBENCH_CONFIG_PATH adds yours)",
    ])


def config_groups() -> list[str]:
    """Every config group in every config folder: conf/'s folders, and hydra/<group> for Hydra's own."""
    from plmbench.configuration import config_dirs

    groups = set()
    for root in config_dirs():
        for folder in (p for p in root.iterdir() if p.is_dir()):
            subfolders = [p for p in folder.iterdir() if p.is_dir()] if folder.name == "hydra" else [folder]
            groups |= {str(p.relative_to(root)) for p in subfolders}
    return sorted(groups)


def options_line(group: str, chosen) -> str:
    from plmbench.configuration import config_options

    options = config_options(group)
    shown = [f"{option}*" if option == chosen else option for option in options]
    if chosen is not None and chosen not in options:  # one of Hydra's own (hydra/launcher=basic)
        shown.insert(0, f"{chosen}* (Hydra's)")
    return ", ".join(shown)


def _choices(config_name: str, overrides: list[str]) -> dict:
    from plmbench.configuration import compose

    cfg = compose(config_name, overrides, return_hydra=True)
    return {str(group): choice for group, choice in cfg.hydra.runtime.choices.items()}


def _hydra_overrides(command: str, args: list[str]) -> list[str]:
    """The arguments that are Hydra overrides: export-hf's own keys (out=, ckpt=, tokenizer=) are not."""
    if command != "export-hf":
        return list(args)
    from plmbench.commands.export_hf import OPTIONS

    return [arg for arg in args if arg.partition("=")[0] not in OPTIONS]


def command_config(command: str, args: list[str], part: str, resolve: bool) -> str:
    from omegaconf import OmegaConf

    if command not in CONFIGS:
        if part != "job":
            raise UserError(f"--cfg {part}: `plmbench {command}` has no Hydra config; use --cfg job")
        return OmegaConf.to_yaml(OmegaConf.create(command_options(command, args)))
    from plmbench.configuration import compose

    cfg = compose(CONFIGS[command], _hydra_overrides(command, args), return_hydra=part != "job")
    return OmegaConf.to_yaml(cfg.hydra if part == "hydra" else cfg, resolve=resolve)


def command_options(command: str, args: list[str]) -> dict:
    """The key=value options of a command without a Hydra config, parsed and checked as the command does."""
    if command == "table":
        from plmbench.commands.table import parse_overrides

        return parse_overrides(args)
    if command in ("bench", "gpu-check"):
        parse = importlib.import_module(f"plmbench.commands.{command.replace('-', '_')}").parse
        options, overrides = parse(args)
        return {**options, "overrides": overrides}
    if command == "data":
        return {"force": "force=true" in args}
    raise UserError(f"--cfg: `plmbench {command}` has no options to show")
