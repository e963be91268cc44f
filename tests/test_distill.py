"""Distillation: students built from teachers, the traced forward that exposes attention scores, every loss term,
a frozen teacher, a real general distillation run on a tiny pre-trained teacher, and the sweep's plan and table."""

import copy

import pytest
import torch
import torch.nn.functional as F

from plmbench.configuration import compose
from plmbench.data.masking import IGNORE_INDEX
from plmbench.distill import DistillError
from plmbench.distill.attention_scores import last_hidden_only, trace_backbone
from plmbench.distill.lit import GeneralDistillation, TaskDistillation
from plmbench.distill.losses import (
    DistilBertLoss,
    TinyBertLoss,
    attention_mse,
    cosine_loss,
    hidden_mse,
    soft_target_loss,
)
from plmbench.distill.students import (
    StudentMLM,
    build_student,
    distilbert_layer_map,
    tinybert_config,
    uniform_layer_map,
)
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.task_heads import TaskModel
from plmbench.objectives.mlm import MaskedLM

TINY = {"vocab_size": 97, "max_positions": 32, "hidden_size": 16, "num_layers": 4, "num_heads": 2, "ffn_size": 32,
        "embedding_size": 16, "dropout": 0.1, "attention_dropout": 0.1}


def tiny(**changes) -> ModelConfig:
    return ModelConfig(**{**TINY, **changes})


def batch(config: ModelConfig, size: int = 3, length: int = 9, seed: int = 0) -> dict:
    """Right-padded inputs with a few masked positions, as the pre-training collator makes them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (size, length), generator=g)
    lengths = torch.tensor([length, length - 3, 4][:size])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 1:3] = ids[:, 1:3]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels}


# ------------------------------------------------------------------------------------------ traced forward


@pytest.mark.parametrize("changes", [
    {},  # BERT: post-LN
    {"norm": "pre", "causal": True, "embedding_norm": False, "type_vocab_size": 0},  # GPT-2: pre-LN, causal
    {"embedding_size": 6, "sharing": "all"},  # ALBERT: factorised embeddings, one shared layer
])
def test_trace_equals_backbone_forward(changes):
    torch.manual_seed(0)
    backbone = Backbone(tiny(**changes)).eval()
    inputs = batch(backbone.config)
    with torch.no_grad():
        expected = backbone(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        trace = trace_backbone(backbone, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    assert torch.allclose(trace.last_hidden, expected, atol=1e-6, rtol=0)
    assert len(trace.hidden_states) == 5 and len(trace.scores) == 4
    assert trace.scores[0].shape == (3, 2, 9, 9)
    padded_key = trace.scores[0][2, :, :, 5]  # the third row has 4 real tokens
    assert bool((padded_key == torch.finfo(padded_key.dtype).min).all())


# ------------------------------------------------------------------------------------------ students


@pytest.mark.parametrize("teacher_layers, expected", [
    (12, [0, 2, 4, 7, 9, 11]),  # extract_distilbert.py's choice for BERT-base
    (24, [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]),
    (8, [0, 2, 5, 7]), (6, [0, 2, 5]), (4, [0, 3]), (2, [0]),  # the same rule at smoke depths
])
def test_distilbert_layer_map_follows_the_extraction_script(teacher_layers, expected):
    assert distilbert_layer_map(teacher_layers) == expected


def test_distilbert_student_starts_from_the_extraction_scripts_teacher_layers():
    torch.manual_seed(0)
    teacher = MaskedLM(tiny(num_layers=12))
    student, info = build_student("distilbert", teacher)
    assert info["init_layers"] == [0, 2, 4, 7, 9, 11]
    assert student.config.num_layers == 6 and student.config.hidden_size == 16
    assert student.config.type_vocab_size == 0 and student.backbone.embeddings.segment is None
    assert not hasattr(student, "sentence_head")  # no pooler
    for student_layer, teacher_index in zip(student.backbone.layers, [0, 2, 4, 7, 9, 11], strict=True):
        theirs = teacher.backbone.layers[teacher_index].state_dict()
        for name, tensor in student_layer.state_dict().items():
            assert torch.equal(tensor, theirs[name]), name
    for name, tensor in student.mlm_head.state_dict().items():
        assert torch.equal(tensor, teacher.mlm_head.state_dict()[name]), name
    ids = batch(teacher.config)["input_ids"]
    teacher.eval(), student.eval()
    assert torch.allclose(student.backbone.embeddings(ids), teacher.backbone.embeddings(ids, torch.zeros_like(ids)),
                          atol=1e-6)  # segment A folded into the positions


def test_distilbert_student_of_a_shared_teacher_gets_unshared_copies():
    teacher = MaskedLM(tiny(sharing="all", embedding_size=8))
    student, _ = build_student("distilbert", teacher)
    first, second = student.backbone.layers
    assert student.config.sharing == "none" and first.attention is not second.attention
    shared = teacher.backbone.layers[0].state_dict()
    for layer in (first, second):
        assert all(torch.equal(t, shared[n]) for n, t in layer.state_dict().items())
    with torch.no_grad():
        first.attention.inner.qkv.weight.add_(1.0)
    assert not torch.equal(first.attention.inner.qkv.weight, second.attention.inner.qkv.weight)
    assert torch.equal(student.backbone.projection.weight, teacher.backbone.projection.weight)


def test_tinybert_shape_and_layer_map():
    bert_base = ModelConfig()
    config = tinybert_config(bert_base)
    assert (config.num_layers, config.hidden_size, config.ffn_size, config.num_heads) == (4, 312, 1200, 12)
    assert uniform_layer_map(4, 12) == [3, 6, 9, 12]
    assert tinybert_config(bert_base, {"num_layers": 6, "hidden_size": 768}).ffn_size == 2954
    with pytest.raises(DistillError, match="distill.student.num_heads=4"):
        tinybert_config(bert_base, {"num_heads": 4})
    with pytest.raises(DistillError, match="distill.student.num_layers=13"):
        tinybert_config(bert_base, {"num_layers": 13})
    with pytest.raises(DistillError, match="distill.student: unknown key"):
        tinybert_config(bert_base, {"layers": 4})


# ------------------------------------------------------------------------------------------ losses


def test_each_loss_function_is_zero_for_equal_inputs_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    scores_a, scores_b = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    for loss, x, y in [(lambda s, t: soft_target_loss(s, t, 2.0), a, b), (lambda s, t: cosine_loss(s, t, mask), a, b),
                       (lambda s, t: hidden_mse(s, t, mask), a, b),
                       (lambda s, t: attention_mse(s, t, mask), scores_a, scores_b)]:
        assert abs(float(loss(x, x.clone()))) < 1e-6
        assert float(loss(x, y)) > 1e-3


def _student_copy(teacher: MaskedLM) -> StudentMLM:
    """A student with the teacher's shape and weights (no sentence head)."""
    student = StudentMLM(teacher.config)
    student.load_state_dict({k: v for k, v in teacher.state_dict().items() if not k.startswith("sentence_head.")})
    return student


