"""`plmbench describe <overrides>`: parameter counts and training FLOPs per token, as JSON.

With `experiment=<name>`, one JSON line per cell of the experiment's grid (the same cells a sweep would run).
"""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.grid import grid_axes, grid_cells
from plmbench.models.config import ModelConfig
from plmbench.models.counting import _matmul_weights, count_backbone, flops_per_token
from plmbench.objectives import build_objective


def describe_config(cfg) -> dict:
    model = ModelConfig.from_mapping(cfg.model)
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    seq_len = int(OmegaConf.select(cfg, "data.max_seq_len", default=model.max_positions))
    mask_rate = float(OmegaConf.select(cfg, "data.masking.rate", default=0.15))
    counts = count_backbone(model)
    with torch.device("meta"):
        full = build_objective(model, objective)
    heads = full.trained_head_modules()
    head_params = sum(p.numel() for h in heads for p in h.parameters() if p is not full.backbone.embeddings.word.weight)
    head_matmul = sum(_matmul_weights(h) for h in heads)
    if objective["name"] != "clm" and objective["name"] != "rtd":
        head_matmul += model.vocab_size * model.embedding_size  # the tied decoder still runs a matmul
    # The MLM decoder runs only on masked tokens; GPT's LM head on every token.
    fraction = 1.0 if objective["name"] == "clm" else mask_rate
    if objective["name"] == "clm":
        head_matmul = model.vocab_size * model.hidden_size
    return {
        "model": model.family, "size": f"L{model.num_layers}/H{model.hidden_size}/A{model.num_heads}",
        "embedding_size": model.embedding_size, "sharing": model.sharing, "objective": objective["name"],
        **counts,
        "params_with_pretraining_heads": counts["backbone_params"] + head_params,
        "seq_len": seq_len,
        **flops_per_token(model, seq_len, counts["executed_matmul_weights"], head_matmul, fraction),
    }


def main(overrides: list[str]) -> None:
    cfg = compose("pretrain", overrides, return_hydra=True)
    axes = grid_axes(cfg.hydra)
    if not OmegaConf.select(cfg, "experiment.name") or not axes:
        print(json.dumps(describe_config(cfg)))
        return
    for cell in grid_cells(axes):
        cell_cfg = compose("pretrain", overrides + cell)
        print(json.dumps({"cell": " ".join(cell), **describe_config(cell_cfg)}))
