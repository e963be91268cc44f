"""The ablation table as rows (one per published row, per scale and task kind), and its W&B summary run.

`table_rows` is the single aggregation behind every output: table.csv holds exactly these rows, table.md and
table.png are drawn from them, and the W&B summary run logs them as a wandb.Table.

Aggregation rules:
- the latest record of each unit counts (a unit retried after a failure has several);
- records are grouped by (scale, task kind): WordNet proxy tasks (`task_source == 'proxy'`) never mix with the real
  benchmarks (`local`, `hub`); pre-training records (MLM/NSP/SOP accuracy, task `pretrain`) measure the model
  itself, so they join every group of their scale;
- a record belongs to a row when its axes carry the row's values; an axis the table fixes (e.g. Table 5's E=128)
  may be absent from the record, meaning the sweep did not vary it;
- per column: the median over seeds of the ok records, with mean, sample std and n beside it; failed seeds are
  counted and their reasons kept; a column with no ok seed is `failed` (some seed failed) or `missing` (none ran);
- on proxy tasks the task columns (and Avg) keep the published value as a reference but get no delta: a WordNet
  stand-in for SQuAD is not SQuAD, so `ours - paper` would measure nothing.
"""

from __future__ import annotations

import logging
import os
import statistics
from pathlib import Path

from plmbench.tables.references import (
    AVG_PARTS,
    COLUMNS,
    GLUE_PARTS,
    MODEL_COLUMNS,
    RELATIVE,
    ReferenceRow,
    ReferenceTable,
    load_experiment,
    paper_average,
)

log = logging.getLogger(__name__)

FAILED, MISSING = "failed", "missing"
STAT_SUFFIXES = ("", "_mean", "_std", "_n", "_failed", "_error", "_paper", "_delta")


def task_kind(record: dict) -> str:
    return "proxy" if record.get("task_source") == "proxy" else "real"


SIZE_COLUMNS = ("params", "pretrain_pflops", "throughput")  # absolute sizes: a smaller scale is smaller by design


def compares_with_paper(kind: str, column: str, scale: str = "paper") -> bool:
    """Whether `ours - paper` means something: on real tasks always; on proxy tasks only for the columns that are
    not measured on the tasks (parameters, pre-training accuracies); for absolute sizes only at the paper's scale
    (a 0.7M-parameter smoke model is not 107M parameters short of BERT-base: the paper's value is a reference)."""
    if column in SIZE_COLUMNS and scale not in ("paper", "none"):  # none: no results yet, the paper's table
        return False
    return kind != "proxy" or column in MODEL_COLUMNS or COLUMNS[column].task == "pretrain"


def latest_per_unit(records: list[dict]) -> list[dict]:
    """The last record of each (cell, model, task, seed, shots, reasoner, task source), in first-seen order: a rerun
    of a unit, or of the same task and seed under new fine-tuning settings (another unit id), supersedes the earlier
    record instead of counting as another seed. `model`: distillation's teacher and students share a cell;
    `reasoner`: a graph reasoner's unit and the plain fine-tuning unit of a task share it too."""
    latest: dict[object, dict] = {}
    for record in records:
        key = (record.get("cell_id"), record.get("model"), record.get("task"), record.get("seed"),
               str(record.get("shots")), str(record.get("reasoner")), record.get("task_source"))
        latest.pop(key, None)
        latest[key] = record
    return list(latest.values())