def _identity_projections(loss: TinyBertLoss) -> TinyBertLoss:
    with torch.no_grad():
        for linear in (loss.embedding_projection, loss.hidden_projection):
            linear.weight.copy_(torch.eye(linear.weight.shape[0])), linear.bias.zero_()
    return loss


def _terms(loss, student, teacher, inputs) -> dict:
    selected = inputs["labels"] != IGNORE_INDEX
    forward = trace_backbone if loss.needs_layers else last_hidden_only
    args = (inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    s, t = forward(student.backbone, *args), forward(teacher.backbone, *args)
    out = loss(s, t, inputs["attention_mask"], student.mlm_head(s.last_hidden[selected]),
               teacher.mlm_head(t.last_hidden[selected]), inputs["labels"][selected])
    return {k: float(v) for k, v in out.items() if k.endswith("_loss") and k != "mlm_loss"}


def test_every_distillation_term_is_zero_for_a_student_equal_to_its_teacher():
    torch.manual_seed(0)
    teacher = MaskedLM(tiny()).eval()
    inputs = batch(teacher.config)
    tinybert = _identity_projections(TinyBertLoss(16, 16, uniform_layer_map(4, 4), {"prediction": 1.0}))
    with torch.no_grad():
        student = _student_copy(teacher).eval()
        equal = {**_terms(DistilBertLoss(), student, teacher, inputs), **_terms(tinybert, student, teacher, inputs)}
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
        different = {**_terms(DistilBertLoss(), student, teacher, inputs), **_terms(tinybert, student, teacher, inputs)}
    assert set(equal) == {"ce_loss", "cos_loss", "embedding_loss", "hidden_loss", "attention_loss", "prediction_loss"}
    assert all(abs(v) < 1e-6 for v in equal.values()), equal
    assert all(v > 1e-6 for v in different.values()), different


def test_attention_loss_compares_unnormalised_scores_not_probabilities():
    """Shifting every key by one vector adds q.c to all of a query's scores: the softmax (hence every hidden state)
    is unchanged, the scores are not. A loss on probabilities would see no difference."""
    torch.manual_seed(0)
    teacher = MaskedLM(tiny()).eval()
    student = _student_copy(teacher).eval()
    with torch.no_grad():
        for layer in student.backbone.layers:
            layer.attention.inner.qkv.bias[16:32].add_(3.0)  # the key part of the fused projection
    loss = _identity_projections(TinyBertLoss(16, 16, uniform_layer_map(4, 4)))
    with torch.no_grad():
        terms = _terms(loss, student, teacher, batch(teacher.config))
    assert terms["hidden_loss"] < 1e-8 and terms["embedding_loss"] < 1e-8
    assert terms["attention_loss"] > 1e-2


def _distilbert_module(teacher: MaskedLM) -> GeneralDistillation:
    student, _ = build_student("distilbert", teacher)
    module = GeneralDistillation(teacher, student, DistilBertLoss(), {"name": "adamw", "lr": 1e-3}, {}, total_steps=1)
    return module.eval()


def test_distilbert_soft_targets_count_every_real_token_and_the_mlm_loss_the_masked_ones():
    """distiller.py's default (restrict_ce_to_mask=False): T^2 * KL averaged over every non-padding position."""
    torch.manual_seed(0)
    teacher = MaskedLM(tiny())
    module = _distilbert_module(teacher)
    inputs = batch(teacher.config)
    with torch.no_grad():
        for p in module.model.parameters():  # a student that no longer predicts what its teacher does
            p.add_(0.1 * torch.randn_like(p))
        out = module.distill_step(inputs)
        ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        real = mask.bool()
        t = 2.0
        student_logits = module.model.mlm_head(module.model.backbone(ids, mask))[real].double()
        teacher_logits = teacher.mlm_head(teacher.backbone(ids, mask))[real].double()
        p_teacher = F.softmax(teacher_logits / t, -1)
        kl = (p_teacher * (p_teacher.log() - F.log_softmax(student_logits / t, -1))).sum(-1)
        masked = labels[real] != IGNORE_INDEX
        mlm = F.cross_entropy(student_logits[masked], labels[real][masked])
    assert int(real.sum()) == 19 and int(masked.sum()) == 6  # soft targets cover 13 more positions than the MLM
    assert float(out["ce_loss"]) == pytest.approx(float(kl.mean() * t * t), rel=1e-5)
    assert float(out["mlm_loss"]) == pytest.approx(float(mlm), rel=1e-5)
    assert int(out["mlm_count"]) == 6


def test_distilbert_teacher_sees_the_students_input_without_segment_ids():
    """The student has no segment table, so segment ids in the batch must change nothing, the teacher included."""
    torch.manual_seed(0)
    teacher = MaskedLM(tiny())
    with torch.no_grad():
        teacher.backbone.embeddings.segment.weight[1].add_(3.0)  # segment B: far from segment A
    module = _distilbert_module(teacher)
    plain = batch(teacher.config)
    pairs = {**plain, "token_type_ids": (torch.arange(9) >= 4).long().expand(3, 9).clone()}  # A then B
    with torch.no_grad():
        expected, got = module.distill_step(plain), module.distill_step(pairs)
    for key in ("loss", "ce_loss", "cos_loss", "mlm_loss", "teacher_mlm_correct"):
        assert torch.equal(got[key], expected[key]), key


# ------------------------------------------------------------------------------------------ frozen teacher


def _one_step(module, inputs) -> None:
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    module.training_step(inputs, 0).backward()
    optimizer.step()


def test_teacher_gets_no_gradients_and_stays_in_eval_mode():
    torch.manual_seed(0)
    teacher = MaskedLM(tiny())
    before = copy.deepcopy(teacher.state_dict())
    student, _ = build_student("tinybert", teacher, {"num_layers": 2, "hidden_size": 8})
    loss = TinyBertLoss(8, 16, uniform_layer_map(2, 4), {"prediction": 1.0})
    module = GeneralDistillation(teacher, student, loss, {"name": "adamw", "lr": 1e-2, "eps": 1e-6,
                                                         "weight_decay": 0.01}, {}, total_steps=10)
    _one_step(module, batch(teacher.config))
    assert not module.teacher.training and module.model.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert student.backbone.layers[0].attention.inner.qkv.weight.grad is not None
    assert loss.hidden_projection.weight.grad is not None  # W_h learns with the student
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict: the teacher's weights were put back


def test_task_distillation_trains_the_student_only():
    torch.manual_seed(0)
    teacher = TaskModel(tiny(), "classification", 3)
    student_config = tinybert_config(teacher.config, {"num_layers": 2, "hidden_size": 8})
    loss = TinyBertLoss(8, 16, uniform_layer_map(2, 4), {"prediction": 1.0}, prediction="classification")
    task = {"kind": "classification", "num_labels": 3, "weight_decay": 0.01, "warmup_ratio": 0.0}
    module = TaskDistillation(teacher, student_config, task, 1e-2, 10, [], None, "accuracy", loss,
                              intermediate_epochs=1)
    inputs = {**batch(teacher.config), "labels": torch.tensor([0, 2, 1])}
    _one_step(module, inputs)
    assert module.stage() == "intermediate" and not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert module.model.backbone.embeddings.word.weight.grad is not None


# ------------------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, shared_data):
    """A tiny BERT pre-trained for real on ~400 KB of WikiText-2 (as tests/test_pretrain.py does)."""
    from plmbench.lit.pretraining import run_pretraining

    root = tmp_path_factory.mktemp("distill")
    corpus = root / "wiki.txt"
    corpus.write_text((shared_data / "corpus/wikitext-2/raw/valid.txt").read_text(encoding="utf-8")[:400_000])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLMBENCH_CACHE", str(root / "cache"))
        overrides = ["model=bert", "objective=mlm", "size=tiny", "model.vocab_size=1000", "model.max_positions=64",
                     "data.max_seq_len=64", "corpus=files", f"corpus.paths={corpus}", "trainer.batch_size=16",
                     "trainer.limit_val_batches=2", "trainer.progress_bar=none", "optim.lr=5e-3",
                     "optim.warmup_ratio=0.1", "logger=none", "data.val_fraction=0.25"]
        steps = ["trainer.max_steps=20", "trainer.val_check_interval=20", "trainer.checkpoint_every_n_steps=20"]
        run_pretraining(compose("pretrain", overrides + steps), root / "teacher")
        yield root, overrides


def test_general_distillation_loss_falls_and_the_student_is_a_finetuning_init(teacher_run):
    from plmbench.lit.finetuning import load_init

    root, overrides = teacher_run
    steps = ["trainer.max_steps=25", "trainer.val_check_interval=25", "trainer.checkpoint_every_n_steps=25"]
    from plmbench.distill.run import run_distillation

    cfg = compose("pretrain", overrides + steps + ["+distill=tinybert", f"distill.teacher={root / 'teacher'}"])
    metrics = run_distillation(cfg, root / "tinybert")
    assert metrics["status"] == "finished" and metrics["step"] == 25
    assert metrics["last_train_loss"] < 0.8 * metrics["first_train_loss"], metrics
    assert {"embedding_loss", "hidden_loss", "attention_loss"} <= set(metrics["validation"])
    assert metrics["params"]["student_backbone"] < metrics["params"]["teacher_backbone"]
    state = torch.load(root / "tinybert/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state) and any(k.startswith("model.backbone.") for k in state)
    init = load_init(compose("finetune", ["task=glue/rte", f"init={root / 'tinybert'}"]))
    assert {k: getattr(init.config, k) for k in metrics["student"]} == metrics["student"]
    model = TaskModel(init.config, "classification", 2)
    init.load_weights(model)
    assert torch.equal(model.backbone.embeddings.word.weight, state["model.backbone.embeddings.word.weight"])


def test_distilbert_run_keeps_half_the_teacher(teacher_run):
    from plmbench.distill.run import run_distillation

    root, overrides = teacher_run
    steps = ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.checkpoint_every_n_steps=3"]
    cfg = compose("pretrain", overrides + steps + ["+distill=distilbert", f"distill.teacher={root / 'teacher'}"])
    metrics = run_distillation(cfg, root / "distilbert")
    assert metrics["student"]["num_layers"] == 2 and metrics["student"]["type_vocab_size"] == 0
    assert metrics["init_layers"] == [0, 3]  # the first and the last of the tiny teacher's 4
    assert {"ce_loss", "mlm_loss", "cos_loss", "mlm_acc", "teacher_mlm_acc"} <= set(metrics["validation"])
    more = ["trainer.max_steps=5", "trainer.val_check_interval=5", "trainer.checkpoint_every_n_steps=5"]
    cfg = compose("pretrain", overrides + more + ["+distill=distilbert", f"distill.teacher={root / 'teacher'}"])
    resumed = run_distillation(cfg, root / "distilbert")  # from step 3: the teacher-less checkpoint loads strictly
    assert resumed["step"] == 5 and resumed["first_train_loss"] == metrics["first_train_loss"]
    with pytest.raises(DistillError, match="distill.teacher=.*no such directory"):
        run_distillation(compose("pretrain", overrides + ["+distill=distilbert", f"distill.teacher={root}/none"]),
                         root / "bad")


# ------------------------------------------------------------------------------------------ sweep and table


def test_the_sweep_plans_a_teacher_cell_and_student_cells_whose_lineage_includes_it():
    from plmbench.commands import sweep
    from plmbench.lineage import cell_id, teacher_id

    _, _, cells, _ = sweep.plan(["experiment=distillation", "scale=smoke"])
    assert len(cells) == 3 and all(len(units) == 1 + 8 + 1 for units in cells.values())  # pretrain, tasks, speed
    configs = {d: compose("pretrain", ["experiment=distillation", "scale=smoke", f"+distill={d}"])
               for d in ("none", "distilbert", "tinybert")}
    teacher = cell_id(configs["none"])
    assert {teacher_id(c) for c in configs.values()} == {teacher} and set(cells) == {cell_id(c) for c in configs.values()}
    wider = compose("pretrain", ["experiment=distillation", "scale=smoke", "+distill=tinybert", "model.hidden_size=128"])
    assert cell_id(wider) != cell_id(configs["tinybert"])  # another teacher: another student
    with pytest.raises(ValueError, match="sweep.units: unknown unit kind 'minibert'"):
        sweep.plan(["experiment=distillation", "scale=smoke", "sweep.units=[minibert]"])


def test_throughput_and_table(tmp_path):
    from plmbench.distill.throughput import inference_throughput
    from plmbench.tables.render import render_tables

    rates = inference_throughput({"a": Backbone(tiny()), "b": Backbone(tiny(num_layers=1))}, 97, 2, 8, 0.05)
    assert all(rate > 0 for rate in rates.values())
    base = {"scale": "smoke", "task_source": "proxy", "seed": 0, "status": "ok"}
    records = []
    for student, params, speed, scores in [("none", 1e6, 1.0, (0.80, 0.60)), ("distilbert", 6e5, 1.9, (0.78, 0.578))]:
        cell = {**base, "cell_id": student, "axes": {"distill": student}, "params": {"backbone_params": params},
                "shape": "L4/H64/A4"}
        records.append({**cell, "unit_id": f"{student}-t", "task": "throughput",
                        "metrics": {"sequences_per_second": 100 * speed, "speedup": speed}})
        records += [{**cell, "unit_id": f"{student}-{task}", "task": task, "metrics": {"accuracy": score}}
                    for task, score in zip(("sst2", "rte"), scores)]
    records.append({**base, "cell_id": "tiny", "axes": {"distill": "tinybert"}, "unit_id": "tiny-sst2",
                    "task": "sst2", "status": "failed", "error": "ValueError: boom"})
    written = render_tables("distillation", records, tmp_path)
    text = written["md"].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| DistilBERT |"))
    assert "| L4/H64/A4 | 0.6 (paper 66) | 40.0 / 40.0 (+0.0) | 190.0 (n=1) | 1.9 (n=1) / 1.6 (+0.3) |" in row, row
    assert row.endswith("| 67.9 | 97.0 (paper 97.0) |"), row  # (78 + 57.8) / 2 = 67.9 of the teacher's 70
    assert "failed" in text and "ValueError: boom" in text
    assert written["csv"].read_text().count("\n") == 4 and written["png"].stat().st_size > 0


def test_a_hugging_face_teacher(teacher_run):
    from plmbench.commands.export_hf import export
    from plmbench.distill.run import load_teacher, run_distillation

    root, overrides = teacher_run
    teacher = load_teacher(root / "teacher")
    export(teacher.model, root / "hf", root / "teacher" / "tokenizer")
    from_hf = load_teacher(root / "hf")
    assert from_hf.kind == "hf" and from_hf.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()
    for key, tensor in teacher.model.backbone.state_dict().items():
        assert torch.equal(tensor, from_hf.model.backbone.state_dict()[key]), key
    steps = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2"]
    cfg = compose("pretrain", overrides + steps + ["+distill=distilbert", f"distill.teacher={root / 'hf'}"])
    assert run_distillation(cfg, root / "from_hf")["teacher"]["kind"] == "hf"
