"""Pre-training objectives, each a module that owns its backbone and heads and returns a dict with `loss`."""

import torch
import torch.nn.functional as F

from plmbench.impl import cross_entropy
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.models.entity_table import resolve_entity_table
from plmbench.models.knowledge_fusion import KnowledgeConfig, load_entity_table
from plmbench.objectives.bilm import BiLM
from plmbench.objectives.clm import CausalLM
from plmbench.objectives.dea import KnowledgeMaskedLM
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
                    fused_cross_entropy: bool = False, knowledge: dict | None = None,
                    entity_table: torch.Tensor | None = None):
    """`masked_only` and `fused_cross_entropy` are `impl` speed options: same loss and gradients, less work.
    An enabled `knowledge` node makes an MLM objective ERNIE's (KnowledgeMaskedLM: fused backbone, + dEA); its
    entity table is `entity_table` when given (describe passes a placeholder), else read from knowledge.entity_table."""
    check_objective(config, objective)
    loss = cross_entropy if fused_cross_entropy else F.cross_entropy
    fusion = KnowledgeConfig.from_mapping(knowledge)
    if fusion.enabled:
        if OBJECTIVES[objective["name"]] is not MaskedLM:
            raise ConfigError(f"knowledge.enabled=true with objective={objective['name']}: dEA is added to MLM; "
                              f"allowed: {', '.join(k for k, v in OBJECTIVES.items() if v is MaskedLM)}")
        if entity_table is None:
            if not fusion.entity_table:
                raise ConfigError("knowledge.entity_table=null: knowledge fusion needs the TransE entity table file")
            entity_table = load_entity_table(resolve_entity_table(knowledge), fusion)  # `auto`: the cached table
        return KnowledgeMaskedLM(config, fusion, entity_table, sentence_task=objective.get("sentence_task", "none"),
                                 masked_only=masked_only, cross_entropy=loss)
    options = {k: objective[k] for k in ("generator_size", "discriminator_weight") if k in objective}
    return OBJECTIVES[objective["name"]](config, sentence_task=objective.get("sentence_task", "none"),
                                         masked_only=masked_only, cross_entropy=loss, **options)
