"""ERNIE-style knowledge fusion (Zhang et al., ACL 2019; thunlp/ERNIE code/knowledge_bert/modeling.py).

The top M layers of the backbone become aggregator layers. Each one runs the backbone's own token self-attention
and, over the sequence of aligned entity vectors (width 100), an entity self-attention of its own (4 heads); the two
are fused in the feed-forward sublayer:

    h = act(W_t token + b_t + W_e entity + b_e)     at positions aligned to an entity
    h = act(W_t token + b_t)                        elsewhere: exactly the plain layer's FFN input
    token  out = LayerNorm(token  + W_down h + b)   the backbone's own FFN output sublayer
    entity out = LayerNorm(entity + W_e' h + b_e')  ERNIE's BertOutput.dense_ent / LayerNorm_ent

The first aggregator layer has no entity self-attention: its entity input is the frozen TransE vector itself
(ERNIE's BertLayerMix). Entities arrive as `entity_ids` (B, T), the entity's row in the table at the first
sub-word of its mention and -1 elsewhere (ERNIE's `input_ent` with `ent_mask`). With `cls_slot`, [CLS] (position
0) is an entity slot holding the zero vector, as ERNIE sets it in pre-training and in every fine-tuning script
(run_pretrain.py `mask[:, 0] = 1` beside its zero "CLS" row; run_typing.py `ent_mask[0] = 1`): [CLS] takes part in
the entity self-attention and fuses what it gathers, so a sentence's entities reach the pooled state directly.

One deliberate difference from ERNIE: ERNIE zeroes a missing entity's vector but still adds `dense_ent`'s bias b_e
to every position, so a sentence without entities does not run the plain BERT layer. Here the whole entity term is
selected away where there is no entity slot, so with no entity in the batch (and no [CLS] slot) an aggregator layer
*is* the plain layer (same weights, same numbers), and the fused model starts from, and falls back to, its backbone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from plmbench.models.backbone import Backbone
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.models.embeddings import Embeddings
from plmbench.models.layers import PostNorm, SelfAttention, init_weights


@dataclass(frozen=True)
class KnowledgeConfig:
    """The `knowledge` config group; dEA's corruption rates live here too, beside the fusion they train."""

    enabled: bool = False
    entity_dim: int = 100  # TransE's width in ERNIE
    entity_heads: int = 4  # ERNIE's config_ent.num_attention_heads
    aggregator_layers: int | None = None  # the top M layers; None = the top half (ERNIE: 6 of 12)
    shuffle: bool = False  # control: permute the table's rows (same parameters, no knowledge)
    shuffle_seed: int = 0
    cls_slot: bool = False  # [CLS] as an entity slot with the zero vector (ERNIE); the knowledge=ernie options set it
    replace_rate: float = 0.05  # dEA: aligned entities replaced by a random in-batch entity
    mask_rate: float = 0.15  # dEA: aligned entities removed from the input
    entity_table: str | None = None  # a file holding the (n_entities, entity_dim) TransE table

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> KnowledgeConfig:
        """From the `knowledge` node (None or absent = disabled); keys that are not fields (name, notes) ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in known})

    def aggregator_count(self, model: ModelConfig) -> int:
        return model.num_layers // 2 if self.aggregator_layers is None else int(self.aggregator_layers)

    def validate(self, model: ModelConfig, prefix: str = "knowledge") -> None:
        count = self.aggregator_count(model)
        if not 1 <= count <= model.num_layers:
            raise ConfigError(f"{prefix}.aggregator_layers={count}: must be in 1..model.num_layers={model.num_layers}")
        if self.entity_dim % self.entity_heads:
            raise ConfigError(f"{prefix}.entity_dim={self.entity_dim} is not divisible by "
                              f"{prefix}.entity_heads={self.entity_heads}")
        if model.norm != "post" or model.causal:
            raise ConfigError(f"{prefix}.enabled=true with model.norm={model.norm}, model.causal={model.causal}: "
                              "the aggregator layers fuse into a post-LN bidirectional encoder (ERNIE is BERT)")
        for key in ("replace_rate", "mask_rate"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)}: must be in [0, 1]")
        if self.replace_rate + self.mask_rate > 1.0:
            raise ConfigError(f"{prefix}.replace_rate + {prefix}.mask_rate = "
                              f"{self.replace_rate + self.mask_rate}: must be at most 1")


class AggregatorLayer(nn.Module):
    """A backbone layer (its attention and FFN sublayers, the same instances) plus ERNIE's entity parts."""

    def __init__(self, attention: nn.Module, ffn: PostNorm, config: ModelConfig, knowledge: KnowledgeConfig,
                 entity_attention: bool):
        super().__init__()
        self.attention = attention
        self.ffn = ffn
        entity_shape = config.replace(hidden_size=knowledge.entity_dim, num_heads=knowledge.entity_heads,
                                      causal=False)
        # ERNIE's BertAttention.self_ent + output_ent: self-attention, dense, dropout, residual, LayerNorm.
        self.entity_attention = PostNorm(SelfAttention(entity_shape), entity_shape) if entity_attention else None
        self.entity_in = nn.Linear(knowledge.entity_dim, config.ffn_size)  # BertIntermediate.dense_ent
        self.entity_out = nn.Linear(config.ffn_size, knowledge.entity_dim)  # BertOutput.dense_ent
        self.entity_norm = nn.LayerNorm(knowledge.entity_dim, eps=config.layer_norm_eps)  # BertOutput.LayerNorm_ent
        self.entity_dropout = nn.Dropout(config.dropout)

    def entity_modules(self) -> list[nn.Module]:
        """The parameters this layer adds to the backbone's (initialised apart: the sublayers may be shared)."""
        return [m for m in (self.entity_attention, self.entity_in, self.entity_out, self.entity_norm) if m is not None]

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, entities: torch.Tensor,
                has_entity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.attention(x, attention_mask)
        present = has_entity.unsqueeze(-1)
        if self.entity_attention is not None:
            entities = self.entity_attention(entities, entity_key_mask(has_entity))
        entities = torch.where(present, entities, 0.0)  # ERNIE: attention_output_ent * ent_mask
        # The backbone's FFN sublayer (PostNorm around FeedForward), with the entity term added before the activation.
        ffn = self.ffn.inner
        fused = ffn.act(ffn.up(x) + torch.where(present, self.entity_in(entities), 0.0))
        tokens = self.ffn.norm(x + self.ffn.dropout(ffn.down(fused)))
        entities = self.entity_norm(entities + self.entity_dropout(self.entity_out(fused)))
        return tokens, torch.where(present, entities, 0.0)


