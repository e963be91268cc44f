"""Timing one full pre-training step (forward, backward, gradient clipping, AdamW step) of our objective and of
the Hugging Face model of the same shapes and weights, on one fixed batch already on the device.

Method: both models start from the same weights (hf_mapping); after `warmup` steps each, `repeats` rounds time
`steps` steps of each model back to back, the order alternating every round (ours/HF, HF/ours, ...) so that drift
in machine load hits both. tokens/s per round = batch x seq x steps / seconds; the ours/HF ratio is taken per
round (paired) and summarised as min/median/max.

Peak memory: on CUDA, torch.cuda.max_memory_allocated over the timed steps. On CPU, each model runs in a
subprocess of its own: the peak resident set size (VmHWM, reset after building the model through
/proc/self/clear_refs) minus the resident size right after the imports, i.e. weights + gradients + optimizer
state + activations of a step. glibc's mmap threshold is pinned so that freed tensors really leave the process.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from plmbench.bench.hf_models import build_hf_pretraining
from plmbench.configuration import compose
from plmbench.data.masking import Masker
from plmbench.data.tokenizer import BYTEBPE_SPECIALS, WORDPIECE_SPECIALS, SpecialTokens
from plmbench.impl import (
    apply_threads,
    autocast_context,
    maybe_compile,
    sdpa_context,
    use_fused_adamw,
)
from plmbench.models.config import ModelConfig
from plmbench.objectives import build_objective
from plmbench.optim import build_optimizer

MODELS = ("albert", "bert", "electra", "gpt")  # options of the `model` config group with an HF baseline
PRECISION_IMPL = {"fp32": "32-true", "bf16": "bf16-mixed"}


@dataclass(frozen=True)
class Case:
    """One row of the benchmark: a model option at a size, and how its step is run."""

    model: str
    size: str
    seq: int
    vocab: int
    batch: int
    device: str = "cpu"
    precision: str = "fp32"
    threads: int | None = None
    extra: tuple[str, ...] = ()  # further Hydra overrides (e.g. sharing=none)

    def overrides(self) -> list[str]:
        if self.model not in MODELS:
            raise ValueError(f"bench models: {self.model!r} is not one of {', '.join(MODELS)}")
        if self.precision not in PRECISION_IMPL:
            raise ValueError(f"precision={self.precision!r}: allowed values are {', '.join(PRECISION_IMPL)}")
        return [f"model={self.model}", f"size={self.size}", f"model.vocab_size={self.vocab}",
                f"model.max_positions={max(512, self.seq)}", f"data.max_seq_len={self.seq}",
                f"impl.precision={PRECISION_IMPL[self.precision]}", *self.extra]

    def config(self):
        return _composed(tuple(self.overrides()))

    def impl(self) -> dict:
        impl = OmegaConf.to_container(self.config().impl, resolve=True)
        return {**impl, "threads": self.threads if self.threads is not None else impl.get("threads")}


@functools.cache
def _composed(overrides: tuple[str, ...]):
    return compose("pretrain", list(overrides))


def special_tokens(config: ModelConfig) -> SpecialTokens:
    names = WORDPIECE_SPECIALS if config.family != "gpt2" and config.family != "roberta" else BYTEBPE_SPECIALS
    return SpecialTokens(**{name: i for i, name in enumerate(names)})  # ids as our tokenizers number them


def make_batch(config: ModelConfig, objective: dict, batch_size: int, seq_len: int, seed: int = 0) -> dict:
    """A full-length batch as the collator builds it: [CLS] A [SEP] B [SEP] with dynamic 15% masking (our Masker)
    and sentence labels for encoders; packed blocks with labels = input_ids for GPT. Every position is a token:
    at seq 128, causal packing and 90% of segment pairs fill the row."""
    generator = torch.Generator().manual_seed(seed)
    special = special_tokens(config)
    first_word = max(special.ids()) + 1
    ids = torch.randint(first_word, config.vocab_size, (batch_size, seq_len), generator=generator)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    if objective["name"] == "clm":
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}
    split = torch.randint(seq_len // 4, 3 * seq_len // 4, (batch_size, 1), generator=generator)
    position = torch.arange(seq_len)[None, :]
    ids[:, 0], ids[:, -1] = special.cls, special.sep
    ids = torch.where(position == split, special.sep, ids)
    types = (position > split).long()
    masked, labels = Masker(config.vocab_size, special)(ids, generator=generator)
    has_sentence_task = objective.get("sentence_task", "none") != "none"
    sentence = torch.randint(0, 2, (batch_size,), generator=generator) if has_sentence_task \
        else torch.full((batch_size,), -1)
    return {"input_ids": masked, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "sentence_label": sentence}


def build_models(case: Case, seed: int = 0, which: tuple[str, ...] = ("ours", "hf")) -> tuple[dict, dict, dict]:
    """({name: model}, batch, impl): our objective and its HF twin with the same weights, in training mode."""
    cfg = case.config()
    impl = case.impl()
    config = ModelConfig.from_mapping(cfg.model)
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    torch.manual_seed(seed)
    ours = build_objective(config, objective, masked_only=bool(impl.get("mlm_masked_only", True)),
                           fused_cross_entropy=bool(impl.get("fused_cross_entropy", False)))
    models = {"ours": ours}
    if "hf" in which:
        models["hf"] = build_hf_pretraining(ours)
    models = {name: models[name].to(case.device).train() for name in which}
    batch = {k: v.to(case.device) for k, v in make_batch(config, objective, case.batch, case.seq, seed).items()}
    return models, batch, impl


def optimizer_for(model: torch.nn.Module, case: Case, impl: dict) -> torch.optim.Optimizer:
    """The run's optimiser (optim group, AdamW by default) built the same way for both models."""
    optim = OmegaConf.to_container(case.config().optim, resolve=True)
    return build_optimizer(model, optim, fused=use_fused_adamw(impl, case.device))


