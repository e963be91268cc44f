"""The backbone every ablation varies: embeddings (+ E -> H projection when factorised) and the layer stack."""

import torch
from torch import nn

from plmbench.models.config import ModelConfig
from plmbench.models.embeddings import Embeddings
from plmbench.models.layers import init_weights
from plmbench.models.sharing import build_layers


class Backbone(nn.Module):
    """Returns the last hidden states (B, T, H). Pass `embeddings` to reuse another model's (ELECTRA)."""

    def __init__(self, config: ModelConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.config = config
        self.layers = build_layers(config)
        # Pre-LN stacks end with a LayerNorm (GPT-2's ln_f); post-LN stacks are already normalised.
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) \
            if config.norm == "pre" else nn.Identity()
        self.projection = nn.Linear(config.embedding_size, config.hidden_size) if config.factorized else nn.Identity()
        init_weights(self, config)
        self.embeddings = embeddings if embeddings is not None else Embeddings(config)
        if embeddings is None:
            init_weights(self.embeddings, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.projection(self.embeddings(input_ids, token_type_ids))
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.final_norm(x)
