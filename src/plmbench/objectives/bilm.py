"""ELMo's pre-training objective: forward and backward language modelling with one shared softmax.

The forward LM predicts token t+1 from the forward states at t (tokens <= t); the backward LM predicts token t-1
from the backward states at t (tokens >= t). ELMo maximises the sum of both log-likelihoods; the loss here is their
mean, so that it reads on the same per-token scale as GPT's causal LM loss. Data: causal packing (blocks of text,
labels = input ids with padding ignored), as for `clm`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models.config import ModelConfig
from plmbench.models.elmo import BiLanguageModel, SharedSoftmax


class BiLM(nn.Module):
    def __init__(self, config: ModelConfig, **_):
        super().__init__()
        self.config = config
        self.backbone = BiLanguageModel(config)
        self.softmax = SharedSoftmax(config, self.backbone.word)
        self.dropout = nn.Dropout(config.dropout)

    def trained_head_modules(self) -> list[nn.Module]:
        return [self.softmax]

    def forward(self, batch: dict) -> dict:
        input_ids, mask = batch["input_ids"], batch.get("attention_mask")
        out = self.backbone(input_ids, mask)
        labels = batch.get("labels", input_ids)
        forward_targets = labels[:, 1:]
        # The backward state at a padding position has read the whole sequence: it must predict nothing.
        backward_targets = labels[:, :-1] if mask is None else \
            labels[:, :-1].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
        forward_loss, forward_correct = self._lm(out.forward[:, :-1], forward_targets)
        backward_loss, backward_correct = self._lm(out.backward[:, 1:], backward_targets)
        loss = (forward_loss + backward_loss) / 2
        count = (forward_targets != IGNORE_INDEX).sum() + (backward_targets != IGNORE_INDEX).sum()
        return {"loss": loss, "lm_loss": loss, "forward_loss": forward_loss, "backward_loss": backward_loss,
                "lm_correct": forward_correct + backward_correct, "lm_count": count}

    def _lm(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.softmax(self.dropout(hidden))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return loss, (logits.argmax(-1) == targets)[targets != IGNORE_INDEX].sum()
