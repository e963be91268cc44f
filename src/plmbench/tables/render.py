"""Paper-style tables of an experiment's results: out_dir/table.md, table.csv and table.png.

One section per (scale, task kind) and published table, rows in the paper's order, columns as in the paper. Every
Markdown cell reads `ours / paper (Δ)`, ours being the median over seeds with mean ± sample std and n beside it; the
legend under each table says so. On proxy tasks a task cell reads `ours (paper X)` instead: the published value is a
reference, not something a WordNet stand-in can be compared with. Failed and missing results are written as such,
never as 0 or blank.
"""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path

from plmbench.tables.references import COLUMNS, ReferenceTable, load_experiment
from plmbench.tables.wandb_table import (
    FAILED,
    MISSING,
    compares_with_paper,
    latest_per_unit,
    row_columns,
    table_rows,
    task_kind,
)

PROXY_NOTE = "on WordNet proxy tasks (stand-ins, not the real benchmarks)"
LEGEND = ("Each cell: ours / paper (Δ = ours − paper). Ours = median over fine-tuning seeds, with mean ± sample std "
          "and the number of seeds n in brackets. Params: backbone parameters in millions (embeddings, E→H projection "
          "when E ≠ H, encoder; a fused backbone's entity layers, not its frozen entity table; no pooler or heads). "
          "Pre-train PFLOPs: training FLOPs per token x tokens seen. Below the paper's scale a size (Params, PFLOPs, Seq/s) "
          "reads `ours (paper X)`: smaller by design, so no Δ. Avg: the paper's formula, mean of SQuAD1.1 (F1+EM)/2, SQuAD2.0 "
          "(F1+EM)/2, MNLI, SST-2 and RACE, over our medians. MLM/NSP/SOP: pre-training accuracy in percent. "
          "`missing`: not run yet; `failed`: every seed failed (reason in the numbered note); "
          "Avg is failed/missing when one of its parts is.")
PROXY_LEGEND = ("Proxy tasks: a task or Avg cell reads `ours (paper X)`, X being the published value on the real "
                "benchmark, shown for reference only; there is no Δ, since a proxy task is not the benchmark.")
# How a prompted (k-shot) unit picks among candidate answers: its record's finetune.primary.choice_score.
CHOICE_SCORES = {
    "calibrated": "GPT-3's calibrated score log P(option | prompt) − log P(option | \"Answer:\") (Brown et al. 2020, "
                  "§2.4)",
    "mean": "the mean log-likelihood per option token",
    "sum": "the summed log-likelihood of the option",
}


def render_tables(experiment: str, records: list[dict], out_dir: Path) -> dict[str, Path]:
    """Write table.md, table.csv and table.png under out_dir; returns {'md', 'csv', 'png'} -> path."""
    tables = load_experiment(experiment)
    rows = table_rows(experiment, records, tables)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "table.md", "csv": out_dir / "table.csv", "png": out_dir / "table.png"}
    sections = list(_sections(rows, tables, records))
    latest = latest_per_unit(records)
    scoring = {}
    for title, table, mine in sections:
        if mine:
            section = [r for r in latest if (str(r.get("scale", "unknown")), task_kind(r))
                       == (mine[0]["scale"], mine[0]["tasks"])]
            scoring[title] = "\n\n".join(note for note in (shots_scoring_note(section, table), length_note(section))
                                          if note)
    paths["md"].write_text(markdown(experiment, sections, scoring))
    _write_csv(rows, paths["csv"])
    _write_png(sections, paths["png"])
    return paths


def _sections(rows: list[dict], tables: list[ReferenceTable], records: list[dict]):
    """(title, table, rows) per (scale, task kind) and published table, in the order table_rows made them."""
    by_name = {t.name: t for t in tables}
    keys = list(dict.fromkeys((r["scale"], r["tasks"], r["section"]) for r in rows))
    for scale, kind, name in keys:
        table = by_name[name]
        mine = [r for r in rows if (r["scale"], r["tasks"], r["section"]) == (scale, kind, name)]
        yield (section_title(table, scale, kind, _hidden_sizes(records, scale), _embedding_sizes(records, scale)),
               table, mine)


def section_title(table: ReferenceTable, scale: str, kind: str, hidden_sizes: set | None = None,
                  embedding_sizes: dict | None = None) -> str:
    if scale == "none":
        return f"{table.title} (no results yet)"
    title = f"{table.title}, {scale} scale"
    if kind == "proxy":
        title += f", {PROXY_NOTE}"
    if scale != "paper" and table.scale_mapping:
        sizes = embedding_sizes or {}
        if "E=" in table.scale_mapping and sizes:  # the scale's own mapping (cpu: H/2), as the records trained it
            title += "; " + ", ".join(f"E={name} means E = {size}" for name, size in sorted(sizes.items(),
                                                                                        reverse=True))
        else:
            title += f"; {table.scale_mapping}"
        if hidden_sizes and len(hidden_sizes) == 1:
            title += f" (H = {next(iter(hidden_sizes))})"
    return title


