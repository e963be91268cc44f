"""The pictures beside a table: pre-training learning curves (curves.png) and score against compute (compute.png)."""

import pytest

from plmbench.commands import table as table_command
from plmbench.sweep.store import ResultsStore
from plmbench.tables.plots import cell_labels, compute_figure, curves_figure, render_plots
from plmbench.tables.wandb_table import table_rows

# ALBERT's grid (Tables 4 and 5): 8 sharing x embedding cells with MLM+SOP, then MLM and MLM+NSP at E=128 all-shared.
CELLS = [{"model": "albert", "embedding": e, "sharing": s, "objective": "mlm_sop"}
         for e in ("e768", "e128") for s in ("all", "attention", "ffn", "none")]
CELLS += [{"model": "albert", "embedding": "e128", "sharing": "all", "objective": o} for o in ("mlm", "mlm_nsp")]
E = {"e768": 64, "e128": 10}
TASKS = {"squad_v1": lambda x: {"f1": x + 10, "exact_match": x + 2},
         "squad_v2": lambda x: {"best_f1": x + 1, "best_exact": x - 1},
         "mnli": lambda x: {"accuracy": (x + 20) / 100}, "sst2": lambda x: {"accuracy": (x + 35) / 100},
         "race": lambda x: {"accuracy": (x + 5) / 100}}


def flops_per_token(c: int) -> float:
    return 1e6 * (c + 1)


def tokens(c: int) -> int:
    return 1000 * (10 - c)


def curve(c: int, objective: str) -> list[dict]:
    """Four validations; the MLM+NSP cell's NSP accuracy sits at chance (what the plot is for)."""
    points = []
    for i in range(1, 5):
        point = {"step": 10 * i, "tokens_seen": tokens(c) * i // 4, "loss": 9.0 - i, "mlm_acc": 0.05 * i + 0.01 * c}
        if objective == "mlm_sop":
            point["sop_acc"] = 0.5 + 0.05 * i
        if objective == "mlm_nsp":
            point["nsp_acc"] = 0.5
        points.append(point)
    return points


def make_records() -> list[dict]:
    """Records as the sweep's runner writes them: a pre-training record per cell, a fine-tuning record per task.
    (Through the store, `flops` loses its keys: they name a token, which its secrets filter drops.)"""
    records = []
    for c, axes in enumerate(CELLS):
        common = {"experiment": "albert", "scale": "smoke", "cell_id": f"cell{c}",
                  "axes": {**axes, "embedding_size": E[axes["embedding"]]}, "seed": 0, "status": "ok", "error": None,
                  "params": {"backbone_params": 10_000 * (c + 1)},
                  "flops": {"train_flops_per_token": flops_per_token(c), "train_flops_per_token_backbone": 1.0}}
        last = curve(c, axes["objective"])[-1]
        records.append({**common, "unit_id": f"cell{c}/pretrain", "task": "pretrain", "task_source": "corpus",
                        "metrics": {k: v for k, v in last.items() if k.endswith("acc") or k == "loss"},
                        "tokens_seen": tokens(c), "pretrain_flops": flops_per_token(c) * tokens(c), "wall_seconds": 1.0,
                        "curve": curve(c, axes["objective"])})
        for task, values in TASKS.items():
            records.append({**common, "unit_id": f"cell{c}/{task}", "task": task, "task_source": "local",
                            "metrics": values(40.0 + 2 * c), "wall_seconds": 1.0,
                            "pretrain_costs": {"tokens_seen": tokens(c), "wall_seconds": 1.0,
                                               "pretrain_flops": flops_per_token(c) * tokens(c)}})
    return records


def cell_lines(ax) -> dict:
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid() != "chance"}


def test_curves_have_one_line_per_cell_per_metric_and_chance_on_sentence_tasks():
    records = make_records()
    records.append({**records[0], "unit_id": "cell99/pretrain", "cell_id": "cell99", "status": "failed", "curve": []})
    fig = curves_figure("albert", records)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["MLM accuracy", "NSP accuracy", "SOP accuracy"]
    assert set(cell_lines(panels["MLM accuracy"])) == {f"cell{c}" for c in range(10)}  # the failed cell: no line
    assert set(cell_lines(panels["SOP accuracy"])) == {f"cell{c}" for c in range(8)}
    assert set(cell_lines(panels["NSP accuracy"])) == {"cell9"}
    line = cell_lines(panels["MLM accuracy"])["cell3"]
    assert list(line.get_xdata()) == [p["tokens_seen"] for p in curve(3, "mlm_sop")]
    assert list(line.get_ydata()) == pytest.approx([p["mlm_acc"] for p in curve(3, "mlm_sop")])
    assert line.get_label() == "E=64 none mlm_sop"  # the axes that vary; model=albert goes in the title
    for title, has_chance in (("MLM accuracy", False), ("NSP accuracy", True), ("SOP accuracy", True)):
        chance = [line for line in panels[title].get_lines() if line.get_gid() == "chance"]
        assert len(chance) == has_chance
        if chance:
            assert set(chance[0].get_ydata()) == {0.5} and chance[0].get_linestyle() == "--"
    assert len(fig.legends[0].get_texts()) == 10 + 1  # every cell once, and the chance line
    assert "model=albert" in fig.get_suptitle()


