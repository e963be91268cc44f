"""Published references, aggregation into table rows, Markdown/CSV/PNG rendering, the W&B summary and the command."""

import csv
import json
import logging

import numpy as np
import pytest
from scipy.stats import kendalltau

from plmbench.commands import table as table_command
from plmbench.errors import UserError
from plmbench.sweep.store import ResultsStore
from plmbench.tables.references import load_experiment, load_table, paper_average
from plmbench.tables.render import PROXY_NOTE, rank_agreement, render_tables
from plmbench.tables.wandb_table import log_summary_run, table_rows

# The paper's numbers, typed in again from REFERENCE.md so that the YAML transcription is checked independently.
PAPER_T4 = """
e768 all       31 88.6 81.5 79.2 76.6 82.0 90.6 63.3 79.8
e768 attention 83 89.9 82.7 80.0 77.2 84.0 91.4 67.7 81.6
e768 ffn       57 89.2 82.1 78.2 75.4 81.5 90.8 62.6 79.5
e768 none     108 90.4 83.2 80.4 77.6 84.5 92.8 68.2 82.3
e128 all       12 89.3 82.3 80.0 77.1 82.0 90.3 64.0 80.1
e128 attention 64 89.9 82.8 80.7 77.9 83.4 91.9 67.6 81.7
e128 ffn       38 88.9 81.6 78.6 75.6 82.3 91.7 64.4 80.2
e128 none      89 89.9 82.8 80.3 77.3 83.2 91.5 67.9 81.6
"""
PAPER_T5 = """
mlm     54.9 52.4 53.3 88.6 81.5 78.1 75.3 81.5 89.9 61.7 79.0
mlm_nsp 54.5 90.5 52.0 88.4 81.5 77.2 74.6 81.6 91.1 62.3 79.2
mlm_sop 54.0 78.9 86.5 89.3 82.3 80.0 77.1 82.0 90.3 64.0 80.1
"""
T4_COLUMNS = ["params", "squad_v1_f1", "squad_v1_em", "squad_v2_f1", "squad_v2_em", "mnli", "sst2", "race", "avg"]
T5_COLUMNS = ["mlm", "nsp", "sop"] + T4_COLUMNS[1:]
TASKS = ["squad_v1", "squad_v2", "mnli", "sst2", "race", "pretrain"]

# Synthetic results: 8 Table 4 cells (MLM+SOP) and the two other Table 5 cells (E=128 all-shared, MLM / MLM+NSP).
CELLS = [{"model": "albert", "embedding": e, "sharing": s, "objective": "mlm_sop"}
         for e in ("e768", "e128") for s in ("all", "attention", "ffn", "none")]
CELLS += [{"model": "albert", "embedding": "e128", "sharing": "all", "objective": o} for o in ("mlm", "mlm_nsp")]
SEED_SHIFT = [0.0, 1.3, -0.4]


def base(cell: int, seed: int) -> float:
    return 40.0 + 2.5 * cell + SEED_SHIFT[seed] + (3.1 * seed if cell % 3 == 0 else 0.0)


def metrics(cell: int, task: str, seed: int) -> dict:
    x = base(cell, seed)
    return {"squad_v1": {"f1": x + 10, "exact_match": x + 2},
            "squad_v2": {"f1": x, "exact": x - 3, "best_f1": x + 1, "best_exact": x - 1},
            "mnli": {"accuracy": (x + 20) / 100}, "sst2": {"accuracy": (x + 35) / 100},
            "race": {"accuracy": (x + 5) / 100},
            "pretrain": {"mlm_acc": x / 200, "nsp_acc": (x + 30) / 200, "sop_acc": (x + 60) / 200}}[task]


def expected(cell: int, column: str, seed: int) -> float:
    """What a column should read for one seed, computed from the synthetic values directly."""
    x = base(cell, seed)
    return {"squad_v1_f1": x + 10, "squad_v1_em": x + 2, "squad_v2_f1": x + 1, "squad_v2_em": x - 1,
            "mnli": x + 20, "sst2": x + 35, "race": x + 5, "mlm": x / 2, "nsp": (x + 30) / 2, "sop": (x + 60) / 2}[column]


