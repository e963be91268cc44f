"""LAMB against a line-by-line transcription of ALBERT's lamb_optimizer.py (google-research/albert)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from plmbench.lamb import Lamb
from plmbench.optim import build_optimizer, build_scheduler

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


# ------------------------------------------------------------------------------------------ from config (issue 14)


def settings(group_option: str) -> dict:
    from omegaconf import OmegaConf

    from plmbench.configuration import compose

    return OmegaConf.to_container(compose("pretrain", [f"optim={group_option}"]).optim, resolve=True)


@pytest.mark.parametrize("option", ["adamw", "adamw_roberta", "lamb"])
def test_each_optim_target_builds_what_its_name_built(option):
    """conf/optim's `_target_` and `scheduler` give the optimiser and schedule that `name` alone gave before."""
    named = settings(option)
    by_name = {k: v for k, v in named.items() if k not in ("_target_", "_partial_", "scheduler")}
    built = [build_optimizer(Small(), s) for s in (named, by_name)]
    assert type(built[0]) is type(built[1]) is {"adamw": torch.optim.AdamW, "lamb": Lamb}[named["name"]]
    assert [{k: v for k, v in g.items() if k != "params"} for g in built[0].param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in built[1].param_groups]
    assert built[0].param_groups[0]["betas"] == tuple(named["betas"]) and built[0].param_groups[1]["weight_decay"] == 0
    rates = []
    for s, optimizer in zip((named, by_name), built):
        schedule, rates_of_s = build_scheduler(optimizer, s, 3, 10), []
        for _ in range(10):
            rates_of_s.append(schedule.get_last_lr()[0])
            optimizer.step()
            schedule.step()
        rates.append(rates_of_s)
    factors = (1 / 3, 2 / 3, 1, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7)  # 3 warm-up steps, then to 0 at step 10
    assert rates[0] == rates[1] == pytest.approx([named["lr"] * f for f in factors])


def test_a_users_optimiser_and_schedule_are_yaml():
    """Any optimiser class and any transformers schedule, named by `_target_`, with their own keys."""
    own = {"_target_": "torch.optim.SGD", "name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01,
           "warmup_ratio": 0.0, "scheduler": {"_target_": "transformers.get_cosine_schedule_with_warmup",
                                              "num_cycles": 0.5}}
    optimizer = build_optimizer(Small(), own)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    schedule = build_scheduler(optimizer, own, 0, 4)
    optimizer.step()
    schedule.step()
    assert schedule.get_last_lr()[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
