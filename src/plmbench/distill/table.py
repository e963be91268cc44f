"""The distillation table: results/distillation/table.{md,csv,png} from the sweep's records.

One section per (scale, task kind: real benchmarks or WordNet proxies, teacher cell), one row per model of
experiments/distillation.yaml (teacher, DistilBERT, TinyBERT): shape, backbone parameters and the reduction
against the teacher, inference throughput and speed-up (measured in one process), each task's score (median
over seeds), the GLUE average over the tasks run and the share of the teacher's average each student keeps.
Reductions, speed-ups and shares sit beside the published ones; failed and missing values say so, never 0.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import yaml

from plmbench.tables.references import experiments_dir
from plmbench.tables.wandb_table import FAILED, MISSING, latest_per_unit, task_kind

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "squad_v1": "SQuAD1.1", "squad_v2": "SQuAD2.0",
              "race": "RACE"}
METRIC_NAMES = {"accuracy": "acc", "matthews_correlation": "MCC", "pearson": "Pearson", "f1": "F1"}
GENERAL_TASKS = ("pretrain", "distill", "throughput")  # records about a model, not a task: join every group
PAPER_KEYS = ("params_reduction", "speedup", "kept")
LEGEND = ("Each cell: ours / paper where the paper gives a number. Params: backbone parameters in millions "
          "(embeddings and encoder layers, no pooler or heads); reduction: 1 − student/teacher. Throughput: "
          "sequences per second of the backbone's forward, all models measured in the same process, taking turns; "
          "speed-up: over the teacher. Task scores: the headline metric in points, median over fine-tuning seeds "
          "(n seeds). GLUE: mean of the GLUE tasks run; kept: the student's GLUE / the teacher's. `missing`: not run "
          "yet; `failed`: every seed failed (reason in the numbered note). Below BERT-base size the vocabulary "
          "embeddings are most of a model's parameters, so half the layers saves much less than the paper's 40%.")


def load_reference(name: str = "distillation", root: Path | None = None) -> dict:
    path = Path(root or experiments_dir()) / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no published table for experiment={name!r}: {path} does not exist")
    data = yaml.safe_load(path.read_text())
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: needs `rows`, a list of {{label, model, paper}}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"label", "model", "paper"} <= set(row):
            raise ValueError(f"{path}: rows[{i}] needs label, model and paper")
        unknown = sorted(set(row["paper"] or {}) - set(PAPER_KEYS))
        if unknown:
            raise ValueError(f"{path}: rows[{i}].paper: unknown key(s) {unknown}; allowed: {', '.join(PAPER_KEYS)}")
    return {**data, "path": str(path)}


# ------------------------------------------------------------------------------------------ aggregation


def groups(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """{(scale, task kind, teacher cell): records}. A teacher and its students are compared only with each other;
    records about a model (pre-training, distillation, throughput) join every task kind of their cell."""
    records = latest_per_unit(records)
    cell = lambda r: (str(r.get("scale")), str(r.get("cell_id")))
    keys = {(*cell(r), task_kind(r)) for r in records if r.get("task") not in GENERAL_TASKS}
    with_tasks = {(scale, c) for scale, c, _ in keys}
    keys |= {(*cell(r), "none") for r in records if cell(r) not in with_tasks}  # no task results yet
    ordered = sorted(keys, key=lambda k: (k[0] != "paper", k[0], k[1], k[2] == "proxy"))
    return {(scale, kind, c): [r for r in records if cell(r) == (scale, c)
                               and (r.get("task") in GENERAL_TASKS or task_kind(r) == kind)]
            for scale, c, kind in ordered}


def _ok(records: list[dict], model: str, task: str) -> list[dict]:
    return [r for r in records if r.get("model") == model and r.get("task") == task and r.get("status") == "ok"]


def _failures(records: list[dict], model: str, task: str | None = None) -> list[str]:
    return [f"{r.get('task')} seed {r.get('seed')}: {str(r.get('error') or 'no reason recorded').splitlines()[0][:200]}"
            for r in records if r.get("model") == model and r.get("status") == "failed"
            and (task is None or r.get("task") == task)]


def _value(values: list[float], failures: list[str]):
    if values:
        return statistics.median(values)
    return FAILED if failures else MISSING


def _params(records: list[dict], model: str):
    counts = [r["params"]["backbone"] for r in records if r.get("model") == model and r.get("status") == "ok"
              and isinstance(r.get("params"), dict) and r["params"].get("backbone")]
    return counts[-1] / 1e6 if counts else _value([], _failures(records, model))


def table_rows(records: list[dict], reference: dict) -> list[dict]:
    """Flat rows: one per (scale, task kind, teacher cell, model of the reference), behind md, csv and png."""
    out = []
    for (scale, kind, cell), mine in groups(records).items():
        tasks = list(dict.fromkeys(r["task"] for r in mine if r.get("task") not in GENERAL_TASKS))
        rows = [{"scale": scale, "tasks": kind, "cell_id": cell, **model_row(ref, mine, tasks)}
                for ref in reference["rows"]]
        teacher = next((r for r in rows if r["model"] == "teacher"), None)
        for row in rows:
            row["params_reduction"] = _ratio(row["params_m"], teacher and teacher["params_m"], reduction=True)
            row["kept"] = _ratio(row["glue"], teacher and teacher["glue"])
        out += rows
    return out


def model_row(ref: dict, records: list[dict], tasks: list[str]) -> dict:
    """One model's entries: shape, size, speed, each task's median score, the GLUE mean and the paper's values."""
    model = ref["model"]
    shape = next((r["shape"] for r in reversed(records) if r.get("model") == model and r.get("shape")), None)
    speed = _ok(records, model, "throughput")
    speed_failed = _value([], _failures(records, model, "throughput"))
    row = {"model": model, "row": ref["label"], "shape": _shape_text(shape), "params_m": _params(records, model),
           "throughput": speed[-1]["metrics"]["sequences_per_second"] if speed else speed_failed,
           "speedup": speed[-1]["metrics"]["speedup"] if speed else speed_failed, "notes": []}
    for task in tasks:
        done = _ok(records, model, task)
        scores = [r["score"] for r in done if r.get("score") is not None]
        failures = _failures(records, model, task)
        row[task], row[f"{task}_n"] = _value(scores, failures), len(scores)
        row[f"{task}_metric"] = next((r["primary"]["name"] for r in done if isinstance(r.get("primary"), dict)), None)
        row["notes"] += failures if not scores else []
    glue = [t for t in tasks if t in GLUE_TASKS]
    parts = [row[t] for t in glue]
    row["glue"] = statistics.fmean(parts) if parts and all(isinstance(v, float) for v in parts) else \
        (FAILED if FAILED in parts else MISSING)
    row["glue_tasks"] = ",".join(glue)
    return {**row, **{f"{key}_paper": (ref.get("paper") or {}).get(key) for key in PAPER_KEYS}}


