"""Parameter and FLOP counts, with the paper's counting rule (ALBERT Table 4).

Backbone params = embeddings (V x E, positions x E, segments x E, LayerNorm) + the E -> H projection when present
+ the encoder layers; no pooler, no heads. Shared weights count once as *unique* parameters but once per use as
*executed* weights, which is what compute (FLOPs) scales with.
"""

import torch
from torch import nn

from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.knowledge_fusion import KnowledgeBackbone, KnowledgeConfig


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matmul_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def count_backbone(config: ModelConfig) -> dict:
    """Counts from a backbone built on the meta device (no memory, so xxlarge costs nothing)."""
    with torch.device("meta"):
        backbone = Backbone(config)
    embedding = _numel(backbone.embeddings)
    projection = _numel(backbone.projection)
    final_norm = _numel(backbone.final_norm)
    executed_layers = sum(_numel(layer) for layer in backbone.layers)  # a shared layer counts once per use
    executed_matmul = matmul_weights(backbone.projection) + sum(matmul_weights(layer) for layer in backbone.layers)
    return {
        "backbone_params": _numel(backbone),  # parameters() yields a shared tensor once: unique count
        "embedding_params": embedding,
        "projection_params": projection,
        "encoder_params_unique": _numel(backbone.layers) + final_norm,
        "executed_params": embedding + projection + executed_layers + final_norm,
        "executed_matmul_weights": executed_matmul,
    }


def flops_per_token(config: ModelConfig, seq_len: int, executed_matmul_weights: int,
                    head_matmul_weights: int = 0, head_fraction: float = 1.0) -> dict:
    """Training FLOPs per token: 6 x executed matmul weights (forward 2, backward 4) + attention scores and mixing
    (12 L H T: forward QK^T and AV are 2 T H each per layer) + heads at the fraction of tokens they run on."""
    backbone = 6 * executed_matmul_weights + 12 * config.num_layers * config.hidden_size * seq_len
    heads = 6 * head_matmul_weights * head_fraction
    return {"train_flops_per_token_backbone": backbone, "train_flops_per_token": backbone + heads}


def count_knowledge(config: ModelConfig, knowledge: KnowledgeConfig, seq_len: int) -> dict:
    """What ERNIE-style fusion adds to the backbone (both built on the meta device): parameters, executed matmul
    weights and training FLOPs per token. Entity attention runs over all T positions (masked, as implemented), at
    width d_e: 12 d_e T per layer that has it, as the token attention's 12 H T. The frozen entity table is a buffer,
    not a parameter. dEA's head is counted with the objective's heads (its FLOPs at the masking fraction, a stand-in
    for the share of aligned tokens; its scores against the batch's candidates depend on the batch and are left out)."""
    with torch.device("meta"):
        plain = Backbone(config)
        fused = KnowledgeBackbone(config, knowledge, torch.empty(1, knowledge.entity_dim))
    added_matmul = sum(matmul_weights(layer) for layer in fused.layers) - \
        sum(matmul_weights(layer) for layer in plain.layers)
    aggregators = config.num_layers - fused.first_aggregator
    attention_layers = aggregators - 1  # the first aggregator has no entity self-attention
    return {
        "knowledge_aggregator_layers": aggregators,
        "knowledge_params": _numel(fused) - _numel(plain),
        "knowledge_executed_matmul_weights": added_matmul,
        "knowledge_train_flops_per_token": 6 * added_matmul + 12 * attention_layers * knowledge.entity_dim * seq_len,
    }