def make_records(seeds: int, scale: str = "smoke", source: str = "proxy", shift: float = 0.0) -> list[dict]:
    records = []
    for c, axes in enumerate(CELLS):
        cell_id = f"cell{c}"
        for task in TASKS:
            for seed in range(seeds):
                m = {k: v + shift for k, v in metrics(c, task, seed).items()}
                records.append({
                    "experiment": "albert", "scale": scale, "unit_id": f"{scale}/{source}/{cell_id}/{task}/{seed}",
                    "cell_id": cell_id, "axes": dict(axes), "task": task,
                    "task_source": "local" if task == "pretrain" else source, "seed": seed, "status": "ok",
                    "error": None, "metrics": m, "params": {"backbone_params": 1_000_000 * (c + 1) + 123},
                    "config": {"model": {"hidden_size": 64}}})
    return records


def cell_index(row: dict) -> int:
    return CELLS.index({k: row[k] for k in ("model", "embedding", "sharing", "objective")})


# ---- references ----------------------------------------------------------------------------------------------------

def test_paper_average_reproduces_the_published_avg():
    first = {"squad_v1_f1": 88.6, "squad_v1_em": 81.5, "squad_v2_f1": 79.2, "squad_v2_em": 76.6,
             "mnli": 82.0, "sst2": 90.6, "race": 63.3}
    assert round(paper_average(first), 1) == 79.8
    for table in load_experiment("albert"):
        for row in table.rows:
            assert abs(paper_average(row.values) - row.values["avg"]) <= 0.05 + 1e-9, row.label


def test_reference_files_hold_every_published_value():
    table4, table5 = load_experiment("albert")
    assert (table4.name, table5.name) == ("albert_table4", "albert_table5")
    assert table4.columns == T4_COLUMNS and table5.columns == T5_COLUMNS
    assert [r.label for r in table5.rows] == ["None", "NSP", "SOP"]
    assert table4.rows[0].label == "E=768 all-shared" and table4.rows[6].label == "E=128 shared-FFN"
    for table, text, key in ((table4, PAPER_T4, ("embedding", "sharing")), (table5, PAPER_T5, ("objective",))):
        lines = [line.split() for line in text.strip().splitlines()]
        assert len(table.rows) == len(lines)
        for row, fields in zip(table.rows, lines):
            assert tuple(row.axes[k] for k in key) == tuple(fields[: len(key)])
            assert [row.values[c] for c in table.columns] == [float(v) for v in fields[len(key):]]
        assert "Lan et al." in table.source and "1909.11942" in table.source


def test_a_transcription_error_names_the_file_and_row(tmp_path):
    good = (load_table("albert_table4").rows[0])
    text = ("title: t\nsource: s\ncolumns: [squad_v1_f1, squad_v1_em, squad_v2_f1, squad_v2_em, mnli, sst2, race, avg]\n"
            "rows:\n  - label: bad\n    axes: {sharing: all}\n    values: {"
            + ", ".join(f"{k}: {v}" for k, v in good.values.items() if k != "params").replace("79.8", "97.8") + "}\n")
    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"typo\.yaml: rows\[0\] \(bad\): avg 97.8"):
        load_table("typo", tmp_path)
    with pytest.raises(ValueError, match="known: typo"):
        load_experiment("nope", tmp_path)