class Stepper:
    """One model's training step with the impl options applied, as training runs it. (impl's
    drop_full_attention_mask is left out: on CPU it measured no different, ±2% noise, at tiny and mini.)"""

    def __init__(self, model: torch.nn.Module, optimizer, impl: dict, device: str):
        self.model, self.optimizer, self.impl = model, optimizer, impl
        self.device_type = torch.device(device).type

    def __call__(self, batch: dict) -> torch.Tensor:
        with sdpa_context(self.impl), autocast_context(self.impl, self.device_type):
            loss = self.model(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)  # the trainer clips at 1.0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(step: Stepper, batch: dict, steps: int, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    _sync(device)
    return time.perf_counter() - start


def initial_losses(models: dict, batch: dict, impl: dict, device: str, seed: int = 0) -> dict:
    """Both models' loss on the batch in eval mode with one random state: equal when they compute the same."""
    losses = {}
    for name, model in models.items():
        model.eval()
        torch.manual_seed(seed)  # ELECTRA samples replacements: the same draws for both
        with torch.no_grad(), sdpa_context(impl), autocast_context(impl, torch.device(device).type):
            losses[name] = float(model(batch)["loss"])
        model.train()
    return losses


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def throughput(case: Case, repeats: int = 5, steps: int = 5, warmup: int = 3, seed: int = 0) -> dict:
    """A/B timing of ours vs HF for one case: tokens/s per round, paired ratios, and CUDA peak memory."""
    models, batch, impl = build_models(case, seed)
    threads = apply_threads(impl)
    losses = initial_losses(models, batch, impl, case.device, seed)
    steppers = {name: Stepper(maybe_compile(model, impl), optimizer_for(model, case, impl), impl, case.device)
                for name, model in models.items()}  # impl.compile: both models, static shapes
    for step in steppers.values():
        for _ in range(warmup):
            step(batch)
    tokens = case.batch * case.seq * steps
    rates = {name: [] for name in steppers}
    cuda_peak = {}
    for round_ in range(repeats):
        order = list(steppers) if round_ % 2 == 0 else list(reversed(steppers))
        for name in order:
            if case.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            rates[name].append(tokens / timed(steppers[name], batch, steps, case.device))
            if case.device.startswith("cuda"):
                cuda_peak[name] = max(cuda_peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)
    ratios = [o / h for o, h in zip(rates["ours"], rates["hf"])]
    return {"threads": threads, "initial_loss": losses, "tokens_per_step": case.batch * case.seq,
            "tokens_per_second": {name: summary(r) | {"rounds": r} for name, r in rates.items()},
            "ratio": summary(ratios) | {"rounds": ratios},
            "peak_memory_mb": cuda_peak or None,
            "memory_method": "torch.cuda.max_memory_allocated" if cuda_peak else None}


# ---------------------------------------------------------------- CPU peak memory, one subprocess per model

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(spec: dict) -> dict:
    """Runs in the subprocess: RSS after imports, build, reset the high-water mark, run the steps."""
    import gc

    import transformers  # noqa: F401  (both children import it, so the baseline is the same)

    case = Case(**{**spec["case"], "extra": tuple(spec["case"]["extra"])})
    baseline_kb = _status_kb("VmRSS")
    which = spec["which"]
    models, batch, impl = build_models(case, spec["seed"], which=("ours", "hf") if which == "hf" else ("ours",))
    model = models.pop(which)
    models.clear()
    gc.collect()
    apply_threads(impl)
    step = Stepper(model, optimizer_for(model, case, impl), impl, case.device)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS now; the peak below belongs to the steps
    for _ in range(spec["steps"]):
        step(batch)
    return {"peak_mb": (_status_kb("VmHWM") - baseline_kb) / 1024, "baseline_mb": baseline_kb / 1024}


MEMORY_STEPS = 3
CPU_MEMORY_METHOD = (f"peak RSS over {MEMORY_STEPS} training steps in a fresh process per model (VmHWM reset after "
                     "building) minus the RSS after imports")


def cpu_peak_memory(case: Case, which: str, steps: int = MEMORY_STEPS, seed: int = 0) -> dict:
    """Peak memory of `steps` training steps of one model ("ours" or "hf"), in a fresh process."""
    spec = {"case": {**dataclasses.asdict(case), "extra": list(case.extra)}, "which": which, "steps": steps, "seed": seed}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "plmbench.bench.step", json.dumps(spec)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench memory subprocess for {which} {case.model}/{case.size} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_memory_child(json.loads(sys.argv[1]))))