def _embedding_sizes(records: list[dict], scale: str) -> dict:
    """{'768': E, '128': E} from the pre-training records' scale settings, when they agree (else empty)."""
    found = {(str(s.get("e768")), str(s.get("e128"))) for r in records if str(r.get("scale")) == scale
             for s in [((r.get("config") or {}).get("scale") or {}) if isinstance(r.get("config"), dict) else {}]
             if s.get("e768") is not None and s.get("e128") is not None}
    if len(found) != 1:
        return {}
    e768, e128 = next(iter(found))
    return {"768": e768, "128": e128}


def _hidden_sizes(records: list[dict], scale: str) -> set:
    sizes = set()
    for record in records:
        model = ((record.get("config") or {}).get("model") or {}) if isinstance(record.get("config"), dict) else {}
        if str(record.get("scale")) == scale and isinstance(model, dict) and model.get("hidden_size"):
            sizes.add(model["hidden_size"])
    return sizes


# ---- Markdown ------------------------------------------------------------------------------------------------------

def shots_scoring_note(records: list[dict], table: ReferenceTable) -> str:
    """Which score picked the prompted (k-shot) rows' answers in each column; empty when none has a result."""
    texts = []
    for column in table.columns:
        prompted = [r for r in records if r.get("task") == COLUMNS[column].task and r.get("status") == "ok"
                    and r.get("shots") not in (None, "finetuned")]
        scores = sorted({str(((r.get("finetune") or {}).get("primary") or {}).get("choice_score")) for r in prompted})
        known = [CHOICE_SCORES[score] for score in scores if score in CHOICE_SCORES]
        if known:
            texts.append(f"{COLUMNS[column].header}: {' / '.join(known)}")
    if not texts:
        return ""
    return ("k-shot rows: each answer is the candidate with the best score. " + "; ".join(texts) + ". Where "
            "several scores were computed, the records keep each one's accuracy (e.g. `accuracy_mean_ll`).")


def length_note(records: list[dict]) -> str:
    """Says that (and where) fine-tuning inputs were cut to the pre-training length; empty when none was."""
    capped = sorted({(str(r.get("task")), int(f["max_length_capped_from"]), int(f["max_length"]))
                     for r in records if r.get("status") == "ok"
                     for f in [r.get("finetune") or {}] if f.get("max_length_capped_from")})
    if not capped:
        return ""
    return ("Input length: fine-tuning inputs are capped at the pre-training length, since positions beyond it were "
            "never trained (`cap_to_pretraining_length`); BERT instead pre-trains its last 10% of steps at the "
            "longer length, which is not done here. Capped: "
            + ", ".join(f"{task} {before} -> {after}" for task, before, after in capped) + " tokens.")


def markdown(experiment: str, sections, scoring: dict[str, str] | None = None) -> str:
    """`scoring`: per section title, the note saying how its prompted rows scored candidate answers."""
    lines = [f"# {experiment}: our results beside the published tables", ""]
    for title, table, rows in sections:
        notes: list[str] = []
        lines += [f"## {title}", "", f"Source: {table.source}.", ""]
        if table.setup:
            lines += [f"Paper setup: {table.setup}.", ""]
        headers = ["Row"] + [COLUMNS[c].header for c in table.columns]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in rows:
            cells = [row["row"]] + [cell_text(row, c, notes) for c in table.columns]
            lines.append("| " + " | ".join(cells) + " |")
        proxy = any(row["tasks"] == "proxy" for row in rows)
        lines += ["", LEGEND + (" " + PROXY_LEGEND if proxy else ""), ""]
        if (scoring or {}).get(title):
            lines += [scoring[title], ""]
        lines += [rank_line(rows, table), ""]
        if notes:
            lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def cell_text(row: dict, column: str, notes: list[str]) -> str:
    """`ours / paper (Δ)`, or `ours (paper X)` where the two measure different things (proxy tasks); appends a
    numbered note to `notes` for each failure it mentions."""
    value, paper = row[column], row[column + "_paper"]
    paper_text = "n/a" if paper is None else f"{paper:g}" if column in COUNT_COLUMNS else f"{paper:.1f}"
    compared = compares_with_paper(row["tasks"], column, row["scale"])
    marker = ""
    if column != "avg" and row.get(column + "_error"):  # Avg's parts carry their own notes
        notes.append(f"[{len(notes) + 1}] {row['row']}, {COLUMNS[column].header}: {row[column + '_error']}")
        marker = f" [{len(notes)}]"
    if isinstance(value, str) and value not in (MISSING, FAILED):
        return value  # a text column (a model's shape)
    if value in (MISSING, FAILED):
        ours = "missing" if value == MISSING else f"failed{marker}"
        return f"{ours} / {paper_text}" if compared else f"{ours} (paper {paper_text})"
    ours = _params_text(value) if column in COUNT_COLUMNS else f"{value:.1f}"
    if COLUMNS[column].task is not None:  # a median over seeds; computed columns have no spread
        n = row[column + "_n"]
        spread = f"{row[column + '_mean']:.1f} ± {row[column + '_std']:.1f}, n={n}" if n > 1 else f"n={n}"
        if row[column + "_failed"]:
            spread += f"; {row[column + '_failed']} failed{marker}"
        ours += f" ({spread})"
    if paper is None:
        return ours
    if not compared:
        return f"{ours} (paper {paper_text})"
    return f"{ours} / {paper_text} ({row[column + '_delta']:+.1f})"