def record_groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(scale, kind): records}, paper scale first, real tasks before proxies; pre-training records join all."""
    keys = {(str(r.get("scale", "unknown")), task_kind(r)) for r in records if r.get("task") != "pretrain"}
    scales_with_tasks = {scale for scale, _ in keys}
    keys |= {(str(r.get("scale", "unknown")), task_kind(r)) for r in records
             if r.get("task") == "pretrain" and str(r.get("scale", "unknown")) not in scales_with_tasks}
    ordered = sorted(keys, key=lambda k: (k[0] != "paper", k[0], k[1] == "proxy"))
    return {(scale, kind): [r for r in records if str(r.get("scale", "unknown")) == scale
                            and (r.get("task") == "pretrain" or task_kind(r) == kind)]
            for scale, kind in ordered}


def _matches(record: dict, table: ReferenceTable, row: ReferenceRow) -> bool:
    """A row's axis must be the record's; an option the record does not name is off, so `none` matches it. A fixed
    axis the record lacks matches too, and a row's own value of an axis wins over the table's fixed one."""
    axes = record.get("axes") or {}
    fixed = {k: v for k, v in table.fixed_axes.items() if k not in row.axes}
    return (all(str(axes.get(k, "none" if v == "none" else None)) == v for k, v in row.axes.items())
            and all(str(axes.get(k, v)) == v for k, v in fixed.items()))


def row_records(records: list[dict], table: ReferenceTable, row: ReferenceRow) -> list[dict]:
    """The records behind one published row of a table (the ones table_rows aggregates into it)."""
    return [r for r in records if _matches(r, table, row)]


def _failure(record: dict) -> str:
    error = str(record.get("error") or "no reason recorded").strip().splitlines() or ["no reason recorded"]
    return f"seed {record.get('seed', '?')}: {error[0][:200]}"


def _metric(record: dict, column: str) -> float | None:
    spec = COLUMNS[column]
    metrics = record.get("metrics") or {}
    for key in spec.metric_keys:
        if metrics.get(key) is not None:
            return float(metrics[key]) * spec.factor
    return None


def _stat_cell(values: list[float], failures: list[str], paper: float) -> dict:
    """The row entries of one column: median (or failed/missing), mean, std, n, failures, paper value, delta."""
    cell = {"": MISSING, "_mean": None, "_std": None, "_n": len(values), "_failed": len(failures),
            "_error": "; ".join(failures) or None, "_paper": paper, "_delta": None}
    if values:
        median = statistics.median(values)
        cell.update({"": median, "_mean": statistics.fmean(values), "_delta": None if paper is None else median - paper,
                     "_std": statistics.stdev(values) if len(values) > 1 else None})
    elif failures:
        cell[""] = FAILED
    return cell


def _column_cell(column: str, records: list[dict], paper: float) -> dict:
    spec = COLUMNS[column]
    values, failures = [], []
    for record in sorted((r for r in records if r.get("task") == spec.task), key=lambda r: str(r.get("seed"))):
        if record.get("status") == "failed":
            failures.append(_failure(record))
        elif record.get("status") == "ok":
            value = _metric(record, column)
            if value is None:  # a producer bug: show it, do not let it pass for "not run yet"
                failures.append(f"seed {record.get('seed', '?')}: none of the metrics {list(spec.metric_keys)} "
                                f"in record {record.get('unit_id')}")
            else:
                values.append(value)
    return _stat_cell(values, failures, paper)


def _params_cell(records: list[dict], paper: float) -> dict:
    """Backbone parameters in millions, from any record of the cell (every task of a cell shares its backbone); a
    knowledge-fusion backbone's entity parts (aggregator entity attention and fusion layers) count too."""
    counts = [r["params"]["backbone_params"] + (r["params"].get("knowledge_params") or 0) for r in records
              if isinstance(r.get("params"), dict) and r["params"].get("backbone_params") is not None]
    cell = _stat_cell([statistics.median(counts) / 1e6] if counts else [], [], paper)
    if not counts and any(r.get("status") == "failed" for r in records):
        cell.update({"": FAILED, "_error": "no parameter count: every record of this cell failed"})
    cell.update({"_mean": None, "_std": None, "_n": None})  # one model per cell: nothing to average
    return cell


