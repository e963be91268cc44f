"""Pre-training objectives, each a module that owns its backbone and heads and returns a dict with `loss`."""

import torch.nn.functional as F

from plmbench.impl import cross_entropy
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.objectives.bilm import BiLM
from plmbench.objectives.clm import CausalLM
from plmbench.objectives.mlm import MaskedLM
from plmbench.objectives.rtd import ReplacedTokenDetection

OBJECTIVES = {
    "mlm": MaskedLM,
    "mlm_nsp": MaskedLM,
    "mlm_sop": MaskedLM,
    "rtd": ReplacedTokenDetection,
    "clm": CausalLM,
    "bilm": BiLM,  # ELMo: forward and backward LSTM language models
}
CAUSAL_OBJECTIVES = frozenset({"clm"})


def check_objective(config: ModelConfig, objective: dict) -> None:
    name = objective.get("name")
    if name not in OBJECTIVES:
        raise ConfigError(f"objective.name={name!r}: allowed values are {', '.join(OBJECTIVES)}")
    if config.causal and name not in CAUSAL_OBJECTIVES:
        raise ConfigError(f"objective={name} with a causal model (model.causal=true): a causal model cannot see "
                          f"the future tokens {name} needs; allowed: {', '.join(sorted(CAUSAL_OBJECTIVES))}")
    if not config.causal and name in CAUSAL_OBJECTIVES:
        raise ConfigError(f"objective={name} with a bidirectional model (model.causal=false): use model=gpt")


def build_objective(config: ModelConfig, objective: dict, masked_only: bool = True,
                    fused_cross_entropy: bool = False):
    """`masked_only` and `fused_cross_entropy` are `impl` speed options: same loss and gradients, less work."""
    check_objective(config, objective)
    options = {k: objective[k] for k in ("generator_size", "discriminator_weight") if k in objective}
    loss = cross_entropy if fused_cross_entropy else F.cross_entropy
    return OBJECTIVES[objective["name"]](config, sentence_task=objective.get("sentence_task", "none"),
                                         masked_only=masked_only, cross_entropy=loss, **options)
