"""One Transformer layer = an attention sublayer and a feed-forward sublayer, each wrapped in its residual + norm.

The two sublayers are separate modules so that cross-layer sharing can reuse either one (or both) across layers:
see sharing.py. Norm placement is chosen by picking the residual wrapper class, never by branching in forward().
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.models.config import ModelConfig

ACTIVATIONS = {
    "gelu": nn.GELU,  # BERT: exact erf GELU
    "gelu_new": lambda: nn.GELU(approximate="tanh"),  # ALBERT, GPT-2
    "relu": nn.ReLU,
}


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and PyTorch's SDPA kernels."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.causal = config.causal
        self.dropout_p = config.attention_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.out.is_residual_projection = True  # GPT-2 scales its init

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        mask, is_causal = _sdpa_mask(attention_mask, self.causal, length, x.device)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0, is_causal=is_causal)
        return self.out(context.transpose(1, 2).reshape(batch, length, hidden))


def _sdpa_mask(attention_mask, causal: bool, length: int, device):
    """Boolean mask (True = may attend) for SDPA; None whenever a kernel flag can express it (faster kernels)."""
    if attention_mask is None:
        return None, causal
    keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T): padding keys are never attended
    if causal:
        keys = keys & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return keys, False


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.ffn_size)
        self.act = ACTIVATIONS[config.activation]()
        self.down = nn.Linear(config.ffn_size, config.hidden_size)
        self.down.is_residual_projection = True

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class PostNorm(nn.Module):
    """x -> LayerNorm(x + dropout(f(x))): BERT, ALBERT, ELECTRA."""

    def __init__(self, inner: nn.Module, config: ModelConfig):
        super().__init__()
        self.inner = inner
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, attention_mask=None):
        return self.norm(x + self.dropout(self.inner(x, attention_mask)))


class PreNorm(nn.Module):
    """x -> x + dropout(f(LayerNorm(x))): GPT-2 (the stack then ends with a final LayerNorm)."""

    def __init__(self, inner: nn.Module, config: ModelConfig):
        super().__init__()
        self.inner = inner
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, attention_mask=None):
        return x + self.dropout(self.inner(self.norm(x), attention_mask))


RESIDUALS = {"post": PostNorm, "pre": PreNorm}


def attention_sublayer(config: ModelConfig) -> nn.Module:
    return RESIDUALS[config.norm](SelfAttention(config), config)


def ffn_sublayer(config: ModelConfig) -> nn.Module:
    return RESIDUALS[config.norm](FeedForward(config), config)


class TransformerLayer(nn.Module):
    """Holds references to its two sublayers; several layers may hold the same instances (sharing)."""

    def __init__(self, attention: nn.Module, ffn: nn.Module):
        super().__init__()
        self.attention = attention
        self.ffn = ffn

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ffn(self.attention(x, attention_mask), attention_mask)


def init_weights(module: nn.Module, config: ModelConfig) -> None:
    """BERT/GPT-2 initialisation: N(0, std) weights, zero biases, unit LayerNorms; GPT-2 scales residual outputs."""
    residual_std = config.init_std / math.sqrt(2 * config.num_layers)
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            std = residual_std if config.scale_residual_init and getattr(sub, "is_residual_projection", False) \
                else config.init_std
            nn.init.normal_(sub.weight, 0.0, std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, 0.0, config.init_std)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
