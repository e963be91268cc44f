"""LAMB (You et al. 2020) as ALBERT trains with it (conf/optim/lamb.yaml); plmbench.optim builds it."""

from __future__ import annotations

import torch


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
