"""The GPU speed path against the plain fp32 path, on one fixed batch and over a short training curve.

Variants of one BERT (MLM + NSP, dropout 0) from the same initial weights, each giving the loss and the gradient
of one fixed full-length batch: fp32 with the math attention kernel is the reference (what every kernel must
compute); then fp32 with torch's own kernel choice, bf16 autocast, bf16 with SDPA's flash kernel, fp32 compiled
and bf16 + flash compiled (impl=gpu's settings). A variant passes when its loss is within `loss_rel` of the
reference's and its gradient points the same way (cosine >= `grad_cos`): fp32 paths differ only in summation
order; bf16 keeps 8 bits of mantissa (tests/test_impl_equivalence.py uses 2% on CPU).

Flash attention takes no mask: its variants get the batch without the all-ones attention_mask
(impl.drop_full_attention_mask, tested equal to passing it). Training passes the mask, so under `auto` SDPA picks
a kernel that takes one (memory-efficient attention on CUDA).

The curve: `steps` AdamW steps from the same weights, cycling through 8 fixed batches so that the loss really falls
(random tokens cannot be learned otherwise: every loss would sit at log V), fp32 eager against the fastest path
checked; it passes when the mean relative difference of the per-step losses is within `curve_rel`.
"""

from __future__ import annotations

import copy
import time

import torch
from omegaconf import OmegaConf

from plmbench import impl as speed
from plmbench.bench.step import Case, build_models, make_batch, optimizer_for
from plmbench.models.config import ModelConfig

TOLERANCE = {"fp32": {"loss_rel": 1e-4, "grad_cos": 0.9999, "curve_rel": 1e-3},
             "bf16": {"loss_rel": 2e-2, "grad_cos": 0.99, "curve_rel": 3e-2}}
CURVE_BATCHES = 8
VARIANTS = (  # name, precision, attention kernel, compiled
    ("fp32, math kernel (reference)", "fp32", "math", False),
    ("fp32, SDPA auto", "fp32", "auto", False),
    ("bf16 autocast, SDPA auto", "bf16", "auto", False),
    ("bf16 autocast, SDPA flash", "bf16", "flash", False),
    ("fp32, torch.compile", "fp32", "auto", True),
    ("bf16 autocast, SDPA flash, torch.compile", "bf16", "flash", True),
)
PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


def _impl(precision: str, attention: str) -> dict:
    return {"precision": PRECISION[precision], "attention": attention}


def _loss_and_grad(model, batch: dict, impl: dict, device: str) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    if impl["attention"] == "flash":
        batch = speed.drop_full_attention_mask(batch)
    with speed.sdpa_context(impl), speed.autocast_context(impl, torch.device(device).type):
        loss = model(batch)["loss"]
    loss.backward()
    grad = torch.cat([p.grad.detach().float().flatten() for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), grad


def _curve(runner, model, case: Case, impl: dict, batches: list[dict], steps: int) -> list[float]:
    """`steps` training steps of `runner` (the model or its compiled wrapper); the optimizer holds `model`'s
    parameters under their own names, so both paths get the same weight-decay groups."""
    optimizer = optimizer_for(model, case, case.impl())
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        if impl["attention"] == "flash":
            batch = speed.drop_full_attention_mask(batch)
        with speed.sdpa_context(impl), speed.autocast_context(impl, torch.device(case.device).type):
            loss = runner(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def check(case: Case, bf16: bool = True, compile: bool = True, curve_steps: int = 50) -> dict:
    """{variants: [{name, loss, loss_rel, grad_cos, passed} | {name, skipped} | {name, error, passed}], curve, passed}."""
    models, batch, _ = build_models(case, which=("ours",))
    model = models["ours"]
    initial = copy.deepcopy(model.state_dict())
    reference = None
    rows, fast = [], None
    for name, precision, attention, compiled in VARIANTS:
        skip = ("bf16 not checked (bf16=false)" if precision == "bf16" and not bf16 else
                "torch.compile not checked (compile=false)" if compiled and not compile else None)
        if skip:
            rows.append({"name": name, "skipped": skip})
            continue
        model.load_state_dict(initial)
        impl = _impl(precision, attention)
        start = time.perf_counter()
        try:
            runner = speed.maybe_compile(model, {"compile": compiled})
            loss, grad = _loss_and_grad(runner, batch, impl, case.device)
        except Exception as error:
            if reference is None:
                raise  # without the reference nothing can be compared
            rows.append({"name": name, "error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}",
                         "passed": False})
            continue
        row = {"name": name, "precision": precision, "attention": attention, "compiled": compiled, "loss": loss,
               "seconds": time.perf_counter() - start}
        if reference is None:
            reference = (loss, grad)
            row.update(loss_rel=0.0, grad_cos=1.0, passed=True)
        else:
            tol = TOLERANCE[precision]
            row["loss_rel"] = abs(loss - reference[0]) / abs(reference[0])
            row["grad_cos"] = float(torch.nn.functional.cosine_similarity(grad, reference[1], dim=0))
            row["tolerance"] = {k: tol[k] for k in ("loss_rel", "grad_cos")}
            row["passed"] = bool(row["loss_rel"] <= tol["loss_rel"] and row["grad_cos"] >= tol["grad_cos"])
        rows.append(row)
        fast = (name, runner, impl, precision)  # the last variant run: the fastest path checked
        del grad
    result = {"model": f"{case.model}/{case.size}", "batch": case.batch, "seq": case.seq, "device": case.device,
              "variants": rows}
    if curve_steps > 0 and fast is not None:
        result["curve"] = _compare_curves(model, case, initial, fast, curve_steps)
    checked = [r for r in rows if "passed" in r] + ([result["curve"]] if "curve" in result else [])
    result["passed"] = all(r["passed"] for r in checked)
    return result


def _compare_curves(model, case: Case, initial: dict, fast: tuple, steps: int) -> dict:
    cfg = case.config()
    config = ModelConfig.from_mapping(cfg.model)
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    batches = [{k: v.to(case.device) for k, v in make_batch(config, objective, case.batch, case.seq, seed).items()}
               for seed in range(100, 100 + min(steps, CURVE_BATCHES))]
    curves, seconds = {}, {}
    name, runner, impl, precision = fast
    for label, module, setting in (("reference", model, _impl("fp32", "auto")), ("fast", runner, impl)):
        model.load_state_dict(initial)
        torch.manual_seed(0)
        start = time.perf_counter()
        curves[label] = _curve(module, model, case, setting, batches, steps)
        seconds[label] = time.perf_counter() - start
    diffs = [abs(f - r) / abs(r) for f, r in zip(curves["fast"], curves["reference"])]
    tol = TOLERANCE[precision]["curve_rel"]
    mean = sum(diffs) / len(diffs)
    return {"steps": steps, "batches": len(batches), "reference": "fp32, SDPA auto, eager", "fast": name,
            "losses": curves, "seconds": seconds,
            "mean_rel_diff": mean, "max_rel_diff": max(diffs), "tolerance": tol, "passed": bool(mean <= tol)}
