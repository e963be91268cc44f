"""Hugging Face model folders (save_pretrained layout) read into plmbench: the HF config and state dict, our Backbone,
or the pooler for fine-tuning heads (a whole pre-training objective: plmbench.objectives.hf). The name maps live in
hf_mapping."""

from __future__ import annotations

from pathlib import Path

import torch

from plmbench.models.backbone import Backbone
from plmbench.models.hf_mapping import FAMILIES, HEADS, config_from_hf, fill_tied, from_hf_state_dict


def read_hf_folder(path: str | Path):
    """(HF config, state dict with tied keys) from a save_pretrained folder, without building the HF model."""
    import transformers
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
    hf_config = transformers.AutoConfig.from_pretrained(folder)
    files = sorted(folder.glob("model*.safetensors"))  # one file, or the shards of a large model
    if not files:
        raise FileNotFoundError(f"{folder}: no model*.safetensors (plmbench reads safetensors checkpoints)")
    state_dict = {k: v for file in files for k, v in load_file(file).items()}
    base = FAMILIES[hf_config.model_type].base if hf_config.model_type in FAMILIES else ""
    if base and not any(k.startswith(base) for k in state_dict):  # saved from the bare base model
        state_dict = {base + k: v for k, v in state_dict.items()}
    fill_tied(state_dict, (hf_config.architectures or [""])[0])
    return hf_config, state_dict


def backbone_from_hf(path: str | Path) -> Backbone:
    """Our Backbone with the weights of an HF folder (fine-tuning's init=<HF folder>)."""
    hf_config, state_dict = read_hf_folder(path)
    backbone = Backbone(config_from_hf(hf_config, state_dict))
    from_hf_state_dict(backbone, state_dict, hf_config)
    return backbone


def pooler_state(state_dict: dict, hf_config) -> dict[str, torch.Tensor]:
    """The pre-trained pooler's {weight, bias} (BERT, ALBERT) for a fine-tuning head that pools [CLS]; else {}."""
    for (family, _), heads in HEADS.items():
        name = heads.heads.get("sentence_head.pooler.dense")
        if family == hf_config.model_type and name and f"{name}.weight" in state_dict:
            return {p: state_dict[f"{name}.{p}"] for p in ("weight", "bias")}
    return {}
