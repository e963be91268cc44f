"""`plmbench table experiment=albert [results_dir=DIR] [wandb=true|false] [logger.mode=online ...]`

Reads results/<experiment>/records.jsonl, writes table.md, table.csv and table.png beside it, and the pictures
curves.png (pre-training learning curves) and compute.png (score against pre-training FLOPs) where the records
allow, prints the Markdown, and with wandb=true logs a W&B summary run (offline unless logger.mode=online) holding
the same rows and pictures.
"""

from __future__ import annotations

from pathlib import Path

from plmbench.errors import UserError

LOGGER_DEFAULTS = {"mode": "offline", "project": "plmbench", "entity": None, "dir": "."}  # as conf/logger/wandb.yaml
ALLOWED = ("experiment", "results_dir", "wandb", *(f"logger.{k}" for k in LOGGER_DEFAULTS))
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_overrides(overrides: list[str]) -> dict:
    """key=value pairs; a bad or unknown one is a one-line error naming it and what is allowed."""
    options: dict = {"results_dir": None, "wandb": False, "logger": dict(LOGGER_DEFAULTS)}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in ALLOWED:
            raise UserError(f"table: cannot use {item!r}; allowed: {', '.join(k + '=...' for k in ALLOWED)}")
        if key == "wandb":
            if value.lower() not in BOOLEANS:
                raise UserError(f"table: wandb={value!r}; allowed: true, false")
            options["wandb"] = BOOLEANS[value.lower()]
        elif key.startswith("logger."):
            options["logger"][key.removeprefix("logger.")] = value or None
        else:
            options[key] = value
    if not options.get("experiment"):
        raise UserError("table: say which experiment, e.g. `plmbench table experiment=albert`")
    return options


def main(overrides: list[str]) -> None:
    from plmbench.sweep.store import ResultsStore
    from plmbench.tables.plots import render_plots
    from plmbench.tables.render import render_tables
    from plmbench.tables.wandb_table import log_summary_run, table_rows

    options = parse_overrides(overrides)
    experiment = options["experiment"]
    store = ResultsStore.for_experiment(experiment, options["results_dir"])
    if not store.exists():
        raise UserError(f"no results store at {store.path}: run the sweep first "
                        f"(`make sweep EXPERIMENT={experiment}`), or point results_dir= at where it wrote")
    records = store.records()
    paths = render_tables(experiment, records, store.path.parent)
    pictures = render_plots(experiment, records, store.path.parent)
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in [*paths.values(), *pictures.values()])} from {len(records)} records")
    if options["wandb"]:
        run_dir = log_summary_run(experiment, table_rows(experiment, records), Path(paths["png"]), options["logger"],
                                  summary_config(records), images=pictures,
                                  results=[store.path, *(Path(p) for p in paths.values())])
        print(f"W&B summary run: {run_dir}" if run_dir else "W&B summary run not logged (see the warning above)")


def summary_config(records: list[dict]) -> dict:
    """Where the summary run's numbers come from: the scale and git commit of its records (comma-separated when
    they differ) and the commit that rendered the table."""
    from plmbench.sweep.runner import git_commit

    def distinct(key: str) -> str:
        return ",".join(sorted({str(r[key]) for r in records if r.get(key)})) or "unknown"

    return {"scale": distinct("scale"), "git_commit": distinct("git_commit"), "rendered_at_commit": git_commit()}
