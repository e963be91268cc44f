"""ERNIE's denoising entity auto-encoder (dEA), added to MLM (+ NSP/SOP): KnowledgeMaskedLM.

Input side (thunlp/ERNIE code/run_pretrain.py, collate_fn's `map`): of the aligned entities, 5% are replaced by a
random entity of the batch, 15% are removed (the token keeps no entity), the rest are kept. Output side
(modeling.py's BertEntPredictionHead): every aligned token's final state, transformed to the entity width
(dense, activation, LayerNorm), is scored by dot product against the batch's distinct entities (their frozen
TransE vectors), and a softmax over them predicts the token's original entity.

The batch carries `entity_ids` (B, T) long: the entity's row in the table at the first sub-word of its mention,
-1 elsewhere. Corruption happens here, inside the objective, each step afresh, from torch's generator (the
pre-training module saves and restores it across validation and checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.models.config import ModelConfig
from plmbench.models.knowledge_fusion import KnowledgeBackbone, KnowledgeConfig
from plmbench.models.layers import ACTIVATIONS, init_weights
from plmbench.objectives.mlm import MaskedLM

NO_ENTITY = -1


def corrupt_entities(entity_ids: torch.Tensor, replace_rate: float, mask_rate: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """ERNIE's corruption: one uniform draw per aligned entity; below replace_rate it becomes a random entity of
    the batch (possibly itself, as in ERNIE), below replace_rate + mask_rate it is removed (-1), else kept."""
    aligned = entity_ids >= 0
    candidates = torch.unique(entity_ids[aligned])
    if candidates.numel() == 0:
        return entity_ids.clone()
    draw = torch.rand(entity_ids.shape, generator=generator, device=entity_ids.device)
    pick = torch.randint(candidates.numel(), entity_ids.shape, generator=generator, device=entity_ids.device)
    replaced = aligned & (draw < replace_rate)
    removed = aligned & (draw >= replace_rate) & (draw < replace_rate + mask_rate)
    corrupted = torch.where(replaced, candidates[pick], entity_ids)
    return torch.where(removed, torch.full_like(entity_ids, NO_ENTITY), corrupted)


class EntityPredictionHead(nn.Module):
    """ERNIE's BertEntPredictionHead: H -> d_e, activation, LayerNorm, then dot products with the candidates."""

    def __init__(self, config: ModelConfig, entity_dim: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, entity_dim)
        self.act = ACTIVATIONS[config.activation]()
        self.norm = nn.LayerNorm(entity_dim, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(hidden))) @ candidates.to(hidden.dtype).t()

    def loss(self, hidden: torch.Tensor, entity_ids: torch.Tensor, entity_table: torch.Tensor) -> dict:
        """Cross-entropy of every aligned token's original entity among the batch's distinct entities."""
        aligned = entity_ids >= 0
        candidates, labels = torch.unique(entity_ids[aligned], return_inverse=True)
        if candidates.numel() == 0:  # no entity in the batch: no loss, nothing counted
            zero = hidden.new_zeros(())
            return {"dea_loss": zero, "dea_correct": zero.long(), "dea_count": zero.long()}
        logits = self(hidden[aligned], entity_table[candidates])
        return {"dea_loss": F.cross_entropy(logits.float(), labels),
                "dea_correct": (logits.argmax(-1) == labels).sum(), "dea_count": labels.new_tensor(labels.numel())}


class KnowledgeMaskedLM(MaskedLM):
    """MaskedLM on a KnowledgeBackbone, plus dEA: returns MaskedLM's keys and dea_loss, dea_correct, dea_count;
    `loss` = MLM (+ NSP/SOP) + dEA, each weighted 1 as in ERNIE's BertForPreTraining."""

    def __init__(self, config: ModelConfig, knowledge: KnowledgeConfig, entity_table: torch.Tensor,
                 sentence_task: str = "none", masked_only: bool = True, cross_entropy=F.cross_entropy):
        super().__init__(config, sentence_task=sentence_task, masked_only=masked_only, cross_entropy=cross_entropy,
                         backbone=KnowledgeBackbone(config, knowledge, entity_table))
        self.knowledge = knowledge
        self.entity_head = EntityPredictionHead(config, knowledge.entity_dim)
        init_weights(self.entity_head, config)

    def trained_head_modules(self) -> list[nn.Module]:
        return super().trained_head_modules() + [self.entity_head]

    def forward(self, batch: dict) -> dict:
        entity_ids = batch.get("entity_ids")
        if entity_ids is None:
            entity_ids = torch.full_like(batch["input_ids"], NO_ENTITY)
        corrupted = corrupt_entities(entity_ids, self.knowledge.replace_rate, self.knowledge.mask_rate)
        hidden = self.backbone(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                               entity_ids=corrupted)
        out = self.pretraining_losses(hidden, batch)
        dea = self.entity_head.loss(hidden, entity_ids, self.backbone.entity_table)
        return {**out, **dea, "loss": out["loss"] + dea["dea_loss"]}
