"""The Hugging Face baselines of `make bench`: the HF pre-training model of each family, with our model's shapes
and weights (through hf_mapping), wrapped so that forward(batch) -> {"loss"} computes what our objective does.

- ALBERT + SOP: AlbertForPreTraining (MLM over the full vocabulary at every position, then its loss; SOP head);
- BERT + NSP: BertForPreTraining (the same with NSP);
- ELECTRA: ElectraForMaskedLM as the generator and ElectraForPreTraining as the discriminator, the generator
  sharing the discriminator's embeddings (as ELECTRA does and as our objective does); one step is the generator's
  MLM loss, sampling replacements at the masked positions without gradient, then 50 x the discriminator's loss;
- GPT: GPT2LMHeadModel (it shifts the labels itself).

HF runs with attn_implementation="sdpa", its fastest attention on CPU and GPU (the same kernels we call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.models import hf_mapping

HF_ATTENTION = "sdpa"
SENTENCE_ARGUMENT = {"AlbertForPreTraining": "sentence_order_label", "BertForPreTraining": "next_sentence_label"}


def _hf_part(ours: nn.Module, part: str = "") -> nn.Module:
    """The HF model of one exported part, loaded with our weights (strict: every tensor accounted for)."""
    import transformers

    hf_config, state_dict = hf_mapping.to_hf_state_dict(ours, part=part)
    cls = getattr(transformers, hf_config.architectures[0])
    model = cls._from_config(hf_config, attn_implementation=HF_ATTENTION)
    model.load_state_dict(state_dict, strict=True)
    return model


class HFMaskedLMWithSentence(nn.Module):
    """AlbertForPreTraining / BertForPreTraining: loss = MLM + sentence (SOP or NSP), as in our MaskedLM."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf
        self.sentence_argument = SENTENCE_ARGUMENT[type(hf).__name__]

    def forward(self, batch: dict) -> dict:
        out = self.hf(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                      token_type_ids=batch.get("token_type_ids"), labels=batch["labels"],
                      **{self.sentence_argument: batch["sentence_label"]})
        return {"loss": out.loss}


class HFReplacedTokenDetection(nn.Module):
    """ELECTRA's RTD step written with the HF classes, following the reference implementation."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, discriminator_weight: float):
        super().__init__()
        # Share the embeddings: one module (and the generator's tied decoder reads its word embeddings).
        generator.electra.embeddings = discriminator.electra.embeddings
        generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
        self.generator, self.discriminator = generator, discriminator
        self.discriminator_weight = discriminator_weight
        # torch.multinomial, as a PyTorch port of the reference code would draw (the TF original adds Gumbel noise,
        # two logarithms per vocabulary entry: dearer still). Ours draws by inverse CDF (objectives/rtd.py); the
        # loss-equality test gives this twin that sampler, so both see the same replacements.
        self.sample = lambda probs: torch.multinomial(probs, 1).squeeze(-1)

    def forward(self, batch: dict) -> dict:
        input_ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
        types = batch.get("token_type_ids")
        generated = self.generator(input_ids=input_ids, attention_mask=mask, token_type_ids=types, labels=labels)
        selected = labels != IGNORE_INDEX
        with torch.no_grad():
            probs = F.softmax(generated.logits[selected].float(), -1)
            sampled = self.sample(probs)
        corrupted = input_ids.masked_scatter(selected, sampled)
        original = torch.where(selected, labels, input_ids)
        replaced = (corrupted != original).long()
        judged = self.discriminator(input_ids=corrupted, attention_mask=mask, token_type_ids=types, labels=replaced)
        return {"loss": generated.loss + self.discriminator_weight * judged.loss}


class HFCausalLM(nn.Module):
    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, batch: dict) -> dict:
        return {"loss": self.hf(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                labels=batch["labels"]).loss}


def build_hf_pretraining(ours: nn.Module) -> nn.Module:
    """The HF counterpart of one of our objectives (MaskedLM with a sentence task, RTD, CausalLM), same weights."""
    kind = type(ours).__name__
    if kind == "ReplacedTokenDetection":
        return HFReplacedTokenDetection(_hf_part(ours, "generator"), _hf_part(ours),
                                        ours.discriminator_weight)
    if kind == "CausalLM":
        return HFCausalLM(_hf_part(ours))
    if kind == "MaskedLM" and ours.config.family in ("albert", "bert") and ours.sentence_weight:
        return HFMaskedLMWithSentence(_hf_part(ours))
    raise ValueError(f"bench: no Hugging Face pre-training baseline for {kind} of family {ours.config.family} "
                     "(allowed: albert+mlm_sop, bert+mlm_nsp, electra+rtd, gpt2+clm)")
