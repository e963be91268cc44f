"""The experiments bert_vs_roberta, electra_vs_mlm, elmo_gpt_bert and gpt_shots: every cell composes and validates,
their budgets are equal where the experiment says so (tokens, FLOPs), their published rows match their grid, and
the k-shot runner path runs a micro sweep end to end."""

import pytest

from plmbench.commands import sweep
from plmbench.configuration import compose
from plmbench.grid import grid_axes, grid_cells
from plmbench.models.config import ModelConfig
from plmbench.models.elmo import bilm_counts
from plmbench.objectives.counting import describe_config
from plmbench.sweep.runner import units_per_cell
from plmbench.sweep.store import ResultsStore
from plmbench.tables.references import load_experiment

# experiment -> (pre-training cells, units per cell at smoke: intrinsic + tasks x seeds [+ tasks x ks x seeds])
NEW = {"bert_vs_roberta": (2, 4), "electra_vs_mlm": (3, 4), "elmo_gpt_bert": (3, 4), "gpt_shots": (1, 1 + 5 + 15),
       "transfer_glue": (2, 1 + 5 * 3)}
SCALES = ("smoke", "cpu", "mini", "paper")


def cells(experiment: str, scale: str) -> list:
    base = [f"experiment={experiment}", f"scale={scale}"]
    axes = grid_axes(compose("pretrain", base, return_hydra=True).hydra)
    return [(cell, compose("pretrain", base + cell)) for cell in grid_cells(axes) or [[]]]


def tokens(cfg) -> int:
    t = cfg.trainer
    return int(t.max_steps) * int(t.batch_size) * int(t.accumulate_grad_batches) * int(cfg.data.max_seq_len)


@pytest.mark.parametrize("experiment", sorted(NEW))
def test_every_cell_composes_and_validates(experiment):
    _, _, cell_ids, cfg = sweep.plan([f"experiment={experiment}", "scale=smoke"])
    assert (len(cell_ids), units_per_cell(cfg)) == NEW[experiment]


@pytest.mark.parametrize("experiment", sorted(NEW))
def test_published_rows_are_cells_of_the_grid(experiment):
    """Each row's axes name a value the grid sweeps (or `shots`, which the runner adds), so no row stays empty."""
    axes = grid_axes(compose("pretrain", [f"experiment={experiment}"], return_hydra=True).hydra)
    swept = {name.lstrip("+"): values for name, values in axes.items()}
    swept["shots"] = [str(k) for k in compose("pretrain", ["experiment=gpt_shots"]).sweep.shots.ks] + ["finetuned"]
    for table in load_experiment(experiment):
        for row in table.rows:
            assert all(value in swept[axis] for axis, value in row.axes.items()), (table.name, row)


@pytest.mark.parametrize("scale", SCALES)
def test_bert_and_roberta_recipes_see_equal_tokens(scale):
    by_recipe = {cell[0]: cfg for cell, cfg in cells("bert_vs_roberta", scale)}
    bert, roberta = by_recipe["+recipe=bert"], by_recipe["+recipe=roberta"]
    assert tokens(bert) == tokens(roberta)
    assert int(roberta.trainer.accumulate_grad_batches) >= 4 * int(bert.trainer.accumulate_grad_batches)  # paper: 32x
    assert (bert.objective.sentence_task, bert.data.masking.static, bert.model.tokenizer) == ("nsp", True, "wordpiece")
    assert (roberta.objective.sentence_task, roberta.objective.packing, roberta.data.masking.static,
            roberta.model.tokenizer) == ("none", "full_sentences", False, "bytebpe")


def test_electra_rows_are_the_papers_small_models_not_small_plus_plus():
    """The ELECTRA README's dev figures describe the released ELECTRA-Small++ (generator as wide as the
    discriminator, length 512), not the paper's ELECTRA-Small of our generator-1/4 row (REFERENCE.md)."""
    small_plus_plus = {"mnli": 81.3, "sst2": 91.2, "squad_v1_em": 75.8}
    (table,) = load_experiment("electra_vs_mlm")
    rows = {row.axes["recipe"]: row for row in table.rows}
    assert all(row.values[key] != value for row in rows.values() for key, value in small_plus_plus.items())
    assert "ELECTRA-Small" in rows["electra_g25"].label and "++" not in rows["electra_g25"].label
    assert rows["electra_g25"].values["params"] == rows["bert_mlm"].values["params"] == 14  # Table 1: same size


@pytest.mark.parametrize("scale", SCALES)
def test_electra_and_mlm_cells_spend_equal_pretraining_flops(scale):
    budgets = {cell[0]: describe_config(cfg)["train_flops_per_token"] * tokens(cfg) for cell, cfg in
               cells("electra_vs_mlm", scale)}
    mlm = budgets.pop("+recipe=bert_mlm")
    assert len(budgets) == 2 and all(abs(b / mlm - 1) < 0.005 for b in budgets.values()), budgets
    # and the generator really costs something: the ELECTRA cells take fewer steps than the MLM one
    steps = {cell[0]: int(cfg.trainer.max_steps) for cell, cfg in cells("electra_vs_mlm", scale)}
    assert steps["+recipe=electra_g50"] < steps["+recipe=electra_g25"] < steps["+recipe=bert_mlm"]


