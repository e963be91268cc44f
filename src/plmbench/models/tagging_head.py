"""Token tagging (NER): a per-token Linear(H, num_labels) on the backbone's states, as BERT tags CoNLL-2003.

Only the first piece of each word carries a label (plmbench.data.features); the other pieces, special
tokens and padding hold -100 and are ignored by the loss, and the word's tag is read off its first piece.
"""

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models.config import ModelConfig


class TaggingHead(nn.Module):
    """(B, T, H) -> (B, T, num_labels); the constructor matches task_heads.HEADS (config, num_labels)."""

    def __init__(self, config: ModelConfig, num_labels: int, hidden_size: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(hidden_size or config.hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels = batch["labels"]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)
