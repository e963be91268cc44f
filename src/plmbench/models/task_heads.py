"""Fine-tuning heads on the backbone, one per task kind, and `TaskModel` that joins them.

- classification: BERT's pooler (tanh dense) on a summary token, dropout, Linear(H, num_labels), cross-entropy;
  with `task.readout: mention`, a linear classifier on the mean state of a marked mention instead (edge probing);
- regression (STS-B): the same with one output and mean squared error;
- span (SQuAD): Linear(H, 2) -> start and end logits per token, cross-entropy over positions;
- tagging (CoNLL NER): models.tagging_head.TaggingHead, a linear layer per token;
- multiple_choice (RACE): every (article, question + option) sequence is encoded on its own, the pooler +
  Linear(H, 1) scores it, and the scores of a question's options are compared by softmax / cross-entropy.

The summary token is data: [CLS] (the first token) for bidirectional encoders, the last real token for causal
models (GPT), which only there has seen the whole input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.heads import Pooler
from plmbench.models.layers import init_weights
from plmbench.models.tagging_head import TaggingHead


def first_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, :1]


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    last = attention_mask.long().sum(dim=1) - 1  # inputs are right-padded
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].unsqueeze(1)


# Summary-token choice by causality; each returns (B, 1, H) so that heads.Pooler (which reads position 0) applies.
SUMMARY_TOKEN = {False: first_token, True: last_token}


class ClassificationHead(nn.Module):
    def __init__(self, config: ModelConfig, num_labels: int):
        super().__init__()
        self.summary = SUMMARY_TOKEN[config.causal]
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(self.summary(hidden, attention_mask))))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class MentionClassificationHead(nn.Module):
    """task.readout=mention: dropout and Linear(H, num_labels) on the mean of the mention's final states
    (`mention_mask`, data/features.py), as edge probing reads a span (Tenney et al., ICLR 2019; there through
    attention pooling and an MLP). No pooler: BERT's is trained on [CLS] for NSP, not on a word's state."""

    batch_keys = ("mention_mask",)

    def __init__(self, config: ModelConfig, num_labels: int):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, mention_mask: torch.Tensor) -> torch.Tensor:
        weights = mention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))

    loss = ClassificationHead.loss  # the same cross-entropy over labels


class RegressionHead(ClassificationHead):
    def __init__(self, config: ModelConfig, num_labels: int = 1):
        super().__init__(config, 1)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden, attention_mask).squeeze(-1)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.mse_loss(logits.float(), batch["labels"].float())


class SpanHead(nn.Module):
    """(B, T, 2) logits; padding positions get the lowest score so that they are never a start or an end."""

    def __init__(self, config: ModelConfig, num_labels: int = 2):
        super().__init__()
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.qa_outputs(hidden).float()
        return logits.masked_fill(~attention_mask.bool()[..., None], torch.finfo(logits.dtype).min)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        start, end = logits.unbind(-1)
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


class MultipleChoiceHead(nn.Module):
    """Scores each (B * C) sequence independently, then reshapes to (B, C) option scores."""

    def __init__(self, config: ModelConfig, num_labels: int):
        super().__init__()
        self.num_choices = num_labels
        self.summary = SUMMARY_TOKEN[config.causal]
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.dropout)
        self.scorer = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.scorer(self.dropout(self.pooler(self.summary(hidden, attention_mask))))
        return scores.view(-1, self.num_choices)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


READOUTS = ("summary", "mention")  # task.readout: the summary token ([CLS]) or the marked mention's tokens
HEADS = {
    "classification": ClassificationHead,
    "regression": RegressionHead,
    "span": SpanHead,
    "multiple_choice": MultipleChoiceHead,
    "tagging": TaggingHead,
}


class TaskModel(nn.Module):
    """Backbone + the head of a task kind. forward(batch) -> {"logits", and "loss" when the batch has labels}.

    Multiple-choice inputs arrive as (B, C, T) and run through the backbone as B*C independent sequences.
    Segment ids are passed only to a backbone with two segment types (RoBERTa has one, GPT-2 none).
    `head` replaces the kind's own head (a graph reasoner's, models/graph_reasoner.py); a head naming
    `batch_keys` gets those batch entries as keyword arguments. `backbone` replaces the plain one (a fused
    models.knowledge_fusion.KnowledgeBackbone, which also takes the batch's `entity_ids`).
    """

    def __init__(self, config: ModelConfig, kind: str, num_labels: int, head: nn.Module | None = None,
                 backbone: nn.Module | None = None, readout: str = "summary"):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"task.kind={kind!r}: allowed values are {', '.join(HEADS)}")
        if readout not in READOUTS or (readout == "mention" and kind != "classification"):
            raise ValueError(f"task.readout={readout!r}: allowed values are {', '.join(READOUTS)}; mention only "
                             f"with task.kind=classification (this task: {kind})")
        self.config = config
        self.backbone = backbone if backbone is not None else Backbone(config)
        default = MentionClassificationHead if readout == "mention" else HEADS[kind]
        self.head = head if head is not None else default(config, num_labels)
        init_weights(self.head, config)  # N(0, init_std) as BERT initialises its classifiers
        self.uses_segments = config.type_vocab_size >= 2

    def forward(self, batch: dict) -> dict:
        flat = lambda t: t.reshape(-1, t.shape[-1])  # (B, C, T) -> (B*C, T); (B, T) unchanged
        mask = flat(batch["attention_mask"])
        types = flat(batch["token_type_ids"]) if self.uses_segments else None
        entities = {"entity_ids": flat(batch["entity_ids"])} if "entity_ids" in batch else {}
        hidden = self.backbone(flat(batch["input_ids"]), mask, types, **entities)
        logits = self.head(hidden, mask, **{key: batch[key] for key in getattr(self.head, "batch_keys", ())})
        out = {"logits": logits}
        if any(key in batch for key in ("labels", "start_positions")):
            out["loss"] = self.head.loss(logits, batch)
        return out
