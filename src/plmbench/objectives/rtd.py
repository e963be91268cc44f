"""Replaced-token detection (ELECTRA): a small MLM generator fills the masks, the discriminator spots replacements.

The generator reuses the discriminator's embedding module instance (token, position and segment tables shared, as
in the paper) with a projection of its own; it is `generator_size` times as wide. Samples carry no gradient back
into the generator. Loss = L_MLM(generator) + lambda * L_disc over all real tokens (lambda = 50).
"""

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.heads import DiscriminatorHead, MLMHead
from plmbench.models.layers import init_weights
from plmbench.objectives.mlm import mlm_counts


def sample_tokens(logits: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits), by inverse CDF: a cumulative sum and one uniform per row.

    torch.multinomial draws an exponential variate for every vocabulary entry of every row (28% of an ELECTRA
    mini step on CPU at vocabulary 30,000); this reads the probabilities once more instead. right=True skips a
    token of probability 0 at u = 0; the clamp covers u x total rounding up to the total."""
    cdf = F.softmax(logits.float(), -1).cumsum_(-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def generator_config(config: ModelConfig, size: float) -> ModelConfig:
    return config.replace(hidden_size=max(1, int(config.hidden_size * size)),
                          ffn_size=max(1, int(config.ffn_size * size)),
                          num_heads=max(1, int(config.num_heads * size)))


class ReplacedTokenDetection(nn.Module):
    def __init__(self, config: ModelConfig, generator_size: float = 0.25, discriminator_weight: float = 50.0,
                 masked_only: bool = True, cross_entropy=F.cross_entropy, **_):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)  # the discriminator: what gets fine-tuned and exported
        self.discriminator_head = DiscriminatorHead(config)
        gen_config = generator_config(config, generator_size)
        gen_config.validate("objective.generator_size")
        self.generator = Backbone(gen_config, embeddings=self.backbone.embeddings)
        self.generator_head = MLMHead(gen_config, self.backbone.embeddings.word)
        init_weights(self.discriminator_head, config)
        init_weights(self.generator_head.dense, config), init_weights(self.generator_head.norm, config)
        self.discriminator_weight = discriminator_weight
        self.masked_only = masked_only
        self.cross_entropy = cross_entropy  # of the generator's MLM loss

    def trained_head_modules(self) -> list[nn.Module]:
        return [self.discriminator_head, self.generator, self.generator_head]

    def forward(self, batch: dict) -> dict:
        input_ids, labels = batch["input_ids"], batch["labels"]
        mask, types = batch.get("attention_mask"), batch.get("token_type_ids")
        gen_hidden = self.generator(input_ids, mask, types)
        selected = labels != IGNORE_INDEX
        mlm_loss, logits, picked = self.generator_head.loss(gen_hidden, labels, True, self.cross_entropy)
        with torch.no_grad():
            sampled = sample_tokens(logits)
        corrupted = input_ids.masked_scatter(selected, sampled)
        original = torch.where(selected, labels, input_ids)
        replaced = (corrupted != original).float()
        disc_logits = self.discriminator_head(self.backbone(corrupted, mask, types))
        real = mask.bool() if mask is not None else torch.ones_like(replaced, dtype=torch.bool)
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits.float()[real], replaced[real])
        disc_correct = ((disc_logits > 0).float() == replaced)[real].sum()
        return {"loss": mlm_loss + self.discriminator_weight * disc_loss, "mlm_loss": mlm_loss,
                "disc_loss": disc_loss, "disc_correct": disc_correct, "disc_count": real.sum(),
                **mlm_counts(logits, picked)}
