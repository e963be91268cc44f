"""Input embeddings: tokens of size E, learned absolute positions, segments, then LayerNorm and dropout.

The E -> H projection (ALBERT's factorisation) lives in the backbone, not here, so that ELECTRA's generator can reuse
this very module instance (shared token and position embeddings) with a projection of its own.
"""

import torch
from torch import nn

from plmbench.models.config import ModelConfig


class Embeddings(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        size = config.embedding_size
        self.word = nn.Embedding(config.vocab_size, size)
        self.position = nn.Embedding(config.max_positions, size)
        # GPT-2 has no segment embeddings; an absent table is None rather than a zero-size module.
        self.segment = nn.Embedding(config.type_vocab_size, size) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(size, eps=config.layer_norm_eps) if config.embedding_norm else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer("position_ids", torch.arange(config.max_positions), persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.word(input_ids) + self.position(self.position_ids[:length])
        if self.segment is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.segment(token_type_ids)
        return self.dropout(self.norm(x))