def entity_slots(entity_ids: torch.Tensor, cls_slot: bool) -> torch.Tensor:
    """ERNIE's ent_mask: positions aligned to an entity, and [CLS] (position 0) with `cls_slot`."""
    slots = entity_ids >= 0
    if cls_slot:
        slots = slots.clone()
        slots[:, 0] = True
    return slots


def entity_key_mask(has_entity: torch.Tensor) -> torch.Tensor:
    """Entities attend only to entities (ERNIE's attention_mask_ent). A row with none attends everywhere instead:
    an all-masked softmax is NaN, and that row's outputs are zeroed anyway (ERNIE marks [CLS] as an entity)."""
    return has_entity | ~has_entity.any(dim=-1, keepdim=True)


class KnowledgeBackbone(Backbone):
    """A Backbone whose top M layers are aggregator layers; forward takes `entity_ids` (B, T), -1 = none.

    The layer list keeps its shape and names (`layers.<i>.attention`, `layers.<i>.ffn`), so the backbone's own
    weights load into a plain Backbone; the entity parts are extra keys. The entity table is a buffer: frozen, in
    the checkpoint, outside parameter counts and the optimiser."""

    def __init__(self, config: ModelConfig, knowledge: KnowledgeConfig, entity_table: torch.Tensor,
                 embeddings: Embeddings | None = None):
        knowledge.validate(config)
        if entity_table.dim() != 2 or entity_table.shape[1] != knowledge.entity_dim:
            raise ConfigError(f"knowledge.entity_table: shape {tuple(entity_table.shape)}, expected "
                              f"(n_entities, knowledge.entity_dim={knowledge.entity_dim})")
        super().__init__(config, embeddings)
        self.knowledge = knowledge
        self.first_aggregator = config.num_layers - knowledge.aggregator_count(config)
        for index in range(self.first_aggregator, config.num_layers):
            plain = self.layers[index]
            layer = AggregatorLayer(plain.attention, plain.ffn, config, knowledge,
                                    entity_attention=index > self.first_aggregator)  # the first: BertLayerMix
            for module in layer.entity_modules():
                init_weights(module, config)
            self.layers[index] = layer
        self.register_buffer("entity_table", shuffled(entity_table, knowledge) if knowledge.shuffle else entity_table)

    def entity_vectors(self, entity_ids: torch.Tensor) -> torch.Tensor:
        vectors = self.entity_table[entity_ids.clamp(min=0)]
        return torch.where((entity_ids >= 0).unsqueeze(-1), vectors, 0.0).to(self.entity_table.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, entity_ids: torch.Tensor | None = None) -> torch.Tensor:
        if entity_ids is None:
            entity_ids = torch.full_like(input_ids, -1)
        x = self.projection(self.embeddings(input_ids, token_type_ids))
        for layer in self.layers[:self.first_aggregator]:
            x = layer(x, attention_mask)
        entities, has_entity = self.entity_vectors(entity_ids), entity_slots(entity_ids, self.knowledge.cls_slot)
        for layer in self.layers[self.first_aggregator:]:
            x, entities = layer(x, attention_mask, entities, has_entity)
        return self.final_norm(x)


def shuffled(entity_table: torch.Tensor, knowledge: KnowledgeConfig) -> torch.Tensor:
    """The control row: every entity gets another entity's vector, by a fixed permutation (seeded)."""
    generator = torch.Generator().manual_seed(knowledge.shuffle_seed)
    order = torch.randperm(entity_table.shape[0], generator=generator).to(entity_table.device)
    return entity_table[order]


def load_entity_table(path: str, knowledge: KnowledgeConfig) -> torch.Tensor:
    """A 2-D float tensor saved with torch.save (or a .npy array): row i is entity i's TransE vector."""
    if str(path).endswith(".npy"):
        import numpy as np

        table = torch.from_numpy(np.load(path))
    else:
        table = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(table, torch.Tensor) or table.dim() != 2 or table.shape[1] != knowledge.entity_dim:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ConfigError(f"knowledge.entity_table={path}: holds {shape}, expected a tensor of shape "
                          f"(n_entities, {knowledge.entity_dim})")
    return table.float()


def plain_backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A KnowledgeBackbone's state dict less its entity parts (`entity_table` and every `layers.<i>.entity_*`): the
    weights of the plain Backbone it was built on. Fine-tuning a fused run without entities loads these; that is
    exact, since an aggregator layer given no entity is the plain layer (see the module docstring)."""
    return {key: value for key, value in state.items() if not any(part.startswith("entity_") for part in
                                                                   key.split("."))}