def test_electra_flops_count_the_generator_encoder():
    """A wider generator costs at least its wider encoder's FLOPs (6 x matmul weights + attention) more per token."""
    from plmbench.models.counting import count_backbone, flops_per_token
    from plmbench.objectives.rtd import generator_config

    def generator_encoder(size: float, cfg) -> float:
        generator = generator_config(ModelConfig.from_mapping(cfg.model), size)
        return flops_per_token(generator, int(cfg.data.max_seq_len),
                               count_backbone(generator)["executed_matmul_weights"])["train_flops_per_token_backbone"]

    small_cfg, wide_cfg = (compose("pretrain", ["model=electra", "size=tiny", f"objective.generator_size={g}"])
                           for g in (0.25, 0.5))
    small, wide = describe_config(small_cfg), describe_config(wide_cfg)
    assert small["train_flops_per_token_backbone"] == wide["train_flops_per_token_backbone"]
    encoder_gap = generator_encoder(0.5, wide_cfg) - generator_encoder(0.25, small_cfg)
    assert encoder_gap > 0 and wide["train_flops_per_token"] - small["train_flops_per_token"] >= encoder_gap


def test_describe_counts_an_elmo_cell_with_the_bilm_rule():
    cfg = compose("pretrain", ["model=elmo", "size=tiny"])
    out = describe_config(cfg)
    assert out["objective"] == "bilm" and out["model"] == "elmo"
    assert out["train_flops_per_token"] == bilm_counts(ModelConfig.from_mapping(cfg.model),
                                                       int(cfg.data.max_seq_len))["train_flops_per_token"]


@pytest.fixture
def micro_gpt(tmp_path, monkeypatch, shared_data):
    text = (shared_data / "corpus/wikitext-2/raw/valid.txt").read_text(encoding="utf-8")[:200_000]
    (tmp_path / "wiki.txt").write_text(text, encoding="utf-8")
    for name in ("RUNS", "RESULTS"):
        monkeypatch.setenv(f"PLMBENCH_{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path.parent / "experiments-cache"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return ["experiment=gpt_shots", "size=tiny", "model.vocab_size=500", "model.max_positions=64",
            "data.max_seq_len=64", "corpus=files", f"corpus.paths={tmp_path / 'wiki.txt'}", "data.val_fraction=0.25",
            "trainer.max_steps=4", "trainer.batch_size=8", "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1", "trainer.checkpoint_every_n_steps=2", "trainer.progress_bar=none",
            "sweep.tasks=[glue/sst2]", "sweep.shots.ks=[0,1]", "sweep.task_source=proxy", "logger=none",
            "sweep.finetune_overrides=['epochs=1','max_train_examples=16','max_eval_examples=16','task.max_length=64']",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def test_gpt_shots_micro_sweep_records_every_k_and_the_fine_tuned_run(micro_gpt, tmp_path, monkeypatch):
    sweep.main(micro_gpt)
    records = ResultsStore(tmp_path / "results" / "gpt_shots" / "records.jsonl").records()
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    units = {(r["task"], r.get("shots")) for r in records}
    assert units == {("pretrain", None), ("sst2", "finetuned"), ("sst2", 0), ("sst2", 1)}
    assert len({r["unit_id"] for r in records}) == 4 and len({r["cell_id"] for r in records}) == 1
    assert all(0.0 <= r["metrics"]["accuracy"] <= 1.0 for r in records if r["task"] == "sst2")
    table = (tmp_path / "results" / "gpt_shots" / "table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "missing" not in rows["zero-shot (k=0)"].split("|")[3]  # the SST-2 cell holds our number
    assert "missing" in rows["few-shot (k=8)"]  # k=8 was not run here: shown as missing, never blank

    import plmbench.fewshot.units as units_module
    from plmbench.lit import pretraining

    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was run again")

    monkeypatch.setattr(pretraining, "run_pretraining", refuse)
    monkeypatch.setattr(units_module, "run_shots_unit", refuse)
    sweep.main(micro_gpt)
    assert len(ResultsStore(tmp_path / "results" / "gpt_shots" / "records.jsonl").records()) == 4


def test_transfer_glue_fine_tunes_table4s_cell_at_cpu_scale():
    """The pre-trained row is Table 4's E = H not-shared cell (one lineage: trained once); the control has 0 steps."""
    from plmbench.lineage import cell_id

    table4 = {tuple(cell): cfg for cell, cfg in cells("albert_table4", "cpu")}
    transfer = {cell[0]: cfg for cell, cfg in cells("transfer_glue", "cpu")}
    shared = table4[("embedding=e768", "sharing=none")]
    assert cell_id(transfer["+recipe=pretrained"]) == cell_id(shared)
    assert int(transfer["+recipe=untrained"].trainer.max_steps) == 0
    assert transfer["+recipe=pretrained"].sweep.task_source == "local"
