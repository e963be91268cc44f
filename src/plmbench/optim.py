"""Optimisers and the learning-rate schedule of the papers: AdamW (BERT) or LAMB (ALBERT), linear warm-up then
linear decay to zero. Weight decay skips biases and LayerNorm weights, as in BERT's AdamWeightDecayOptimizer;
LAMB's trust ratio skips them too, as in ALBERT's lamb_optimizer.py.

Both come from the optim config: its `_target_` names the optimiser (torch.optim.AdamW, plmbench.lamb.Lamb, or a
user's own), called with the parameter groups and the node's other keys but plmbench's own (OWN_KEYS); its
`scheduler._target_` names the schedule, called with the optimiser and the run's warm-up and total steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where an optimiser is built: lineage reads this module's names without it
    import torch
    from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # shared tensors appear once
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    # Biases and LayerNorm: no weight decay, and no LAMB trust ratio (ALBERT's exclude_from_layer_adaptation)
    return [{"params": decay, "weight_decay": weight_decay, "layer_adaptation": True},
            {"params": no_decay, "weight_decay": 0.0, "layer_adaptation": False}]


# What optim.name built before configs named their `_target_`: a config without one (a run's older config.yaml,
# fine-tuning's AdamW settings) builds the same optimiser, and a cell id hashes these targets as it did before.
TARGETS = {"adamw": "torch.optim.AdamW", "lamb": "plmbench.lamb.Lamb"}
SCHEDULE = "plmbench.optim.warmup_linear_decay"
# Keys of the optim node that are plmbench's, not the optimiser's arguments: the name is a label, weight decay is set
# per parameter group (none for biases and LayerNorm), warm-up and scheduler make the schedule.
OWN_KEYS = ("_target_", "_partial_", "name", "weight_decay", "warmup_ratio", "warmup_steps", "scheduler")


def optimizer_target(optim: dict) -> str:
    target = optim.get("_target_") or TARGETS.get(optim.get("name"))
    if target is None:
        raise ValueError(f"optim.name={optim.get('name')!r} has no _target_: give optim._target_ (a torch.optim "
                         f"class, say) or one of the names {', '.join(TARGETS)}")
    return target


def build_optimizer(model: nn.Module, optim: dict, fused: bool = False) -> torch.optim.Optimizer:
    from hydra.utils import get_object

    target = optimizer_target(optim)
    arguments = {key: value for key, value in optim.items() if key not in OWN_KEYS}
    if "betas" in arguments:
        arguments["betas"] = tuple(arguments["betas"])  # a config's list, as torch's default
    if fused and target == TARGETS["adamw"]:  # impl.fused_adamw: the same update, one kernel
        arguments["fused"] = True
    return get_object(target)(parameter_groups(model, float(optim["weight_decay"])), **arguments)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: dict, warmup_steps: int, total_steps: int):
    """optim.scheduler (warm-up then linear decay when absent), called with the optimiser and the run's steps as
    transformers' get_*_schedule_with_warmup take them, and the node's other keys."""
    from hydra.utils import get_object

    node = {key: value for key, value in (optim.get("scheduler") or {}).items() if key != "_partial_"}
    target = node.pop("_target_", None) or SCHEDULE
    return get_object(target)(optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, **node)


def identity(optim: dict) -> dict:
    """The optim settings that make a cell (lineage.py): all but `_partial_`, with `_target_` and `scheduler` only
    where they are not the implementations meant before configs named them, so that existing cells keep their ids
    and a user's own optimiser or schedule gets a new one."""
    kept = {key: value for key, value in optim.items() if key != "_partial_"}
    if kept.get("_target_") == TARGETS.get(kept.get("name")):
        kept.pop("_target_")
    scheduler = {key: value for key, value in (kept.get("scheduler") or {}).items() if key != "_partial_"}
    if scheduler in ({}, {"_target_": SCHEDULE}):
        kept.pop("scheduler", None)
    return kept


def warmup_linear_decay(optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int):
    import torch

    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return (step + 1) / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
