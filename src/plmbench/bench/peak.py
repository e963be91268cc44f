"""The machine's measured matmul peak and the model FLOPs of a training step: together a "model FLOPs
utilisation" (MFU) = model FLOPs per token x tokens/s / measured peak FLOP/s.

The peak is measured, not read off a data sheet: the best of several timed square fp32 torch.mm (bf16 under
bf16 precision on CUDA) in the same process, with the same thread count as the steps, so that on a shared machine
the load that slows the steps slows the peak too. Model FLOPs are the model's (what the architecture needs, the
MLM decoder at the masked positions only), not what an implementation executes: HF's full-vocabulary decoder is
extra work and its MFU is counted with the same numerator per token, so MFU ours/HF equals the throughput ratio.
"""

from __future__ import annotations

import time

import torch

from plmbench.objectives.counting import describe_config


def matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                repeats: int = 5) -> dict:
    """Best-of-`repeats` FLOP/s of an n x n x n torch.mm (n = 2048 on CPU, 8192 on CUDA)."""
    n = size or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b, out=out)  # warm-up: first-call allocation and kernel selection
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - start)
    return {"flops_per_second": 2 * n**3 / best, "size": n, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "repeats": repeats}


def train_flops_per_token(cfg) -> float:
    """Training FLOPs per token (forward + backward) of the objective in `cfg`, as `plmbench describe` counts them
    (ELECTRA with its generator); tests check the rule against torch's FLOP counter."""
    return float(describe_config(cfg)["train_flops_per_token"])


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops_per_second: float) -> float:
    return flops_per_token * tokens_per_second / peak_flops_per_second
