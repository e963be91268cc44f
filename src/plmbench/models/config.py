"""The backbone's shape as a small typed dataclass, checked before anything is built.

Every ablation axis of the papers is one field here: embedding size E (factorised when E != H), cross-layer sharing,
norm placement (post-LN BERT/ALBERT/ELECTRA, pre-LN GPT-2) and causality. Hydra composes the values from the
`model`, `size`, `embedding` and `sharing` groups; `ModelConfig.from_mapping` checks them and names the key at fault.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

SHARING_MODES = ("none", "attention", "ffn", "all")
NORM_PLACEMENTS = ("post", "pre")
ACTIVATIONS = ("gelu", "gelu_new", "relu")
FAMILIES = ("albert", "bert", "roberta", "electra", "gpt2", "elmo")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is one line naming the key and what is allowed."""


@dataclass(frozen=True)
class ModelConfig:
    family: str = "bert"  # the Hugging Face family this shape exports to
    vocab_size: int = 30000
    max_positions: int = 512
    type_vocab_size: int = 2  # segments A/B; 0 for GPT-2, which has no segment embeddings
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_size: int = 3072
    embedding_size: int = 768
    sharing: str = "none"
    norm: str = "post"
    causal: bool = False
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    embedding_norm: bool = True  # LayerNorm after summing embeddings (BERT family); GPT-2 has none
    scale_residual_init: bool = False  # GPT-2: residual output projections initialised with std / sqrt(2L)

    @property
    def factorized(self) -> bool:
        return self.embedding_size != self.hidden_size

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_mapping(cls, values: Mapping, prefix: str = "model") -> ModelConfig:
        """Build from a config node, ignoring keys that are not shape (name, notes), then validate."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in dict(values).items() if k in known})
        config.validate(prefix)
        return config

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def validate(self, prefix: str = "model") -> None:
        for key in ("vocab_size", "max_positions", "hidden_size", "num_layers", "num_heads", "ffn_size",
                    "embedding_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{prefix}.{key}={value!r}: must be a positive integer")
        if self.type_vocab_size < 0:
            raise ConfigError(f"{prefix}.type_vocab_size={self.type_vocab_size}: must be >= 0")
        _require_choice(prefix, "sharing", self.sharing, SHARING_MODES)
        _require_choice(prefix, "norm", self.norm, NORM_PLACEMENTS)
        _require_choice(prefix, "activation", self.activation, ACTIVATIONS)
        _require_choice(prefix, "family", self.family, FAMILIES)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{prefix}.hidden_size={self.hidden_size} is not divisible by {prefix}.num_heads={self.num_heads}: "
                f"allowed head counts are divisors of {self.hidden_size}")
        if self.sharing != "none" and self.num_layers < 2:
            raise ConfigError(
                f"{prefix}.sharing={self.sharing} with {prefix}.num_layers=1: sharing needs at least 2 layers "
                "(use sharing=none)")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)}: must be in [0, 1)")


def _require_choice(prefix: str, key: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{prefix}.{key}={value!r}: allowed values are {', '.join(allowed)}")
