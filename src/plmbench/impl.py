"""The `impl` config group applied: settings that change only how fast a step runs, never what it computes.

Each function reads one key of the `impl` node (a mapping; absent keys mean the plain path) and is meant to be
called where training builds or runs the model:

    apply_threads(impl)                        once, before building anything
    model = maybe_compile(model, impl)         after building the objective
    build_optimizer(model, optim, fused=use_fused_adamw(impl, device))
    with sdpa_context(impl), autocast_context(impl, device.type):
        out = model(batch)

`fused_cross_entropy` is read by objectives.build_objective; drop_full_attention_mask is a helper for callers
that want SDPA's mask-free path (on CPU it measured the same as passing the all-ones mask).

tests/test_impl_equivalence.py checks every option against the plain path on a fixed batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch import nn

PRECISIONS = {  # Lightning's names, as conf/impl uses them -> the autocast dtype (None: no autocast)
    "32-true": None,
    "32": None,
    "bf16-mixed": torch.bfloat16,
}
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "math")


def _get(impl: Mapping | None, key: str, default=None):
    return default if impl is None else impl.get(key, default)


def apply_threads(impl: Mapping | None) -> int:
    """Set torch's intra-op thread count from `impl.threads` (null: torch's default); returns the count in use."""
    threads = _get(impl, "threads")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"impl.threads={threads!r}: must be a positive integer or null (torch's default)")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def autocast_dtype(impl: Mapping | None) -> torch.dtype | None:
    precision = str(_get(impl, "precision", "32-true"))
    if precision not in PRECISIONS:
        raise ValueError(f"impl.precision={precision!r}: allowed values are {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast_context(impl: Mapping | None, device_type: str):
    """torch.autocast to bf16 for `bf16-mixed` (weights, optimizer and losses stay fp32); else a no-op."""
    dtype = autocast_dtype(impl)
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def sdpa_context(impl: Mapping | None):
    """Restrict scaled_dot_product_attention to one backend (`impl.attention`); `auto` lets torch choose.

    On CPU only `flash` (torch's CPU flash kernel) and `math` exist; asking for a backend that cannot run the
    inputs makes SDPA raise, which is the point of naming one.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = str(_get(impl, "attention", "auto"))
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"impl.attention={backend!r}: allowed values are {', '.join(ATTENTION_BACKENDS)}")
    if backend == "auto":
        return contextlib.nullcontext()
    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "math": SDPBackend.MATH}[backend]
    return sdpa_kernel(chosen)


def maybe_compile(module: nn.Module, impl: Mapping | None) -> nn.Module:
    """torch.compile with static shapes when `impl.compile`: pair it with `impl.pad_to` so every batch has one
    shape and the graph is compiled once."""
    if not _get(impl, "compile", False):
        return module
    return torch.compile(module, dynamic=False)


FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # torch >= 2.4 has fused AdamW kernels for both


def use_fused_adamw(impl: Mapping | None, device: torch.device | str) -> bool:
    """Whether to pass fused=True to AdamW (`impl.fused_adamw`). On CPU too: measured here (2-core EPYC, BERT
    mini's 11M parameters), one fused step takes ~20 ms against ~150 ms for the default per-tensor loop."""
    return bool(_get(impl, "fused_adamw", False)) and torch.device(device).type in FUSED_ADAMW_DEVICES


def drop_full_attention_mask(batch: dict) -> dict:
    """The batch without `attention_mask` when every position is a real token.

    The backbone then hands SDPA no mask (and is_causal for GPT), which lets torch pick its fastest kernel instead
    of reading a (B, 1, T, T) or (B, 1, 1, T) mask; with any padding the batch is returned unchanged.
    """
    mask = batch.get("attention_mask")
    if mask is None or not bool(mask.all()):
        return batch
    return {key: value for key, value in batch.items() if key != "attention_mask"}


class _CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the rows whose label is not ignored, with a lean backward.

    F.cross_entropy's backward zero-fills an (N, V) gradient for nll_loss, scatters into it, then runs
    log_softmax's backward over two (N, V) tensors. Here backward turns the saved log-probabilities into
    softmax - one_hot in place (exp, scale, subtract at the labels): half the passes over the largest tensor of
    an LM step. The saved tensor is consumed, so backward runs once (no retain_graph).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        log_probs = torch.log_softmax(logits, dim=-1)
        valid = labels != ignore_index
        targets = labels.masked_fill(~valid, 0).unsqueeze(1)
        count = valid.sum()
        loss = -(log_probs.gather(1, targets).squeeze(1) * valid).sum() / count  # nan when all ignored, as torch
        ctx.save_for_backward(log_probs, targets, valid, count)
        ctx.consumed = False
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        if ctx.consumed:
            raise RuntimeError("plmbench.impl.cross_entropy: backward ran twice (retain_graph is not supported)")
        ctx.consumed = True
        log_probs, targets, valid, count = ctx.saved_tensors
        scale = (grad_loss / count.clamp(min=1)) * valid.to(log_probs.dtype)  # per row; 0 for ignored rows
        grad = log_probs.exp_().mul_(scale.unsqueeze(1))
        grad.scatter_add_(1, targets, -scale.unsqueeze(1))
        return grad, None, None


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """F.cross_entropy(logits, labels, ignore_index=...) (mean over kept rows) for (N, V) logits and (N,) labels,
    with the same value and gradient and a faster backward (see _CrossEntropy)."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits must be (N, V) and labels (N,); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return _CrossEntropy.apply(logits, labels, ignore_index)
