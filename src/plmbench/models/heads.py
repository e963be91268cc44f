"""Pre-training heads on top of the backbone: MLM, sentence (NSP/SOP), causal LM and ELECTRA's discriminator.

The MLM head can run on masked positions only (the `impl.mlm_masked_only` speed option): the decoder to the full
vocabulary is the most expensive matrix product of a BERT step, and unmasked positions carry no loss.
"""

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models.config import ModelConfig
from plmbench.models.layers import ACTIVATIONS


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): BERT's and ALBERT's pooled output, used by sentence and classification heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class MLMHead(nn.Module):
    """transform (H -> E, activation, LayerNorm) then a decoder tied to the input token embeddings (E -> V)."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.act = ACTIVATIONS[config.activation]()
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.word_embeddings = word_embeddings  # tied: the same module instance as the backbone's
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), self.word_embeddings.weight, self.bias)

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor, masked_only: bool = True,
             cross_entropy=F.cross_entropy):
        """Cross-entropy over predicted positions; returns (loss, logits, labels) for the positions scored."""
        if masked_only:
            selected = labels != IGNORE_INDEX
            hidden, labels = hidden[selected], labels[selected]
        logits = self(hidden)
        loss = cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                             ignore_index=IGNORE_INDEX)
        return loss, logits, labels


class SentenceHead(nn.Module):
    """Pooler + a 2-way classifier on [CLS]: NSP (BERT) or SOP (ALBERT). Label 0 = in order / is next."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(hidden)))


class CausalLMHead(nn.Module):
    """GPT-2's LM head: the token embedding matrix as output projection, no bias."""

    def __init__(self, word_embeddings: nn.Embedding):
        super().__init__()
        self.word_embeddings = word_embeddings

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.word_embeddings.weight)


class DiscriminatorHead(nn.Module):
    """ELECTRA: per-token logit of 'this token was replaced'."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.activation]()
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.act(self.dense(hidden))).squeeze(-1)