def pretrain_flops(records: list[dict]) -> float | None:
    """Pre-training FLOPs of the cell(s) behind these records: train FLOPs per token x tokens seen, the median over
    cells when a row holds several; None when no record has both."""
    per_cell = {}
    for record in records:
        # a fine-tuning record keeps its cell's costs under pretrain_costs; pre-training (and older) records on top
        costs = record.get("pretrain_costs") or record
        flops = costs.get("pretrain_flops")
        if not flops:  # a record written before pretrain_flops: its counts, when the store kept them
            per_token = (record.get("flops") or {}).get("train_flops_per_token")
            flops = per_token * costs["tokens_seen"] if per_token and costs.get("tokens_seen") else None
        if not flops and costs.get("tokens_seen") == 0:
            flops = 0.0  # an untrained control cell (trainer.max_steps=0): drawn as a line, not a point
        if flops is not None:
            per_cell[(record.get("cell_id"), record.get("model"))] = float(flops)
    return statistics.median(per_cell.values()) if per_cell else None


def _average_cell(row: dict, paper: float) -> dict:
    """The paper's Avg over our medians; failed if a part failed, missing if a part is missing."""
    parts = {c: row[c] for c in AVG_PARTS}
    cell = {suffix: None for suffix in STAT_SUFFIXES} | {"_paper": paper}
    if all(isinstance(v, float) for v in parts.values()):
        ours = paper_average(parts)
        cell.update({"": ours, "_delta": None if paper is None else ours - paper})
    else:
        bad = [COLUMNS[c].header for c, v in parts.items() if not isinstance(v, float)]
        cell[""] = FAILED if any(parts[c] == FAILED for c in parts) else MISSING
        cell["_error"] = f"needs {', '.join(bad)}"
    return cell


def _shape_cell(records: list[dict]) -> dict:
    shapes = [r["shape"] for r in records if r.get("shape")]
    return {suffix: None for suffix in STAT_SUFFIXES} | {"": shapes[-1] if shapes else MISSING}


def _glue_cell(row: dict, columns: list[str], paper: float) -> dict:
    """The mean of the table's GLUE columns run so far (over our medians); failed if one of them is."""
    parts = [row[c] for c in columns if c in GLUE_PARTS and row[c] != MISSING]
    cell = {suffix: None for suffix in STAT_SUFFIXES} | {"_paper": paper}
    if parts and all(isinstance(v, float) for v in parts):
        cell[""] = statistics.fmean(parts)
    else:
        cell[""] = FAILED if FAILED in parts else MISSING
    return cell


def _relative(rows: list[dict], column: str) -> None:
    """`column` of every row from its source column against the first row's (the reference model), in percent."""
    source, how = RELATIVE[column]
    reference = rows[0][source] if rows else None
    for row in rows:
        ours = row[source]
        cell = {suffix: None for suffix in STAT_SUFFIXES} | {"_paper": row[column + "_paper"]}
        if isinstance(ours, float) and isinstance(reference, float) and reference:
            share = 100.0 * ours / reference
            cell[""] = 100.0 - share if how == "reduction" else share
            if cell["_paper"] is not None and compares_with_paper(row["tasks"], column, row["scale"]):
                cell["_delta"] = cell[""] - cell["_paper"]
        else:
            cell[""] = ours if ours in (FAILED, MISSING) else MISSING
        row.update({column + suffix: cell[suffix] for suffix in STAT_SUFFIXES})


