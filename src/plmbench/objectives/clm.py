"""Causal language modelling (GPT): predict token t+1 from tokens <= t over packed blocks."""

import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.heads import CausalLMHead


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig, cross_entropy=F.cross_entropy, **_):
        super().__init__()
        self.config = config
        self.cross_entropy = cross_entropy  # F.cross_entropy or impl.cross_entropy (same value, leaner backward)
        self.backbone = Backbone(config)
        self.lm_head = CausalLMHead(self.backbone.embeddings.word)

    def trained_head_modules(self) -> list[nn.Module]:
        return []  # tied to the input embeddings: no parameters of its own

    def forward(self, batch: dict) -> dict:
        hidden = self.backbone(batch["input_ids"], batch.get("attention_mask"))
        logits = self.lm_head(hidden[:, :-1])
        targets = batch.get("labels", batch["input_ids"])[:, 1:]
        loss = self.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                  ignore_index=IGNORE_INDEX)
        out = {"loss": loss, "lm_loss": loss}
        if not self.training:  # accuracy is a validation metric: in training, an argmax over every position's
            valid = targets != IGNORE_INDEX  # full-vocabulary logits would cost ~5% of a CPU step
            out.update(lm_correct=(logits.argmax(-1) == targets)[valid].sum(), lm_count=valid.sum())
        return out
