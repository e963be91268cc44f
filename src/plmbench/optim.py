"""Optimisers and the learning-rate schedule of the papers: AdamW (BERT) or LAMB (ALBERT), linear warm-up then
linear decay to zero. Weight decay skips biases and LayerNorm weights, as in BERT's AdamWeightDecayOptimizer;
LAMB's trust ratio skips them too, as in ALBERT's lamb_optimizer.py."""

from __future__ import annotations

import torch
from torch import nn


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020) as ALBERT's lamb_optimizer.py: Adam's update without bias correction, plus weight
    decay, rescaled per tensor by the trust ratio ||w|| / ||update|| (1 when either norm is 0). A group with
    `layer_adaptation: False` (biases and LayerNorm, see parameter_groups) takes the plain update (ratio 1)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "layer_adaptation": True})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = exp_avg / (exp_avg_sq.sqrt() + group["eps"])  # ALBERT corrects neither m nor v for bias
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                if group.get("layer_adaptation", True):  # absent from groups restored from older checkpoints
                    w_norm, u_norm = p.norm(), update.norm()
                    update.mul_(torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm)))
                p.add_(update, alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # shared tensors appear once
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    # Biases and LayerNorm: no weight decay, and no LAMB trust ratio (ALBERT's exclude_from_layer_adaptation)
    return [{"params": decay, "weight_decay": weight_decay, "layer_adaptation": True},
            {"params": no_decay, "weight_decay": 0.0, "layer_adaptation": False}]


def build_optimizer(model: nn.Module, optim: dict, fused: bool = False) -> torch.optim.Optimizer:
    groups = parameter_groups(model, float(optim["weight_decay"]))
    betas = tuple(optim.get("betas", (0.9, 0.999)))
    builders = {
        "adamw": lambda: torch.optim.AdamW(groups, lr=optim["lr"], betas=betas, eps=optim["eps"],
                                           **({"fused": True} if fused else {})),
        "lamb": lambda: Lamb(groups, lr=optim["lr"], betas=betas, eps=optim["eps"]),
    }
    if optim["name"] not in builders:
        raise ValueError(f"optim.name={optim['name']!r}: allowed values are {', '.join(builders)}")
    return builders[optim["name"]]()


def warmup_linear_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