def test_cell_labels_name_the_axes_that_differ_and_tell_identical_ones_apart():
    records = [{"cell_id": "aaaaaaaaaaaa", "scale": "smoke", "axes": {"model": "bert", "objective": "mlm"}},
               {"cell_id": "bbbbbbbbbbbb", "scale": "smoke", "axes": {"model": "roberta", "objective": "mlm"}},
               {"cell_id": "cccccccccccc", "scale": "smoke", "axes": {"model": "roberta", "objective": "mlm"}}]
    labels, shared = cell_labels(records)
    assert labels == ["bert", "roberta [bbbbbbbb]", "roberta [cccccccc]"]
    assert shared == "scale=smoke, objective=mlm"


def placed(ax) -> dict:
    """{label: (x, y)} of a compute panel's labelled points."""
    return {text.get_text(): text.xy for text in ax.texts}


def test_compute_plot_places_each_row_at_flops_times_tokens_and_its_average():
    records = make_records()
    fig = compute_figure("albert", records)
    assert len(fig.axes) == 2
    assert "Table 4" in fig.axes[0].get_title("left") and "Table 5" in fig.axes[1].get_title("left")
    rows = {(r["section"], r["row"]): r for r in table_rows("albert", records)}
    labels = {"albert_table4": ["E=768 all-shared", "E=768 shared-attention", "E=768 shared-FFN", "E=768 not-shared",
                                "E=128 all-shared", "E=128 shared-attention", "E=128 shared-FFN", "E=128 not-shared"],
              "albert_table5": {"None": 8, "NSP": 9, "SOP": 4}}
    labels["albert_table4"] = {label: c for c, label in enumerate(labels["albert_table4"])}
    for ax, section in ((fig.axes[0], "albert_table4"), (fig.axes[1], "albert_table5")):
        assert ax.get_xscale() == "log" and len(ax.collections[0].get_offsets()) == len(labels[section])
        points = placed(ax)
        assert set(points) == set(labels[section])
        for label, (x, y) in points.items():
            c = labels[section][label]
            assert x == pytest.approx(flops_per_token(c) * tokens(c))  # cell c: computed here, not by the code
            assert y == pytest.approx(rows[(section, label)]["avg"])
    assert "Avg" in fig.axes[0].get_ylabel()


def test_compute_plot_leaves_out_rows_without_a_score_or_compute_and_merges_coincident_ones():
    records = make_records()
    for record in records:
        if record["cell_id"] in ("cell1", "cell3"):  # written before pretrain_flops
            record.pop("pretrain_flops", None)
            record.get("pretrain_costs", {}).pop("pretrain_flops", None)
        if record["cell_id"] == "cell1":
            record["flops"] = {}  # and stored without its counts: no compute, not placed
        if record["cell_id"] == "cell2" and record["task"] == "race":
            record["status"], record["metrics"], record["error"] = "failed", {}, "boom"  # Avg failed: not placed
    twin = {(r["task"]): r for r in records if r["cell_id"] == "cell6"}
    for record in records:
        if record["cell_id"] == "cell7":  # the same compute and scores as cell 6: one point, one shared label
            record.update({k: twin[record["task"]][k] for k in ("metrics", "pretrain_flops", "pretrain_costs")
                           if k in record})
    fig = compute_figure("albert", records)
    points = placed(fig.axes[0])
    assert set(points) == {"E=768 all-shared", "E=768 not-shared", "E=128 all-shared", "E=128 shared-attention",
                           "E=128 shared-FFN / E=128 not-shared"}  # cells 0, 3-7
    assert len(fig.axes[0].collections[0].get_offsets()) == 6
    assert points["E=768 not-shared"][0] == pytest.approx(flops_per_token(3) * tokens(3))  # cell 3: its counts
    assert compute_figure("albert", [r for r in records if r["task"] == "pretrain"]) is None  # no task scores yet


def test_render_plots_writes_pngs_and_removes_stale_ones(tmp_path):
    paths = render_plots("albert", make_records(), tmp_path)
    assert set(paths) == {"curves", "compute"}
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    without_curves = [{**r, "curve": []} if r["task"] == "pretrain" else r for r in make_records()]
    assert set(render_plots("albert", without_curves, tmp_path)) == {"compute"}
    assert not (tmp_path / "curves.png").exists()


def test_command_logs_the_pictures_to_the_wandb_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    store = ResultsStore.for_experiment("albert", tmp_path / "results")
    for record in make_records():
        store.append(record)
    table_command.main(["experiment=albert", f"results_dir={tmp_path / 'results'}", "wandb=true",
                        f"logger.dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "curves.png" in out and "compute.png" in out
    assert (tmp_path / "results" / "albert" / "curves.png").is_file()
    images = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/*.png"))
    assert {p.name.split("_png")[0] for p in images} == {"table", "curves", "compute"}



def test_compute_plot_draws_an_untrained_control_as_a_line_not_a_point():
    """A control cell (trainer.max_steps=0) saw no tokens: it has no place on a log axis, so it is a labelled line."""
    records = make_records()
    for record in records:
        if record["cell_id"] == "cell8":  # Table 5's None row: make it an untrained control
            costs = record.get("pretrain_costs", record)
            costs.update(tokens_seen=0, pretrain_flops=None)
    fig = compute_figure("albert", records)
    table5 = fig.axes[1]
    assert set(placed(table5)) == {"NSP", "SOP", "None (no pre-training): 69.2"}
    assert len(table5.collections[0].get_offsets()) == 2  # the scatter holds the pre-trained rows only
    rows = {(r["section"], r["row"]): r for r in table_rows("albert", records)}
    (line,) = [ln for ln in table5.get_lines() if ln.get_linestyle() == "--"]
    assert line.get_ydata()[0] == pytest.approx(rows[("albert_table5", "None")]["avg"])
    assert any("None (no pre-training)" in t.get_text() for t in table5.texts)