# ---- aggregation ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seeds", [1, 3])
def test_rows_hold_median_mean_std_paper_and_delta(seeds):
    rows = table_rows("albert", make_records(seeds, source="local"))
    assert [r["section"] for r in rows] == ["albert_table4"] * 8 + ["albert_table5"] * 3
    paper = {(r["section"], r["row"]): r for r in rows}
    for row in rows:
        c = cell_index(row)
        columns = T4_COLUMNS if row["section"] == "albert_table4" else T5_COLUMNS
        medians = {}
        for column in columns:
            if column in ("params", "avg"):
                continue
            values = np.array([expected(c, column, s) for s in range(seeds)])
            medians[column] = float(np.median(values))
            assert row[column] == pytest.approx(medians[column]), (row["row"], column)
            assert row[column + "_mean"] == pytest.approx(values.mean())
            assert row[column + "_n"] == seeds and row[column + "_failed"] == 0
            if seeds > 1:
                assert row[column + "_std"] == pytest.approx(values.std(ddof=1))
            else:
                assert row[column + "_std"] is None
            assert row[column + "_delta"] == pytest.approx(medians[column] - row[column + "_paper"])
        ours_avg = np.mean([(medians["squad_v1_f1"] + medians["squad_v1_em"]) / 2,
                            (medians["squad_v2_f1"] + medians["squad_v2_em"]) / 2,
                            medians["mnli"], medians["sst2"], medians["race"]])
        assert row["avg"] == pytest.approx(ours_avg)
        assert row["avg_delta"] == pytest.approx(ours_avg - row["avg_paper"])
        if "params" in columns:
            assert row["params"] == pytest.approx((1_000_000 * (c + 1) + 123) / 1e6)
    assert paper[("albert_table4", "E=768 not-shared")]["race_paper"] == 68.2
    assert paper[("albert_table5", "NSP")]["nsp_paper"] == 90.5
    # Table 5's SOP row is Table 4's E=128 all-shared cell: the same records, the same numbers.
    sop, shared = paper[("albert_table5", "SOP")], paper[("albert_table4", "E=128 all-shared")]
    assert all(sop[k] == shared[k] for k in T4_COLUMNS[1:])


def test_kendall_tau_equals_scipy_on_the_same_vectors():
    rows = [r for r in table_rows("albert", make_records(3)) if r["section"] == "albert_table4"]
    ours = [r["avg"] for r in rows]
    paper = [float(line.split()[-1]) for line in PAPER_T4.strip().splitlines()]
    tau, p, n = rank_agreement(rows, "avg")
    assert n == 8 and (tau, p) == pytest.approx(tuple(kendalltau(ours, paper)))
    params_tau, _, _ = rank_agreement(rows, "params")
    assert params_tau == pytest.approx(kendalltau([r["params"] for r in rows], [31, 83, 57, 108, 12, 64, 38, 89])[0])
    assert rank_agreement(rows[:1], "avg") is None


