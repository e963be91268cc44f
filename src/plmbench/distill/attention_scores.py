"""A backbone forward that also returns what TinyBERT distils: every layer's hidden states and attention scores.

`SelfAttention` hands its work to PyTorch's SDPA kernels, which never expose the scores. `trace_backbone` runs the
same backbone layer by layer with the same modules (embeddings, projection, qkv, out, norms, FFN) and computes
attention explicitly, so the scores QK^T / sqrt(d) come out before the softmax. It must compute exactly what
`Backbone.forward` computes: tests/test_distill.py checks the last hidden state against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from plmbench.models.backbone import Backbone
from plmbench.models.layers import PostNorm, PreNorm, SelfAttention


@dataclass
class Trace:
    hidden_states: list[torch.Tensor]  # [embedding output (after the E -> H projection), layer 1, ..., layer L]
    scores: list[torch.Tensor]  # per layer, (B, heads, T, T): QK^T / sqrt(d), keys the mask hides at the dtype's min
    last_hidden: torch.Tensor  # what Backbone.forward returns (pre-LN stacks: after the final LayerNorm)


def allowed_keys(attention_mask: torch.Tensor | None, causal: bool, batch: int, length: int,
                 device: torch.device) -> torch.Tensor:
    """(B, 1, T, T) booleans, True where a query may attend to a key: the same rule as the SDPA path."""
    keys = torch.ones(batch, 1, 1, length, dtype=torch.bool, device=device) if attention_mask is None \
        else attention_mask[:, None, None, :].bool()
    if causal:
        keys = keys & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return keys.expand(batch, 1, length, length)


def attend(attention: SelfAttention, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention output, masked scores) of one SelfAttention module, computed without SDPA."""
    batch, length, hidden = x.shape
    q, k, v = attention.qkv(x).view(batch, length, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    # The most negative finite value rather than -inf: the softmax gives these keys zero weight all the same,
    # and a loss that forgets the mask still sees finite numbers.
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = F.dropout(scores.softmax(-1), attention.dropout_p, attention.training)
    context = (probs @ v).transpose(1, 2).reshape(batch, length, hidden)
    return attention.out(context), scores


def _post_norm(sublayer: PostNorm, x: torch.Tensor, allowed: torch.Tensor):
    out, scores = attend(sublayer.inner, x, allowed)
    return sublayer.norm(x + sublayer.dropout(out)), scores


def _pre_norm(sublayer: PreNorm, x: torch.Tensor, allowed: torch.Tensor):
    out, scores = attend(sublayer.inner, sublayer.norm(x), allowed)
    return x + sublayer.dropout(out), scores


ATTENTION_SUBLAYERS = {PostNorm: _post_norm, PreNorm: _pre_norm}  # the residual wrapper decides the norm placement


def trace_backbone(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   token_type_ids: torch.Tensor | None = None) -> Trace:
    x = backbone.projection(backbone.embeddings(input_ids, token_type_ids))
    allowed = allowed_keys(attention_mask, backbone.config.causal, *input_ids.shape, input_ids.device)
    hidden_states, scores = [x], []
    for layer in backbone.layers:
        x, layer_scores = ATTENTION_SUBLAYERS[type(layer.attention)](layer.attention, x, allowed)
        x = layer.ffn(x, attention_mask)  # the FFN sublayer has nothing to expose: its own forward
        hidden_states.append(x)
        scores.append(layer_scores)
    return Trace(hidden_states, scores, backbone.final_norm(x))


def last_hidden_only(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     token_type_ids: torch.Tensor | None = None) -> Trace:
    """The plain (SDPA) forward as a Trace with no per-layer lists: for losses that need the last layer only."""
    return Trace([], [], backbone(input_ids, attention_mask, token_type_ids))
