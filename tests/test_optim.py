"""LAMB against a line-by-line transcription of ALBERT's lamb_optimizer.py (google-research/albert)."""

from __future__ import annotations

import re

import torch
from torch import nn

from plmbench.optim import build_optimizer

LR, BETAS, EPS, WEIGHT_DECAY = 0.01, (0.9, 0.999), 1e-6, 0.01
EXCLUDE = ["LayerNorm", "layer_norm", "bias"]  # ALBERT's exclude_from_weight_decay = exclude_from_layer_adaptation


class Small(nn.Module):
    """Weights, biases, a LayerNorm, and a weight that starts at zero (trust ratio 1: ||w|| = 0)."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(6, 8)
        self.LayerNorm = nn.LayerNorm(8)
        self.zero = nn.Linear(8, 8)
        nn.init.zeros_(self.zero.weight)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.LayerNorm(torch.tanh(self.dense(x)))
        return self.out(h + self.zero(h))


def albert_lamb_step(params: dict, grads: dict, m: dict, v: dict) -> None:
    """ALBERT's apply_gradients: Adam moments without bias correction, decay and trust ratio by parameter name."""
    for name, param in params.items():
        grad = grads[name]
        m[name] = BETAS[0] * m[name] + (1 - BETAS[0]) * grad
        v[name] = BETAS[1] * v[name] + (1 - BETAS[1]) * grad * grad
        update = m[name] / (v[name].sqrt() + EPS)
        excluded = any(re.search(r, name) for r in EXCLUDE)
        if not excluded:
            update = update + WEIGHT_DECAY * param
        ratio = 1.0
        if not excluded:
            w_norm, g_norm = param.norm().item(), update.norm().item()
            ratio = w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        params[name] = param - ratio * LR * update


def test_lamb_matches_albert_lamb_optimizer():
    torch.manual_seed(0)
    model = Small().double()
    reference = {name: p.detach().clone() for name, p in model.named_parameters()}
    m = {name: torch.zeros_like(p) for name, p in reference.items()}
    v = {name: torch.zeros_like(p) for name, p in reference.items()}
    optimizer = build_optimizer(model, {"name": "lamb", "lr": LR, "betas": list(BETAS), "eps": EPS,
                                        "weight_decay": WEIGHT_DECAY})
    for _ in range(5):
        x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
        optimizer.step()
        albert_lamb_step(reference, grads, m, v)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), reference[name], rtol=0, atol=1e-6, msg=name)
