"""Parameter counts and training FLOPs per token of a composed pre-training config: `plmbench describe` prints
them, the sweep records them with every pre-training cell, and bench turns them into MFU.

The backbone follows the paper's counting rule (plmbench.models.counting); the pre-training heads are counted at the
fraction of tokens they run on, which depends on the objective, so this lives with the objectives.
"""

from __future__ import annotations

import dataclasses

import torch
from omegaconf import OmegaConf

from plmbench.models.config import ModelConfig
from plmbench.models.counting import count_backbone, count_knowledge, flops_per_token, matmul_weights
from plmbench.models.elmo import bilm_counts
from plmbench.models.knowledge_fusion import KnowledgeConfig
from plmbench.objectives import build_objective
from plmbench.objectives.rtd import generator_config


def describe_config(cfg) -> dict:
    model = ModelConfig.from_mapping(cfg.model)
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    seq_len = int(OmegaConf.select(cfg, "data.max_seq_len", default=model.max_positions))
    mask_rate = float(OmegaConf.select(cfg, "data.masking.rate", default=0.15))
    descriptive = {"model": model.family, "size": f"L{model.num_layers}/H{model.hidden_size}/A{model.num_heads}",
                   "embedding_size": model.embedding_size, "sharing": model.sharing, "objective": objective["name"]}
    if objective["name"] == "bilm":  # an LSTM biLM: the Transformer counting rule does not apply
        return {**descriptive, **bilm_counts(model, seq_len)}
    counts = count_backbone(model)
    knowledge = KnowledgeConfig.from_mapping(OmegaConf.to_container(cfg.knowledge, resolve=True)
                                             if OmegaConf.select(cfg, "knowledge") is not None else None)
    with torch.device("meta"):  # the entity table is a frozen buffer: a one-row placeholder counts the same
        full = build_objective(model, objective, knowledge=dataclasses.asdict(knowledge),
                               entity_table=torch.empty(1, knowledge.entity_dim))
    heads = full.trained_head_modules()
    head_params = sum(p.numel() for h in heads for p in h.parameters() if p is not full.backbone.embeddings.word.weight)
    flops = flops_per_token(model, seq_len, counts["executed_matmul_weights"])
    flops["train_flops_per_token"] += _head_flops(model, objective, full, heads, seq_len, mask_rate)
    fusion = {}
    if knowledge.enabled:  # ERNIE-style fusion: what it adds, and the totals above include it
        fusion = count_knowledge(model, knowledge, seq_len)
        head_params += fusion["knowledge_params"]
        flops["train_flops_per_token"] += fusion["knowledge_train_flops_per_token"]
    return {**descriptive, **counts, "params_with_pretraining_heads": counts["backbone_params"] + head_params,
            "seq_len": seq_len, **flops, **fusion}


def _head_flops(model: ModelConfig, objective: dict, full, heads: list, seq_len: int, mask_rate: float) -> float:
    """Training FLOPs per token of the pre-training heads, each at the fraction of tokens it runs on."""
    if objective["name"] == "clm":  # GPT's LM head on every token
        return 6.0 * model.vocab_size * model.hidden_size
    if objective["name"] == "rtd":
        # ELECTRA: the generator encoder runs on every token, its MLM head (dense + tied decoder) on the masked
        # ones, the discriminator head on every token.
        generator = generator_config(model, float(objective.get("generator_size", 0.25)))
        encoder = flops_per_token(generator, seq_len, count_backbone(generator)["executed_matmul_weights"])
        decoder = matmul_weights(full.generator_head) + model.vocab_size * model.embedding_size
        return (encoder["train_flops_per_token_backbone"] + 6.0 * decoder * mask_rate
                + 6.0 * matmul_weights(full.discriminator_head))
    # MLM (+ NSP/SOP): the heads and the tied decoder on the masked tokens only.
    return 6.0 * (sum(matmul_weights(h) for h in heads) + model.vocab_size * model.embedding_size) * mask_rate
