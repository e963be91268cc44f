"""Downstream models on ELMo's biLM: a ScalarMix of its layers, pooled (mean or max over real tokens) into a linear
classifier, or tagged per token.

`freeze=True` is ELMo's feature-based use: the biLM's weights stay fixed and its dropout off, and only the mix
(softmax weights and gamma) and the classifier learn. `freeze=False` fine-tunes the biLM with them.
forward(batch) -> {"logits", and "loss" when the batch has labels}, as plmbench.models.task_heads.TaskModel, so
the fine-tuning module trains either one.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.models.config import ModelConfig
from plmbench.models.elmo import BiLanguageModel, ScalarMix
from plmbench.models.layers import init_weights
from plmbench.models.tagging_head import TaggingHead


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


def max_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return states.masked_fill(~mask.bool()[..., None], torch.finfo(states.dtype).min).max(dim=1).values


POOLS = {"mean": mean_pool, "max": max_pool}


class PooledClassifier(nn.Module):
    """pool -> dropout -> Linear(width, num_labels); cross-entropy."""

    def __init__(self, config: ModelConfig, num_labels: int, width: int, pool: str):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r}: allowed values are {', '.join(POOLS)}")
        self.pool, self.num_labels = POOLS[pool], num_labels
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width, self.outputs())

    def outputs(self) -> int:
        return self.num_labels

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(states, mask)))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class PooledRegressor(PooledClassifier):
    """One output and mean squared error (STS-B)."""

    def outputs(self) -> int:
        return 1

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(states, mask).squeeze(-1)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.mse_loss(logits.float(), batch["labels"].float())


class PooledChoice(PooledClassifier):
    """One score per (B * C) option sequence, compared across a question's C options (RACE)."""

    def outputs(self) -> int:
        return 1

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(states, mask).view(-1, self.num_labels)


class Tagger(TaggingHead):
    def __init__(self, config: ModelConfig, num_labels: int, width: int, pool: str):
        super().__init__(config, num_labels, hidden_size=width)


HEADS = {"classification": PooledClassifier, "regression": PooledRegressor, "multiple_choice": PooledChoice,
         "tagging": Tagger}


class ElmoTaskModel(nn.Module):
    def __init__(self, config: ModelConfig, kind: str, num_labels: int, freeze: bool = True, pool: str = "mean"):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"task.kind={kind!r}: the ELMo models handle {', '.join(HEADS)}")
        self.config, self.freeze = config, freeze
        self.backbone = BiLanguageModel(config)
        self.mix = ScalarMix(config.num_layers + 1)
        self.head = HEADS[kind](config, num_labels, 2 * config.hidden_size, pool)
        init_weights(self.head, config)
        self.backbone.requires_grad_(not freeze)

    def train(self, mode: bool = True) -> ElmoTaskModel:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # feature-based: the frozen biLM computes its features without dropout
        return self

    def forward(self, batch: dict) -> dict:
        flat = lambda t: t.reshape(-1, t.shape[-1])
        ids, mask = flat(batch["input_ids"]), flat(batch["attention_mask"])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            layers = self.backbone(ids, mask).layers
        logits = self.head(self.mix(layers), mask)
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = self.head.loss(logits, batch)
        return out

    def load_pretrained(self, checkpoint: str | Path) -> None:
        """The biLM weights (`model.backbone.*`) of a BiLM pre-training checkpoint (checkpoints/last.ckpt)."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        backbone = {k.removeprefix("model.backbone."): v for k, v in state.items() if k.startswith("model.backbone.")}
        if not backbone:
            raise ValueError(f"{checkpoint}: holds no model.backbone.* weights (not a pre-training checkpoint)")
        self.backbone.load_state_dict(backbone, strict=True)
