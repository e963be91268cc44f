"""Masked LM, optionally with a sentence-level loss (BERT's NSP, ALBERT's SOP): the encoder objectives.

A sentence head is always built, so that ALBERT Table 5's intrinsic NSP/SOP accuracies can be measured for every
model the same way; it only receives a loss when the objective has a sentence task (an untrained head sits at
chance, as in the paper's 'None' row).
"""

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.heads import MLMHead, SentenceHead
from plmbench.models.layers import init_weights


class MaskedLM(nn.Module):
    def __init__(self, config: ModelConfig, sentence_task: str = "none", masked_only: bool = True,
                 cross_entropy=F.cross_entropy, backbone: Backbone | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else Backbone(config)  # ERNIE passes its fused backbone
        self.mlm_head = MLMHead(config, self.backbone.embeddings.word)
        self.sentence_head = SentenceHead(config)
        init_weights(self.mlm_head.dense, config), init_weights(self.mlm_head.norm, config)
        init_weights(self.sentence_head, config)
        self.sentence_weight = 0.0 if sentence_task == "none" else 1.0
        self.masked_only = masked_only
        self.cross_entropy = cross_entropy  # of the MLM loss: F.cross_entropy or impl.cross_entropy

    def trained_head_modules(self) -> list[nn.Module]:
        return [self.mlm_head] + ([self.sentence_head] if self.sentence_weight else [])

    def forward(self, batch: dict) -> dict:
        hidden = self.backbone(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        return self.pretraining_losses(hidden, batch)

    def pretraining_losses(self, hidden: torch.Tensor, batch: dict) -> dict:
        """MLM (+ NSP/SOP) from the final hidden states: `loss` and the counters of the validation metrics."""
        mlm_loss, logits, labels = self.mlm_head.loss(hidden, batch["labels"], self.masked_only, self.cross_entropy)
        out = {"mlm_loss": mlm_loss, "loss": mlm_loss, **mlm_counts(logits, labels)}
        sentence_label = batch.get("sentence_label")
        if sentence_label is not None and bool((sentence_label >= 0).any()):
            sentence_logits = self.sentence_head(hidden)
            sentence_loss = F.cross_entropy(sentence_logits.float(), sentence_label, ignore_index=-1)
            out["sentence_loss"] = sentence_loss
            out["loss"] = mlm_loss + self.sentence_weight * sentence_loss
            valid = sentence_label >= 0
            out["sentence_correct"] = (sentence_logits.argmax(-1) == sentence_label)[valid].sum()
            out["sentence_count"] = valid.sum()
        return out


def mlm_counts(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Correct and total predicted tokens, for MLM accuracy (ALBERT Table 5's MLM column)."""
    valid = labels != IGNORE_INDEX
    return {"mlm_correct": (logits.argmax(-1) == labels)[valid].sum(), "mlm_count": valid.sum()}