def test_failed_and_missing_are_marked_never_zero(tmp_path):
    records = make_records(3, source="local")
    target = CELLS.index({"model": "albert", "embedding": "e768", "sharing": "ffn", "objective": "mlm_sop"})
    records = [r for r in records if not (r["cell_id"] == f"cell{target}" and r["task"] == "mnli")]  # never ran
    for r in records:
        if r["cell_id"] == f"cell{target}" and r["task"] == "race":
            r.update(status="failed", error="CUDA out of memory\nTraceback ...", metrics={})
        if r["cell_id"] == f"cell{target}" and r["task"] == "sst2" and r["seed"] == 2:
            r.update(status="failed", error="NaN loss", metrics={})
    rows = {r["row"]: r for r in table_rows("albert", records) if r["section"] == "albert_table4"}
    row = rows["E=768 shared-FFN"]
    assert (row["mnli"], row["race"], row["avg"]) == ("missing", "failed", "failed")
    assert row["race_failed"] == 3 and "CUDA out of memory" in row["race_error"]
    assert row["sst2_n"] == 2 and row["sst2_failed"] == 1
    assert row["sst2"] == pytest.approx(np.median([expected(target, "sst2", s) for s in (0, 1)]))

    md = render_tables("albert", records, tmp_path)["md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("| E=768 shared-FFN"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6] == "missing / 81.5"
    assert cells[8].startswith("failed [") and cells[8].endswith("/ 62.6")
    assert "n=2; 1 failed [" in cells[7] and cells[9] == "failed / 79.5"
    assert "E=768 shared-FFN, RACE: seed 0: CUDA out of memory; seed 1" in md and "NaN loss" in md
    assert "Traceback" not in md  # only the first line of an error


def test_a_retried_unit_counts_once_with_its_latest_record():
    records = make_records(1)
    retry = dict(records[0])
    records[0] = {**records[0], "status": "failed", "error": "preempted", "metrics": {}}
    rows = table_rows("albert", records + [retry])
    assert rows[0]["squad_v1_f1"] == pytest.approx(expected(0, "squad_v1_f1", 0)) and rows[0]["squad_v1_f1_n"] == 1


def test_a_unit_rerun_under_new_settings_supersedes_instead_of_adding_a_seed():
    """Same cell, task and seed under another fine-tuning budget (another unit id): the newer record replaces the
    older one; n stays the number of seeds."""
    records = make_records(2)
    rerun = [{**r, "unit_id": r["unit_id"] + "-new", "metrics": {k: v + 1 for k, v in r["metrics"].items()}}
             for r in records]
    row = table_rows("albert", records + rerun)[0]
    assert row["squad_v1_f1_n"] == 2
    assert row["squad_v1_f1"] == pytest.approx(np.median([expected(0, "squad_v1_f1", s) + 1 for s in (0, 1)]))


def test_proxy_and_real_tasks_never_mix(tmp_path):
    records = make_records(1, source="proxy") + make_records(1, source="local", shift=0.05)
    rows = table_rows("albert", records)
    assert [(r["tasks"], r["section"]) for r in rows[::11]] == [("real", "albert_table4"), ("proxy", "albert_table4")]
    real, proxy = rows[0], rows[11]
    assert real["mnli"] == pytest.approx(expected(0, "mnli", 0) + 5) and proxy["mnli"] == pytest.approx(
        expected(0, "mnli", 0))
    assert real["mnli_n"] == proxy["mnli_n"] == 1
    md = render_tables("albert", records, tmp_path)["md"].read_text()
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    assert len(titles) == 4
    assert [PROXY_NOTE in t for t in titles] == [False, False, True, True]
    assert all("smoke scale" in t and "E = H" in t for t in titles)
    assert "E=768 vs E=128 means E = H vs E = H/6 (H = 64)" in titles[0]


def test_proxy_cells_show_the_paper_as_a_reference_without_delta(tmp_path):
    """A WordNet stand-in is not SQuAD: on proxy tasks the paper's value is shown for reference, with no delta;
    real tasks and the pre-training columns keep `ours / paper (delta)`."""
    records = make_records(1, source="proxy") + make_records(1, source="local", shift=0.05)
    rows = table_rows("albert", records)
    real, proxy = rows[0], rows[11]
    assert proxy["tasks"] == "proxy" and proxy["squad_v1_f1_paper"] == 88.6
    assert proxy["squad_v1_f1_delta"] is None and proxy["avg_delta"] is None
    assert real["squad_v1_f1_delta"] == pytest.approx(real["squad_v1_f1"] - 88.6)
    sop_row = next(r for r in rows if r["tasks"] == "proxy" and r["row"] == "SOP")
    assert sop_row["sop_delta"] == pytest.approx(sop_row["sop"] - 86.5)  # pre-training accuracy: a real comparison

    md = render_tables("albert", records, tmp_path)["md"].read_text()
    lines = [x for x in md.splitlines() if x.startswith("| E=768 all-shared")]
    real_cells, proxy_cells = ([c.strip() for c in x.strip("|").split("|")] for x in lines)
    ours = expected(0, "squad_v1_f1", 0)
    assert proxy_cells[2] == f"{ours:.1f} (n=1) (paper 88.6)"
    assert real_cells[2] == f"{real['squad_v1_f1']:.1f} (n=1) / 88.6 ({real['squad_v1_f1'] - 88.6:+.1f})"
    assert "/" not in proxy_cells[-1] and proxy_cells[-1].endswith("(paper 79.8)")  # Avg
    # Params below the paper's scale: the paper's count is a reference (a smoke model is small by design)
    assert real_cells[1] == proxy_cells[1] == "1.0 (paper 31)" and real["params_delta"] is None
    paper_scale = table_rows("albert", make_records(1, scale="paper", source="local"))[0]
    assert paper_scale["params_delta"] == pytest.approx(paper_scale["params"] - 31)  # at its scale, compared
    assert md.count("Proxy tasks: a task or Avg cell reads") == 2  # the two proxy sections' legends


def test_paper_scale_titles_have_no_mapping_and_empty_results_show_missing(tmp_path):
    md = render_tables("albert", make_records(1, scale="paper", source="hub"), tmp_path)["md"].read_text()
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    assert titles == ["## ALBERT Table 4: cross-layer parameter sharing, paper scale",
                      "## ALBERT Table 5: sentence-level loss, paper scale"]
    empty = render_tables("albert", [], tmp_path / "empty")["md"].read_text()
    assert empty.count("missing / ") == 8 * 9 + 3 * 11 and "(no results yet)" in empty


def test_outputs_are_the_same_rows(tmp_path):
    records = make_records(3, source="local")
    paths = render_tables("albert", records, tmp_path)
    with open(paths["csv"]) as handle:
        saved = list(csv.DictReader(handle))
    rows = table_rows("albert", records)
    assert len(saved) == len(rows) == 11
    assert [s["row"] for s in saved] == [r["row"] for r in rows]
    assert float(saved[3]["mnli_delta"]) == pytest.approx(rows[3]["mnli_delta"])
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 10_000
    md = paths["md"].read_text()
    assert "Each cell: ours / paper (Δ = ours − paper)" in md and "Kendall τ" in md
    assert md.index("Table 4") < md.index("Table 5")


# ---- W&B summary and the command -----------------------------------------------------------------------------------

def test_wandb_offline_summary_has_one_row_per_cell(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    records = make_records(1)
    paths = render_tables("albert", records, tmp_path / "out")
    files = log_summary_run("albert", table_rows("albert", records), paths["png"], {"mode": "offline"})
    assert files is not None and files.is_dir() and str(tmp_path) in str(files)
    tables = list((files / "media" / "table").glob("*.table.json"))
    assert len(tables) == 1
    logged = json.loads(tables[0].read_text())
    assert len(logged["data"]) == 11
    assert {"embedding", "sharing", "objective", "mnli", "mnli_paper", "avg"} <= set(logged["columns"])
    assert list((files / "media" / "images").glob("table_png*.png"))
    with caplog.at_level(logging.WARNING):  # a W&B failure is a warning, never an exception
        assert log_summary_run("albert", [], paths["png"], {"mode": "not-a-mode"}) is None
    assert "W&B summary run for albert not logged" in caplog.text
    assert b"albert-results" not in next(files.parent.glob("*.wandb")).read_bytes()  # artifacts: opt-in


def test_log_results_puts_records_and_tables_in_one_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    records = make_records(1)
    paths = render_tables("albert", records, tmp_path / "out")
    store = tmp_path / "out" / "records.jsonl"
    store.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    files = log_summary_run("albert", table_rows("albert", records), paths["png"],
                            {"mode": "offline", "log_results": True}, results=[store, *paths.values()])
    log = next(files.parent.glob("*.wandb")).read_bytes()  # the offline run's record, synced later
    assert b"albert-results" in log and b"records.jsonl" in log and b"table.csv" in log


def test_command_renders_the_store_and_explains_a_missing_one(tmp_path, capsys):
    with pytest.raises(UserError, match=r"no results store at .*records\.jsonl.*make sweep EXPERIMENT=albert"):
        table_command.main(["experiment=albert", f"results_dir={tmp_path}"])
    store = ResultsStore.for_experiment("albert", tmp_path)
    for record in make_records(1):
        store.append(record)
    table_command.main(["experiment=albert", f"results_dir={tmp_path}", "wandb=false"])
    out = capsys.readouterr().out
    assert "| E=768 all-shared |" in out and (tmp_path / "albert" / "table.png").is_file()
    with pytest.raises(UserError, match="allowed: experiment="):
        table_command.main(["experiment=albert", "colour=blue"])
    with pytest.raises(UserError, match="wandb='maybe'"):
        table_command.main(["experiment=albert", "wandb=maybe"])


def test_table_says_where_fine_tuning_inputs_were_capped_at_the_pretraining_length():
    from plmbench.tables.render import length_note

    records = [{"status": "ok", "task": "squad_v1", "finetune": {"max_length": 64, "max_length_capped_from": 384}},
               {"status": "ok", "task": "sst2", "finetune": {"max_length": 64, "max_length_capped_from": None}}]
    note = length_note(records)
    assert "capped at the pre-training length" in note and "squad_v1 384 -> 64" in note and "sst2" not in note
    assert length_note(records[1:]) == ""


def test_section_title_names_the_scales_own_embedding_sizes():
    """The cpu scale maps E=128 to H/2, not H/6: the title says what the records trained."""
    from plmbench.tables.references import load_experiment
    from plmbench.tables.render import _embedding_sizes, section_title

    table = load_experiment("albert_table4")[0]
    records = [{"scale": "cpu", "config": {"scale": {"e768": 128, "e128": 64}, "model": {"hidden_size": 128}}}]
    title = section_title(table, "cpu", "proxy", {128}, _embedding_sizes(records, "cpu"))
    assert "E=768 means E = 128, E=128 means E = 64 (H = 128)" in title and "H/6" not in title
    assert "H/6" in section_title(table, "smoke", "proxy", {64}, {})


def knowledge_record(knowledge: str, task: str, seed: int, accuracy: float, reasoner: str | None = None) -> dict:
    axes = {"model": "bert", "knowledge": knowledge, **({"reasoner": reasoner} if reasoner else {})}
    return {"experiment": "knowledge", "scale": "cpu", "cell_id": f"cell-{knowledge}", "unit_id": f"{knowledge}-"
            f"{task}-{seed}-{reasoner}", "task": task, "task_source": "local", "seed": seed, "status": "ok",
            "axes": axes, "metrics": {"accuracy": accuracy}, **({"reasoner": reasoner} if reasoner else {}),
            "params": {"backbone_params": 1_000_000, "knowledge_params": 250_000 if knowledge != "none" else 0},
            "pretrain_costs": {"tokens_seen": 1000, "pretrain_flops": 2e15}}


def test_knowledge_tables_keep_reasoner_runs_apart_and_count_entity_layers():
    # The graph reasoner's CSQA units share the no-knowledge cell, task and seeds with its plain fine-tuning units.
    records = [knowledge_record("none", "csqa", s, 0.20 + 0.01 * s) for s in range(3)]
    records += [knowledge_record("none", "csqa", s, 0.30 + 0.01 * s, reasoner="rgcn") for s in range(3)]
    records += [knowledge_record(k, "supersense", s, {"none": 0.3, "ernie": 0.4}[k]) for k in ("none", "ernie")
                for s in range(3)]
    rows = {(r["section"], r["row"]): r for r in table_rows("knowledge", records)}
    fusion = {label: row for (section, label), row in rows.items() if section == "knowledge_fusion"}
    reasoning = {label: row for (section, label), row in rows.items() if section == "knowledge_reasoner"}
    assert fusion["No knowledge"]["csqa"] == pytest.approx(21.0) and fusion["No knowledge"]["csqa_n"] == 3
    assert reasoning["LM alone (task head)"]["csqa"] == pytest.approx(21.0)
    assert reasoning["LM + graph reasoner (R-GCN, KagNet/QA-GNN style)"]["csqa"] == pytest.approx(31.0)
    assert fusion["ERNIE-style (TransE)"]["supersense"] == pytest.approx(40.0)
    assert fusion["ERNIE-style (TransE)"]["params"] == pytest.approx(1.25)  # the entity layers count
    assert fusion["No knowledge"]["params"] == pytest.approx(1.0)
    assert fusion["No knowledge"]["pretrain_pflops"] == pytest.approx(2.0)