def _ratio(ours, teacher, reduction: bool = False):
    if not isinstance(ours, float) or not isinstance(teacher, float) or teacher == 0:
        return ours if isinstance(ours, str) else MISSING
    share = 100.0 * ours / teacher
    return 100.0 - share if reduction else share


def _shape_text(shape: dict | None) -> str:
    if not shape:
        return "?"
    text = f"L{shape['num_layers']} H{shape['hidden_size']} A{shape['num_heads']} FFN{shape['ffn_size']}"
    return text + ("" if shape.get("type_vocab_size", 2) else ", no segments")


# ------------------------------------------------------------------------------------------ rendering


def render(experiment: str, records: list[dict], out_dir: Path) -> dict[str, Path]:
    """Write table.md, table.csv and table.png under out_dir; returns {'md', 'csv', 'png'} -> path. The same
    signature as plmbench.tables.render.render_tables, so `plmbench table` can hand the experiment over."""
    reference = load_reference(experiment)
    rows = table_rows(records, reference)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"md": out_dir / "table.md", "csv": out_dir / "table.csv", "png": out_dir / "table.png"}
    written["md"].write_text(markdown(experiment, rows, reference))
    _write_csv(rows, written["csv"])
    _write_png(rows, reference, written["png"])
    return written


def _sections(rows: list[dict]):
    for key in dict.fromkeys((r["scale"], r["tasks"], r["cell_id"]) for r in rows):
        yield key, [r for r in rows if (r["scale"], r["tasks"], r["cell_id"]) == key]


