"""Pictures of an experiment's results beside its table: out_dir/curves.png and out_dir/compute.png.

- curves.png: the pre-training learning curves, held-out accuracy (MLM, NSP, SOP, RTD, LM: those recorded) against
  tokens seen, one line per cell of the sweep and one panel per metric, NSP/SOP with a dashed chance line at 0.5:
  a plateau, or a run falling back to chance, shows at a glance. Drawn from the pre-training records' `curve`.
- compute.png: as ELECTRA's Figure 1, each row's score against its pre-training FLOPs (train FLOPs per token times
  tokens seen: the records' pretrain_flops) on a log axis, one labelled point per row of the table, one panel per
  table section.

A file is written only when it has something to draw (and a stale one from an earlier render is removed).
"""

from __future__ import annotations

import math
import statistics
import textwrap
from pathlib import Path

from plmbench.tables.references import COLUMNS, ReferenceTable, load_experiment
from plmbench.tables.wandb_table import (
    latest_per_unit,
    pretrain_flops,
    record_groups,
    row_records,
    table_rows,
)

CURVE_METRICS = {"mlm_acc": "MLM accuracy", "nsp_acc": "NSP accuracy", "sop_acc": "SOP accuracy",
                 "rtd_acc": "RTD (discriminator) accuracy", "lm_acc": "LM (next-token) accuracy"}
CHANCE = {"nsp_acc": 0.5, "sop_acc": 0.5}  # both probe sets are exactly half positive
AXIS_ORDER = ("scale", "recipe", "model", "size", "embedding_size", "embedding", "sharing", "objective")


def render_plots(experiment: str, records: list[dict], out_dir: Path, compute: bool = True) -> dict[str, Path]:
    """Write curves.png and (with `compute`) compute.png under out_dir when they have something to draw; returns
    {'curves', 'compute'} -> path for the files written. `compute=False`: the experiment has no standard table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"curves": curves_figure(experiment, records)}
    if compute:
        figures["compute"] = compute_figure(experiment, records)
    written = {}
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        if fig is None:
            path.unlink(missing_ok=True)  # an earlier picture would no longer match the records
            continue
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written[name] = path
    return written


# ---- Learning curves -----------------------------------------------------------------------------------------------

def cell_labels(records: list[dict]) -> tuple[list[str], str]:
    """(a legend label per record, the axes every record shares). A label names only the axes that differ between
    the records, e.g. 'E=21 all mlm_sop'; the shared ones go in the figure title once."""
    described = [{"scale": r.get("scale"), **(r.get("axes") or {})} for r in records]
    keys = sorted({k for d in described for k in d},
                  key=lambda k: (AXIS_ORDER.index(k) if k in AXIS_ORDER else len(AXIS_ORDER), k))
    if "embedding_size" in keys:
        keys = [k for k in keys if k != "embedding"]  # E= says it with the number
    varying = [k for k in keys if len({str(d.get(k)) for d in described}) > 1]
    labels = [" ".join(_axis_text(k, d.get(k)) for k in varying if d.get(k) is not None) for d in described]
    plain = list(labels)
    for i, record in enumerate(records):  # cells told apart by nothing in their axes: say which cell
        if not plain[i] or plain.count(plain[i]) > 1:
            labels[i] = f"{plain[i]} [{str(record.get('cell_id'))[:8]}]".strip()
    shared = ", ".join(f"{k}={described[0][k]}" for k in keys
                       if k not in varying and described[0].get(k) is not None)
    return labels, shared


def _axis_text(key: str, value) -> str:
    return f"E={value}" if key == "embedding_size" else str(value)


def curves_figure(experiment: str, records: list[dict]):
    """The learning-curve figure (a matplotlib Figure), or None when no pre-training record carries a curve.
    Each cell's line has the cell id as its gid."""
    import matplotlib.pyplot as plt

    cells = [r for r in latest_per_unit(records)
             if r.get("task") == "pretrain" and r.get("status") == "ok" and r.get("curve")]
    metrics = [m for m in CURVE_METRICS if any(m in point for r in cells for point in r["curve"])]
    if not metrics:
        return None
    labels, shared = cell_labels(cells)
    colours = plt.get_cmap("tab10" if len(cells) <= 10 else "tab20").colors
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 2.4, 3.8), squeeze=False,
                             layout="constrained")
    for ax, metric in zip(axes[0], metrics):
        for i, (record, label) in enumerate(zip(cells, labels)):
            points = sorted((p for p in record["curve"] if p.get(metric) is not None), key=lambda p: p["step"])
            if points:
                ax.plot([p["tokens_seen"] for p in points], [p[metric] for p in points], marker="o", markersize=3,
                        color=colours[i % len(colours)], label=label, gid=str(record.get("cell_id")))
        if metric in CHANCE:
            ax.axhline(CHANCE[metric], color="grey", linestyle="--", linewidth=1, label="chance", gid="chance")
        ax.set_title(CURVE_METRICS[metric], fontsize=10)
        ax.set_xlabel("tokens seen")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy")
    handles = {}  # one legend entry per cell, even when a cell lacks a panel's metric (e.g. no SOP under mlm)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8)
    fig.suptitle(f"{experiment}: pre-training learning curves" + (f" ({shared})" if shared else ""), fontsize=11)
    return fig


