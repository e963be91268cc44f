"""ELMo's bidirectional LSTM language model (Peters et al. 2018), without the character CNN.

Token embeddings, shared by both directions, feed an L-layer forward LSTM and a separate L-layer backward LSTM
(ELMo: L = 2). Each layer after the first adds its input to its output (ELMo's residual connection between LSTM
layers); an LSTM whose cell is wider than its output projects it down (ELMo: 4096 cells projected to 512). One
softmax, shared by both directions, predicts the next token from the forward states and the previous token from
the backward states.

The shape comes from plmbench's ModelConfig, so the pre-training pipeline builds it like any backbone:
  embedding_size  E, the token embeddings (projected to H when E != H, as the character CNN's output was)
  hidden_size     H, each direction's LSTM output (the projection size)
  ffn_size        the LSTM cell size (no projection when it equals H)
  num_layers      L, the LSTM layers per direction
  dropout         between layers and before the softmax
The softmax is tied to the token embeddings when E = H, otherwise it is a Linear(H, V) of its own.

Layer representations for downstream use (`layers`): layer 0 is the token representation repeated for both
directions [x; x], layer j the concatenated states [h_fwd_j; h_bwd_j], all of width 2H. `ScalarMix` combines them
as ELMo's gamma * sum_j softmax(w)_j h_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.models.config import ConfigError, ModelConfig


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each right-padded sequence of (B, T, ...) reversed within its own length; padding stays where it is.
    Applying it twice gives x back."""
    positions = torch.arange(x.shape[1], device=x.device)[None, :]
    source = lengths[:, None] - 1 - positions
    source = torch.where(source >= 0, source, positions)
    return x.gather(1, source.view(*source.shape, *([1] * (x.dim() - 2))).expand_as(x))


class LstmStack(nn.Module):
    """L unidirectional LSTM layers, each after the first with a residual connection; returns every layer."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        projection = config.hidden_size if config.ffn_size != config.hidden_size else 0
        self.layers = nn.ModuleList(
            nn.LSTM(config.hidden_size, config.ffn_size, proj_size=projection, batch_first=True)
            for _ in range(config.num_layers))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, lstm in enumerate(self.layers):
            h = lstm(x)[0]
            if index > 0:
                h = h + x
            outputs.append(h)
            x = self.dropout(h)
        return outputs


@dataclass
class BiLMOutput:
    forward: torch.Tensor  # (B, T, H) top forward states: position t has read tokens <= t
    backward: torch.Tensor  # (B, T, H) top backward states: position t has read tokens >= t
    layers: list[torch.Tensor]  # L + 1 tensors (B, T, 2H): [x; x], then [h_fwd_j; h_bwd_j]


class BiLanguageModel(nn.Module):
    """The biLM encoder: embeddings and both LSTM stacks (the part downstream tasks reuse)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.ffn_size < config.hidden_size:
            raise ConfigError(f"model.ffn_size={config.ffn_size} < model.hidden_size={config.hidden_size}: the "
                              "biLM's LSTM cell (ffn_size) is projected down to hidden_size; it must be as wide")
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.embedding_size)
        nn.init.normal_(self.word.weight, 0.0, config.init_std)
        self.projection = nn.Linear(config.embedding_size, config.hidden_size) if config.factorized \
            else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.forward_lstm = LstmStack(config)
        self.backward_lstm = LstmStack(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> BiLMOutput:
        if attention_mask is None:
            lengths = torch.full((input_ids.shape[0],), input_ids.shape[1], device=input_ids.device)
        else:
            lengths = attention_mask.long().sum(dim=1)
        tokens = self.projection(self.word(input_ids))
        x = self.dropout(tokens)
        forward = self.forward_lstm(x)  # right padding comes after every real token: it cannot leak backwards
        backward = [reverse_padded(h, lengths) for h in self.backward_lstm(reverse_padded(x, lengths))]
        layers = [torch.cat([tokens, tokens], dim=-1)] + [torch.cat(pair, dim=-1) for pair in zip(forward, backward)]
        return BiLMOutput(forward=forward[-1], backward=backward[-1], layers=layers)


class SharedSoftmax(nn.Module):
    """One output layer for both directions: tied to the token embeddings when E = H, else Linear(H, V)."""

    def __init__(self, config: ModelConfig, word: nn.Embedding):
        super().__init__()
        self.word = word if not config.factorized else None  # tied: the same module instance as the encoder's
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False) if config.factorized else None
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.word.weight if self.word is not None else self.decoder.weight
        return F.linear(hidden, weight, self.bias)


class ScalarMix(nn.Module):
    """ELMo's task-specific layer combination: gamma * sum_j softmax(w)_j * layer_j (w = 0, gamma = 1 at start)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        if len(layers) != len(self.weights):
            raise ValueError(f"ScalarMix over {len(self.weights)} layers was given {len(layers)}")
        s = torch.softmax(self.weights, dim=0)
        return self.gamma * sum(w * layer for w, layer in zip(s, layers))


def bilm_counts(config: ModelConfig, seq_len: int) -> dict:
    """Parameter and training-FLOP counts with describe_config's keys, for an ELMo cell (the Transformer counts of
    plmbench.models.counting do not apply). FLOPs per token: 6 x the executed matmul weights (each LSTM weight
    runs once per token and direction), plus the shared softmax over the vocabulary for both directions."""
    with torch.device("meta"):
        encoder = BiLanguageModel(config)
        softmax = SharedSoftmax(config, encoder.word)
    embedding = encoder.word.weight.numel()
    projection = sum(p.numel() for p in encoder.projection.parameters())
    lstm_weights = sum(p.numel() for name, p in encoder.named_parameters() if "lstm" in name and "weight" in name)
    matmul = lstm_weights + (encoder.projection.weight.numel() if config.factorized else 0)
    head = 2 * config.vocab_size * config.hidden_size  # the softmax runs for both directions
    backbone = 6 * matmul
    return {
        "backbone_params": sum(p.numel() for p in encoder.parameters()),
        "embedding_params": embedding,
        "projection_params": projection,
        "encoder_params_unique": sum(p.numel() for name, p in encoder.named_parameters() if "lstm" in name),
        "executed_params": sum(p.numel() for p in encoder.parameters()),
        "executed_matmul_weights": matmul,
        "params_with_pretraining_heads": sum(p.numel() for p in encoder.parameters())
        + sum(p.numel() for name, p in softmax.named_parameters() if not name.startswith("word")),
        "seq_len": seq_len,
        "train_flops_per_token_backbone": backbone,
        "train_flops_per_token": backbone + 6 * head,
    }