COUNT_COLUMNS = ("params", "pretrain_pflops")  # model costs: 3 significant digits below 1 (smoke models are tiny)


def _params_text(millions: float) -> str:
    return f"{millions:.3g}" if millions < 1 else f"{millions:.1f}"  # smoke-scale models have ~0.05M


def rank_agreement(rows: list[dict], column: str) -> tuple[float, float, int] | None:
    """Kendall tau (and its p-value) between our and the paper's values of `column`, over the rows we have."""
    from scipy.stats import kendalltau

    pairs = [(r[column], r[column + "_paper"]) for r in rows
             if isinstance(r.get(column), float) and r.get(column + "_paper") is not None]
    if len(pairs) < 2:
        return None
    result = kendalltau([p[0] for p in pairs], [p[1] for p in pairs])
    return float(result.statistic), float(result.pvalue), len(pairs)


def rank_line(rows: list[dict], table: ReferenceTable) -> str:
    parts = []
    for column in ("avg", "params"):
        if column not in table.columns:
            continue
        agreement = rank_agreement(rows, column)
        name = COLUMNS[column].header
        if agreement is None:
            parts.append(f"{name}: n/a (needs 2 or more rows with results)")
        elif math.isnan(agreement[0]):
            parts.append(f"{name}: undefined (all tied), {agreement[2]} rows")
        else:
            parts.append(f"{name}: τ = {agreement[0]:.2f} (p = {agreement[1]:.2g}, {agreement[2]} rows)")
    return "Rank agreement with the paper (Kendall τ, ours vs paper over the rows we have): " + "; ".join(parts) + "."


# ---- CSV and PNG ---------------------------------------------------------------------------------------------------

def _write_csv(rows: list[dict], path: Path) -> None:
    """The rows exactly as table_rows made them (the W&B summary logs the same); empty = not a column of that table."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=row_columns(rows), restval="")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def _write_png(sections, path: Path) -> None:
    """The tables as a figure: `ours / paper` per cell, shaded by the sign of Δ (grey: failed or missing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = list(sections)
    widest = max(len(t.columns) for _, t, _ in sections) + 2  # the row label takes two columns' width
    heights = [0.8 + 0.3 * (len(rows) + 1) for _, _, rows in sections]
    fig, axes = plt.subplots(len(sections), 1, figsize=(1.15 * widest, sum(heights) + 0.3),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (title, table, rows) in zip(axes[:, 0], sections):
        ax.axis("off")
        ax.set_title("\n".join(textwrap.wrap(title, 12 * widest)), fontsize=9, loc="left")
        text, colours = [], []
        for row in rows:
            text.append([row["row"]] + [_png_cell(row, c) for c in table.columns])
            colours.append(["white"] + [_shade(row, c) for c in table.columns])
        width = len(table.columns) + 2
        grid = ax.table(cellText=text, cellColours=colours, cellLoc="center", bbox=[0, 0, width / widest, 1],
                        colLabels=["Row"] + [COLUMNS[c].header for c in table.columns],
                        colWidths=[2 / width] + [1 / width] * len(table.columns))
        grid.auto_set_font_size(False)
        grid.set_fontsize(7)
    fig.text(0.01, 0.002, "Cells: ours (median over seeds) / paper; green: ours ≥ paper, red: below. Proxy tasks: "
             "ours (paper = the real benchmark's value, for reference), not shaded.", fontsize=7)
    total = sum(heights) + 0.3  # inches; leave ~0.45 in above each table for its title, 0.3 in for the footer
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / total, bottom=0.3 / total, hspace=0.6)
    fig.savefig(path, dpi=120)  # no tight_layout: it draws the tables a second time
    plt.close(fig)


def _png_cell(row: dict, column: str) -> str:
    value, paper = row[column], row[column + "_paper"]
    ours = value if isinstance(value, str) else (_params_text(value) if column in COUNT_COLUMNS else f"{value:.1f}")
    if paper is None:
        return ours
    if not compares_with_paper(row["tasks"], column, row["scale"]):
        return f"{ours} (paper {paper:g})" if column in COUNT_COLUMNS else f"{ours} (paper {paper:.1f})"
    return f"{ours} / {paper:g}" if column in COUNT_COLUMNS else f"{ours} / {paper:.1f}"


def _shade(row: dict, column: str) -> str:
    delta = row[column + "_delta"]
    if delta is None:
        return "white" if isinstance(row[column], float) else "#e6e6e6"  # a proxy result: nothing to compare
    return "#d9f2d9" if delta >= 0 else "#f8d7d7"
