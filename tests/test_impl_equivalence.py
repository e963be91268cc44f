"""Every speed option computes what the plain path computes (cramming's rule: an `impl` knob never changes
results), on fixed batches at size tiny; and `plmbench bench` compares models that compute the same loss.

Tolerances: fp32 paths agree to ~1e-5 relative (different summation orders); bf16 autocast is checked loosely
(2% of the loss), as bf16 keeps 8 bits of mantissa.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from plmbench import impl
from plmbench.bench.overhead import overhead_report
from plmbench.bench.peak import train_flops_per_token
from plmbench.bench.step import Case, build_models, cpu_peak_memory, make_batch, special_tokens
from plmbench.configuration import compose
from plmbench.data.collate import PretrainCollator
from plmbench.models.config import ModelConfig
from plmbench.models.layers import SelfAttention
from plmbench.objectives import build_objective
from plmbench.objectives.rtd import sample_tokens
from plmbench.optim import build_optimizer

NO_DROPOUT = ["model.dropout=0", "model.attention_dropout=0"]
TINY = ["size=tiny", "model.vocab_size=1000", "model.max_positions=64", *NO_DROPOUT]
MODELS = ["albert", "bert", "electra", "gpt"]


def setup(model: str, masked_only: bool = True, seed: int = 0, fused_cross_entropy: bool = False):
    cfg = compose("pretrain", [f"model={model}", *TINY])
    config = ModelConfig.from_mapping(cfg.model)
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    torch.manual_seed(seed)
    model = build_objective(config, objective, masked_only=masked_only, fused_cross_entropy=fused_cross_entropy)
    return model, config, objective


def padded(batch: dict, lengths: list[int]) -> dict:
    """Right-pad rows to `lengths` real tokens: mask 0, labels ignored, pad id 0 beyond them."""
    length = batch["input_ids"].shape[1]
    real = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    out = {**batch, "attention_mask": real.long(), "input_ids": batch["input_ids"].masked_fill(~real, 0),
           "labels": batch["labels"].masked_fill(~real, -100)}
    if "token_type_ids" in batch:
        out["token_type_ids"] = batch["token_type_ids"].masked_fill(~real, 0)
    return out


def loss_and_grads(model, batch, seed: int = 0, context=None) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # ELECTRA samples its replacements
    with context if context is not None else torch.enable_grad():
        loss = model(batch)["loss"]
    loss.backward()
    return loss.detach(), {n.removeprefix("_orig_mod."): p.grad.clone()  # torch.compile's wrapper prefix
                           for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a: tuple, b: tuple, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("model", ["albert", "bert", "electra"])
def test_masked_only_mlm_head_matches_full_vocabulary_logits(model):
    masked, config, objective = setup(model, masked_only=True)
    full, _, _ = setup(model, masked_only=False)
    full.load_state_dict(masked.state_dict())
    batch = padded(make_batch(config, objective, 3, 24, seed=1), [24, 17, 9])
    assert (batch["labels"] != -100).sum() > 3
    assert_same(loss_and_grads(masked, batch), loss_and_grads(full, batch))


@pytest.mark.parametrize("causal", [False, True])
def test_fused_qkv_attention_matches_separate_projections(causal):
    config = ModelConfig(hidden_size=32, num_heads=4, ffn_size=64, num_layers=1, vocab_size=50,
                         attention_dropout=0.0, causal=causal)
    torch.manual_seed(0)
    attention = SelfAttention(config)
    x = torch.randn(2, 7, 32, requires_grad=True)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    out = attention(x, mask)
    # Reference: three separate projections, explicit softmax(QK^T / sqrt(d) + mask) V, per head.
    wq, wk, wv = attention.qkv.weight.chunk(3)
    bq, bk, bv = attention.qkv.bias.chunk(3)
    def heads(t):
        return t.view(2, 7, 4, 8).transpose(1, 2)

    q, k, v = heads(F.linear(x, wq, bq)), heads(F.linear(x, wk, bk)), heads(F.linear(x, wv, bv))
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    allowed = mask[:, None, None, :].bool()
    if causal:
        allowed = allowed & torch.ones(7, 7, dtype=torch.bool).tril()
    context = (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 32)
    reference = attention.out(context)
    real = mask.bool()
    torch.testing.assert_close(out[real], reference[real], rtol=1e-5, atol=1e-6)
    grad_fused = torch.autograd.grad(out[real].sum(), x)[0]
    grad_reference = torch.autograd.grad(reference[real].sum(), x)[0]
    torch.testing.assert_close(grad_fused, grad_reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_sdpa_math_backend_matches_default(model):
    objective_model, config, objective = setup(model)
    batch = padded(make_batch(config, objective, 3, 16, seed=2), [16, 12, 5])
    default = loss_and_grads(objective_model, batch)
    math_only = loss_and_grads(objective_model, batch, context=impl.sdpa_context({"attention": "math"}))
    assert_same(default, math_only)


@pytest.mark.parametrize("model", ["bert", "gpt"])
def test_dropping_an_all_ones_mask_changes_nothing(model):
    """The mask-free fast path: SDPA without a mask (is_causal for GPT) equals the explicit all-ones mask, with
    the flash kernel forced as well as with the math kernel."""
    objective_model, config, objective = setup(model)
    batch = make_batch(config, objective, 2, 16, seed=3)
    fast = impl.drop_full_attention_mask(batch)
    assert "attention_mask" not in fast
    explicit = loss_and_grads(objective_model, batch, context=impl.sdpa_context({"attention": "math"}))
    assert_same(explicit, loss_and_grads(objective_model, fast))
    assert_same(explicit, loss_and_grads(objective_model, fast, context=impl.sdpa_context({"attention": "flash"})))
    with_padding = padded(batch, [16, 9])
    assert impl.drop_full_attention_mask(with_padding) is with_padding


def rows_from(batch: dict, lengths: list[int], static_labels: bool) -> list[dict]:
    rows = []
    for i, length in enumerate(lengths):
        row = {"input_ids": batch["input_ids"][i, :length].tolist()}
        if "token_type_ids" in batch:
            row["token_type_ids"] = batch["token_type_ids"][i, :length].tolist()
            row["sentence_label"] = int(batch["sentence_label"][i])
        if static_labels:
            row["mlm_labels"] = batch["labels"][i, :length].tolist()
        rows.append(row)
    return rows


@pytest.mark.parametrize("model", ["bert", "gpt"])
def test_pad_to_static_shape_matches_dynamic_padding(model):
    objective_model, config, objective = setup(model)
    objective_model.eval()
    source = make_batch(config, objective, 3, 20, seed=4)
    rows = rows_from(source, [20, 13, 6], static_labels=model != "gpt")
    special = special_tokens(config)
    dynamic = PretrainCollator(special)(rows)
    static = PretrainCollator(special, pad_to=32)(rows)
    assert dynamic["input_ids"].shape[1] == 20 and static["input_ids"].shape[1] == 32
    assert_same(loss_and_grads(objective_model, dynamic), loss_and_grads(objective_model, static))


def test_bf16_autocast_is_close_to_fp32():
    objective_model, config, objective = setup("bert")
    batch = padded(make_batch(config, objective, 3, 16, seed=5), [16, 12, 8])
    full = loss_and_grads(objective_model, batch)[0]
    assert impl.autocast_dtype({"precision": "bf16-mixed"}) is torch.bfloat16
    half = loss_and_grads(objective_model, batch, context=impl.autocast_context({"precision": "bf16-mixed"}, "cpu"))[0]
    assert half.dtype == torch.float32  # the loss is computed in fp32 even under autocast
    assert abs(float(half) - float(full)) < 0.02 * float(full)
    assert float(half) != float(full)  # autocast really ran in bf16


def test_thread_count_does_not_change_the_loss():
    objective_model, config, objective = setup("albert")
    batch = make_batch(config, objective, 2, 16, seed=6)
    before = torch.get_num_threads()
    try:
        assert impl.apply_threads({"threads": 1}) == 1
        one = loss_and_grads(objective_model, batch)
        assert impl.apply_threads({"threads": 2}) == 2
        two = loss_and_grads(objective_model, batch)
        assert impl.apply_threads({"threads": None}) == 2  # null keeps what is set
    finally:
        torch.set_num_threads(before)
    assert_same(one, two)


@pytest.mark.parametrize("model", MODELS)
def test_fused_cross_entropy_in_each_objective_matches_torch(model):
    fused, config, objective = setup(model, fused_cross_entropy=True)
    plain, _, _ = setup(model, fused_cross_entropy=False)
    plain.load_state_dict(fused.state_dict())
    batch = padded(make_batch(config, objective, 3, 24, seed=2), [24, 20, 11])
    assert_same(loss_and_grads(fused, batch), loss_and_grads(plain, batch))


def test_fused_cross_entropy_matches_torch():
    torch.manual_seed(7)
    logits = torch.randn(40, 300, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 300, (40,))
    labels[::3] = -100
    expected = F.cross_entropy(logits, labels, ignore_index=-100)
    (grad_expected,) = torch.autograd.grad(expected * 3.0, logits)
    got = impl.cross_entropy(logits, labels)
    (grad_got,) = torch.autograd.grad(got * 3.0, logits)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-12, atol=1e-12)
    assert torch.isnan(impl.cross_entropy(logits, torch.full((40,), -100)))  # as torch: 0 / 0
    twice = impl.cross_entropy(logits, labels)
    twice.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        twice.backward()
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        impl.cross_entropy(logits[None], labels[None])


# BERT's AdamW settings (conf/optim/adamw.yaml): eps 1e-6 keeps the key bias, whose true gradient is 0 (softmax
# ignores a shift shared by all keys), from amplifying rounding noise differently in the two kernels.
OPTIM = {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01}


def test_fused_adamw_matches_the_loop():
    assert impl.use_fused_adamw({"fused_adamw": True}, "cpu") and impl.use_fused_adamw({"fused_adamw": True}, "cuda")
    assert not impl.use_fused_adamw({"fused_adamw": False}, "cpu") and not impl.use_fused_adamw(None, "cuda")
    results = []
    for fused in (False, True):
        objective_model, config, objective = setup("bert")
        optimizer = build_optimizer(objective_model, OPTIM, fused=fused)
        batch = make_batch(config, objective, 2, 16, seed=8)
        for _ in range(2):
            loss_and_grads(objective_model, batch)
            optimizer.step()
        results.append({n: p.detach().clone() for n, p in objective_model.named_parameters()})
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-5, atol=1e-6)


def test_bad_impl_values_are_one_line_errors():
    with pytest.raises(ValueError, match="impl.threads=0"):
        impl.apply_threads({"threads": 0})
    with pytest.raises(ValueError, match="impl.attention='fast'.*auto, flash, efficient, math"):
        impl.sdpa_context({"attention": "fast"})
    with pytest.raises(ValueError, match="impl.precision='16'"):
        impl.autocast_context({"precision": "16"}, "cpu")


@pytest.mark.slow
def test_torch_compile_matches_eager():
    objective_model, config, objective = setup("bert")
    batch = make_batch(config, objective, 2, 16, seed=9)
    eager = loss_and_grads(objective_model, batch)
    compiled = impl.maybe_compile(objective_model, {"compile": True})
    assert compiled is not objective_model
    assert impl.maybe_compile(objective_model, {"compile": False}) is objective_model
    assert_same(eager, loss_and_grads(compiled, batch), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the benchmark itself


@pytest.mark.parametrize("model", MODELS)
def test_bench_models_compute_the_same_loss(model):
    """Ours and the HF baseline start from the same weights and compute the same loss on the bench batch
    (ELECTRA included: same generator samples under one seed), so the timing compares like with like."""
    case = Case(model, "tiny", 32, 1000, 4, extra=tuple(NO_DROPOUT))
    models, batch, _ = build_models(case)
    if model == "electra":  # the same draws: our inverse-CDF sampler (test_pretrain checks its distribution)
        models["hf"].sample = lambda probs: sample_tokens(probs.log())
    losses = {}
    for name, m in models.items():
        m.eval()
        torch.manual_seed(0)
        with torch.no_grad():
            losses[name] = float(m(batch)["loss"])
    assert math.isfinite(losses["ours"])
    assert losses["hf"] == pytest.approx(losses["ours"], rel=1e-5)


def test_flops_per_token_match_counted_matmuls():
    """train_flops_per_token (describe's rule; ELECTRA with its generator) vs torch's FLOP counter over one
    forward + backward with the math attention kernel: within the masked-fraction rounding."""
    from torch.utils.flop_counter import FlopCounterMode

    for model in ("electra", "gpt"):
        case = Case(model, "tiny", 64, 1000, 4, extra=tuple(NO_DROPOUT))
        models, batch, _ = build_models(case, which=("ours",))
        with FlopCounterMode(display=False) as counter, impl.sdpa_context({"attention": "math"}):
            models["ours"](batch)["loss"].backward()
        counted = counter.get_total_flops() / batch["input_ids"].numel()
        assert train_flops_per_token(case.config()) == pytest.approx(counted, rel=0.02)


def test_overhead_report(tmp_path):
    cell = tmp_path / "cells" / "a"
    cell.mkdir(parents=True)
    (cell / "metrics.json").write_text(json.dumps({"wall_seconds": 100.0, "train_step_seconds": 75.0}))
    (cell / "config.yaml").write_text("model: {family: albert, sharing: all, embedding_size: 10}\n"
                                      "objective: {name: mlm_sop}\n")
    unit = tmp_path / "units" / "b"
    unit.mkdir(parents=True)
    (unit / "metrics.json").write_text(json.dumps({"wall_seconds": 10.0}))  # fine-tuning: no step time
    report = overhead_report(tmp_path)
    assert report["skipped"] == 1
    assert report["runs"] == [{"run": "cells/a", "label": "albert mlm_sop sharing=all E=10", "wall_seconds": 100.0,
                               "train_step_seconds": 75.0, "outside_share": 0.25}]
    assert report["median_share"] == 0.25


def test_bench_command_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    from plmbench.commands import bench

    text = tmp_path / "text.txt"
    text.write_text("".join(f" = Article {i} = \n\n Sentence {i} of the bench text . It has a second one .\n\n"
                            for i in range(50)))  # WikiText layout: one document per title
    runs = tmp_path / "runs" / "cells" / "x"
    runs.mkdir(parents=True)
    (runs / "metrics.json").write_text(json.dumps({"wall_seconds": 10.0, "train_step_seconds": 9.0}))
    monkeypatch.setenv("PLMBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PLMBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))
    bench.main(["models=bert", "sizes=tiny", "seq=16", "vocab=500", "batch=2", "repeats=1", "steps=1", "warmup=1",
                "threads=1", "memory=false", f"text={text}", "name=smoke", "model.num_layers=1"])
    report = json.loads((tmp_path / "results" / "bench" / "smoke.json").read_text())
    assert set(report) == {"meta", "peak", "cases", "data", "overhead"}
    assert {"device", "torch", "threads", "load_before", "load_after"} <= set(report["meta"])
    (case,) = report["cases"]
    assert {"tokens_per_second", "ratio", "peak_memory_mb", "mfu", "train_flops_per_token", "initial_loss"} <= set(case)
    assert set(case["ratio"]) == {"min", "median", "max", "rounds"}
    assert report["data"]["cold"]["mb_per_second"] > 0 and report["data"]["cached"]["seconds"] > 0
    assert report["overhead"]["runs"][0]["outside_share"] == pytest.approx(0.1)
    table = (tmp_path / "results" / "bench" / "smoke.md").read_text()
    assert "| bert | tiny | 2 |" in table and "torch " + torch.__version__ in table
    assert "| bert | tiny | 2 |" in capsys.readouterr().out


@pytest.mark.slow
def test_cpu_peak_memory_sees_activations():
    """The subprocess measurement grows with the batch by about what the activations need, and HF's
    full-vocabulary logits make its step larger than ours."""
    small = Case("bert", "tiny", 32, 4000, 2, threads=1, extra=("model.num_layers=1",))
    large = Case("bert", "tiny", 32, 4000, 64, threads=1, extra=("model.num_layers=1",))
    ours_small, ours_large = (cpu_peak_memory(case, "ours")["peak_mb"] for case in (small, large))
    hf_large = cpu_peak_memory(large, "hf")["peak_mb"]
    assert 0 < ours_small < ours_large
    logits_mb = 64 * 32 * 4000 * 4 / 2**20  # one fp32 copy of HF's (B, T, V) logits: 31 MB
    assert hf_large > ours_large + logits_mb


def test_bench_rejects_unknown_keys():
    from plmbench.commands import bench

    with pytest.raises(ValueError, match="unknown key 'repeat'"):
        bench.parse(["repeat=3"])
    with pytest.raises(ValueError, match="batch='0'"):
        bench.parse(["batch=0"])