def table_rows(experiment: str, records: list[dict], tables: list[ReferenceTable] | None = None) -> list[dict]:
    """One flat row per (scale, task kind, published table, published row): axes, then per column the entries
    `<col>` (median, or 'failed'/'missing'), `<col>_mean`, `_std`, `_n`, `_failed`, `_error`, `_paper`, `_delta`."""
    tables = tables if tables is not None else load_experiment(experiment)
    groups = record_groups(latest_per_unit(records)) or {("none", "real"): []}
    rows = []
    last = {"avg": 1, "glue": 1, **{c: 2 for c in RELATIVE}}  # computed from the other columns, so after them
    for (scale, kind), group in groups.items():
        for table in tables:
            section = []
            for ref in table.rows:
                mine = row_records(group, table, ref)
                row = {"experiment": experiment, "section": table.name, "scale": scale, "tasks": kind,
                       "row": ref.label, **table.row_axes(ref)}
                for column in sorted(table.columns, key=lambda c: last.get(c, 0)):
                    if column in RELATIVE:
                        row[column + "_paper"] = ref.values[column]  # the rest once every row is known
                        continue
                    if column == "params":
                        cell = _params_cell(mine, ref.values[column])
                    elif column == "shape":
                        cell = _shape_cell(mine)
                    elif column == "pretrain_pflops":
                        flops = pretrain_flops(mine)
                        cell = _stat_cell([] if flops is None else [flops / 1e15], [], ref.values[column])
                        cell.update({"_mean": None, "_std": None, "_n": None})
                    elif column == "avg":
                        cell = _average_cell(row, ref.values[column])
                    elif column == "glue":
                        cell = _glue_cell(row, table.columns, ref.values[column])
                    else:
                        cell = _column_cell(column, mine, ref.values[column])
                    if not compares_with_paper(kind, column, scale):
                        cell = {**cell, "_delta": None}
                    row.update({column + suffix: cell[suffix] for suffix in STAT_SUFFIXES})
                section.append(row)
            for column in (c for c in table.columns if c in RELATIVE):
                _relative(section, column)
            rows += section
    return rows


def row_columns(rows: list[dict]) -> list[str]:
    """The union of the rows' keys, in first-seen order (tables with different columns share one CSV / W&B table)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def log_summary_run(experiment: str, rows: list[dict], png: Path, logger_cfg: dict, config: dict | None = None,
                    images: dict[str, Path] | None = None, results: list[Path] | None = None) -> Path | None:
    """A W&B run (job_type=summary, group=experiment) holding the table, its PNG and `images` ({name: png}, logged
    as `<name>_png`, e.g. the learning curves and the compute plot); its config is the experiment, the row count
    and `config` (the table command adds the scale and git commits); with logger.log_results, the `results` files
    (records and tables) as one W&B artifact. Returns its files directory.

    Never raises: a W&B failure is logged as a warning and the result is None.
    """
    run = None
    try:
        import wandb

        mode = logger_cfg.get("mode", "offline")
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists()):
            log.warning("logger.mode=online but no W&B credentials found: logging the summary offline")
            mode = "offline"
        from plmbench.safety import wandb_settings  # no command line in W&B metadata: it may hold secrets

        where = logger_cfg.get("dir") or os.environ.get("WANDB_DIR")  # explicit: wandb caches settings per process
        extra = {"dir": str(Path(where).resolve())} if where else {}
        run = wandb.init(project=logger_cfg.get("project", "plmbench"), entity=logger_cfg.get("entity"),
                         name=f"{experiment}-summary", group=experiment, job_type="summary", mode=mode,
                         config={"experiment": experiment, "rows": len(rows), **(config or {})},
                         settings=wandb_settings(), **extra)
        columns = row_columns(rows)
        table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows],
                            allow_mixed_types=True)  # a metric column holds numbers and 'failed'/'missing'
        run.log({"table": table, "table_png": wandb.Image(str(png)),
                 **{f"{name}_png": wandb.Image(str(path)) for name, path in (images or {}).items()}})
        if logger_cfg.get("log_results") and results:  # logger.log_results=true: the files behind the table
            artifact = wandb.Artifact(f"{experiment}-results", type="results")
            for path in results:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
        files = Path(run.dir)
        run.finish()
        return files
    except Exception as error:  # noqa: BLE001 - the summary is a convenience; the files on disk are the result
        log.warning("W&B summary run for %s not logged (%s: %s)", experiment, type(error).__name__, error)
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception as finish_error:  # noqa: BLE001
                log.debug("could not finish the failed W&B run: %s", finish_error)
        return None