# ---- Score against compute -----------------------------------------------------------------------------------------

def score_of(row: dict, table: ReferenceTable) -> tuple[float | None, str]:
    """(the row's score, what it is): the paper's Avg where the table has one, else the mean of the table's task
    columns (pre-training accuracies and params excluded); None unless every part has a result."""
    if "avg" in table.columns:
        value = row["avg"]
        return (value if isinstance(value, float) else None), "Avg (the paper's formula, as in the table)"
    columns = [c for c in table.columns if c not in ("params", "avg") and COLUMNS[c].task != "pretrain"]
    if not columns:
        return None, ""
    values = [row[c] for c in columns]
    name = COLUMNS[columns[0]].header if len(columns) == 1 else \
        f"mean of {', '.join(COLUMNS[c].header for c in columns)}"
    return (statistics.fmean(values) if all(isinstance(v, float) for v in values) else None), name


def compute_points(experiment: str, records: list[dict],
                   tables: list[ReferenceTable] | None = None) -> list[tuple[str, str, list[dict]]]:
    """Per table section with at least one point: (title, score name, [{'row', 'flops', 'score'}]) in table order."""
    from plmbench.tables.render import section_title

    tables = tables if tables is not None else load_experiment(experiment)
    by_name = {t.name: t for t in tables}
    refs = {(t.name, ref.label): ref for t in tables for ref in t.rows}
    groups = record_groups(latest_per_unit(records))
    sections: dict[tuple, tuple[str, str, list[dict]]] = {}
    for row in table_rows(experiment, records, tables):
        table = by_name[row["section"]]
        score, name = score_of(row, table)
        mine = row_records(groups.get((row["scale"], row["tasks"]), []), table, refs[(table.name, row["row"])])
        flops = pretrain_flops(mine)
        if score is None or flops is None:
            continue
        key = (row["scale"], row["tasks"], row["section"])
        if key not in sections:
            sections[key] = (section_title(table, row["scale"], row["tasks"]), name, [])
        sections[key][2].append({"row": row["row"], "flops": flops, "score": score})
    return list(sections.values())


def compute_figure(experiment: str, records: list[dict], tables: list[ReferenceTable] | None = None):
    """Score against pre-training FLOPs (log axis), one labelled point per table row with both; one panel per table
    section. None when no row has both a score and a FLOP count. Each panel's points are its one scatter."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sections = compute_points(experiment, records, tables)
    if not sections:
        return None
    fig, axes = plt.subplots(1, len(sections), figsize=(6.0 * len(sections), 4.6), squeeze=False,
                             layout="constrained")
    for ax, (title, name, every) in zip(axes[0], sections):
        points = [p for p in every if p["flops"] > 0]
        for control in (p for p in every if p["flops"] <= 0):  # no pre-training: no place on a log axis, a line
            ax.axhline(control["score"], color="gray", linestyle="--", linewidth=1)
            ax.annotate(f"{control['row']} (no pre-training): {control['score']:.1f}", (0.01, control["score"]),
                        xycoords=("axes fraction", "data"), fontsize=7, va="bottom", color="gray")
        if not points:
            continue
        ax.scatter([p["flops"] for p in points], [p["score"] for p in points], s=24, zorder=3)
        _label_points(ax, points)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap; decades suffice
        flops = [p["flops"] for p in points]
        if max(flops) / min(flops) < 10:  # a narrow range: widen it to whole decades so two ticks are labelled
            ax.set_xlim(10 ** math.floor(math.log10(min(flops) / 1.5)), 10 ** math.ceil(math.log10(max(flops) * 1.5)))
        ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9, loc="left")
        ax.set_xlabel("pre-training FLOPs (train FLOPs per token × tokens seen)")
        ax.set_ylabel("\n".join(textwrap.wrap(name, 60)), fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"{experiment}: score against pre-training compute (as ELECTRA's Figure 1)", fontsize=11)
    return fig


def _label_points(ax, points: list[dict]) -> None:
    """One label per distinct point (rows at the same place share it, e.g. sharing modes of equal FLOPs and score).
    Rows differing only in sharing have equal FLOPs, so points stack in columns: labels alternate right and left
    along a column to keep apart."""
    places: dict[tuple, list[dict]] = {}
    for point in points:
        places.setdefault((round(math.log10(point["flops"]), 6), round(point["score"], 6)), []).append(point)
    column_index: dict[float, int] = {}
    for (log_flops, _), same in sorted(places.items()):
        i = column_index[log_flops] = column_index.get(log_flops, -1) + 1
        right = i % 2 == 0
        ax.annotate(" / ".join(p["row"] for p in same), (same[0]["flops"], same[0]["score"]), fontsize=7,
                    textcoords="offset points", xytext=(5 if right else -5, 3), ha="left" if right else "right")
