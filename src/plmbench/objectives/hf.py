"""A whole pre-training objective (backbone and heads) read from a Hugging Face model folder (export-hf's layout),
e.g. a distillation teacher."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from plmbench.models.hf_folder import read_hf_folder
from plmbench.models.hf_mapping import config_from_hf, from_hf_state_dict
from plmbench.objectives import build_objective

HF_OBJECTIVES = {  # the objective an imported checkpoint's heads belong to
    "albert": {"name": "mlm_sop", "sentence_task": "sop"},
    "bert": {"name": "mlm_nsp", "sentence_task": "nsp"},
    "roberta": {"name": "mlm"},
    "electra": {"name": "rtd"},
    "gpt2": {"name": "clm"},
}


def objective_from_hf(path: str | Path) -> nn.Module:
    """The pre-training objective (backbone and heads) of an export-hf folder, e.g. a distillation teacher.

    ELECTRA reads the discriminator from `path` and the generator from `path/generator`.
    """
    hf_config, state_dict = read_hf_folder(path)
    config = config_from_hf(hf_config, state_dict)
    objective = dict(HF_OBJECTIVES[config.family])
    if objective["name"] == "rtd":
        gen_hf_config, gen_state = read_hf_folder(Path(path) / "generator")
        objective["generator_size"] = gen_hf_config.hidden_size / config.hidden_size
    model = build_objective(config, objective)
    from_hf_state_dict(model, state_dict, hf_config)
    if objective["name"] == "rtd":
        embeddings = {k: v.clone() for k, v in model.backbone.embeddings.state_dict().items()}
        from_hf_state_dict(model, gen_state, gen_hf_config, part="generator")
        changed = [k for k, v in model.backbone.embeddings.state_dict().items() if not torch.equal(v, embeddings[k])]
        if changed:
            raise ValueError(f"{Path(path) / 'generator'}: its embeddings.{changed[0]} differs from the "
                             "discriminator's; plmbench's ELECTRA shares the embeddings")
    return model