def _task_columns(section: list[dict]) -> list[str]:
    return [k.removesuffix("_n") for k in section[0] if k.endswith("_n")]


def _num(value, fmt: str = "{:.1f}") -> str:
    return fmt.format(value) if isinstance(value, float) else str(value)


def _with_paper(row: dict, key: str, fmt: str, paper_fmt: str) -> str:
    paper = row.get(f"{key}_paper")
    return _num(row[key], fmt) + (f" / {paper_fmt.format(paper)}" if paper is not None else "")


def cells(row: dict, tasks: list[str]) -> list[str]:
    params = _num(row["params_m"], "{:.3g}" if isinstance(row["params_m"], float) and row["params_m"] < 1 else "{:.1f}")
    return [row["row"], row["shape"], params, _with_paper(row, "params_reduction", "{:.0f}%", "{:g}%"),
            _num(row["throughput"], "{:.0f}"), _with_paper(row, "speedup", "{:.2f}×", "{:g}×"),
            *(f"{_num(row[t])} (n={row[f'{t}_n']})" if row[f"{t}_n"] else _num(row[t]) for t in tasks),
            _num(row["glue"]), _with_paper(row, "kept", "{:.1f}%", "{:g}%")]


def headers(section: list[dict], tasks: list[str]) -> list[str]:
    """Column names; a task's carries its headline metric (e.g. `STS-B pearson`)."""
    def metric(task: str) -> str:
        names = [r.get(f"{task}_metric") for r in section if r.get(f"{task}_metric")]
        return f" {METRIC_NAMES.get(names[0], names[0])}" if names else ""

    return ["Model", "Shape", "Params (M)", "Params saved", "Seq/s", "Speed-up",
            *(TASK_NAMES.get(t, t) + metric(t) for t in tasks), "GLUE", "GLUE kept"]


def markdown(experiment: str, rows: list[dict], reference: dict) -> str:
    lines = [f"# {reference.get('title', experiment)}", ""]
    if not rows:
        return "\n".join(lines + ["No results yet: run `plmbench sweep experiment=distillation`.", ""])
    for (scale, kind, cell), section in _sections(rows):
        tasks = _task_columns(section)
        title = f"{scale} scale" + (", on WordNet proxy tasks (stand-ins, not the real GLUE)" if kind == "proxy" else "")
        title += f"; teacher runs/cells/{cell}"
        lines += [f"## {title}", ""]
        lines += ["Sources:", ""] + [f"- {source}." for source in reference.get("sources", [])] + [""]
        if reference.get("setup"):
            lines += [f"Paper setup: {reference['setup']}.", ""]
        names = headers(section, tasks)
        lines += ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        notes = []
        for row in section:
            lines.append("| " + " | ".join(cells(row, tasks)) + " |")
            notes += [f"{row['row']}: {note}" for note in row["notes"]]
        lines += ["", LEGEND, ""]
        if notes:
            lines += ["Notes:", ""] + [f"- [{i}] {note}" for i, note in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def _write_csv(rows: list[dict], path: Path) -> None:
    names = list(dict.fromkeys(k for row in rows for k in row if k != "notes"))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def _write_png(rows: list[dict], reference: dict, path: Path) -> None:
    """The sections as figure tables, each under its title; the cells read as in the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = list(_sections(rows)) or [(("none", "none", "none"), [])]
    heights = [0.6 + 0.25 * (len(section) + 1) for _, section in sections]  # title, header and rows
    fig, axes = plt.subplots(len(sections), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, ((scale, kind, _), section) in zip(axes[:, 0], sections):
        ax.axis("off")
        title = f"{reference.get('title', '')}: {scale} scale" + (" (proxy tasks)" if kind == "proxy" else "")
        ax.set_title(f"{title}\nours / paper; throughput measured in one process, models taking turns",
                     fontsize=8, loc="left")
        if not section:
            continue
        tasks = _task_columns(section)
        grid = ax.table(cellText=[cells(r, tasks) for r in section], colLabels=headers(section, tasks),
                        loc="upper left", cellLoc="center")
        grid.auto_set_font_size(False)
        grid.set_fontsize(7)
        grid.auto_set_column_width(list(range(len(tasks) + 8)))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
