"""`plmbench export-hf <overrides> [ckpt=PATH] [tokenizer=DIR] out=DIR`: a model as a Hugging Face folder.

The overrides pick the model exactly as for `pretrain`; `ckpt` is a Lightning checkpoint (weights under `model.`),
a safetensors file of our own state dict, or an HF folder; without it the model is a fresh initialisation.
Writes config.json + model.safetensors loadable by AutoModelForPreTraining / AutoModelForMaskedLM /
AutoModelForCausalLM (ELECTRA: the discriminator, and the generator in out/generator), plus the tokenizer files
from `tokenizer=DIR` or the run directory's tokenizer/.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.models import hf_mapping
from plmbench.models.config import ModelConfig
from plmbench.models.hf_folder import read_hf_folder
from plmbench.objectives import build_objective

OPTIONS = ("ckpt", "out", "tokenizer")  # ours, not Hydra's


def main(overrides: list[str]) -> None:
    options = {key: value for key, _, value in (o.partition("=") for o in overrides) if key in OPTIONS}
    rest = [o for o in overrides if o.partition("=")[0] not in OPTIONS]
    if not options.get("out"):
        raise ValueError("export-hf needs out=DIR (where to write the Hugging Face folder)")
    out = Path(options["out"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out={out}: exists and is not an empty folder; export-hf writes into a new or empty "
                         "folder and never over files already there")
    ckpt = Path(options["ckpt"]) if options.get("ckpt") else None
    run_config = find_run_config(ckpt)
    # A checkpoint of a plmbench run carries its shape: without overrides, the run's own config.yaml builds it
    cfg = OmegaConf.load(run_config) if run_config is not None and not rest else compose("pretrain", rest)
    torch.manual_seed(int(cfg.get("seed", 0)))
    model = build_objective(ModelConfig.from_mapping(cfg.model), OmegaConf.to_container(cfg.objective, resolve=True))
    if ckpt is not None:
        load_checkpoint(model, ckpt)
    tokenizer = find_tokenizer(options.get("tokenizer"), ckpt)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-shard progress bar is noise beside our one line
    written = export(model.eval(), out, tokenizer)
    left_out = sorted({key.split(".")[0] for key in hf_mapping.not_exported(model)})
    print(f"export-hf: wrote {', '.join(written)} to {out} from {ckpt or 'a fresh initialisation'}"
          + (f", tokenizer from {tokenizer}" if tokenizer else "")
          + (f"; left out {', '.join(left_out)} (no Hugging Face counterpart)" if left_out else ""))


def load_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Lightning .ckpt, our safetensors, or an HF folder; any mismatch is a one-line error naming the path."""
    if not path.exists():
        raise FileNotFoundError(f"ckpt={path}: no such file or directory")
    if path.is_dir():
        hf_config, state_dict = read_hf_folder(path)
        hf_mapping.from_hf_state_dict(model, state_dict, hf_config)
        return
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"ckpt={path}: not readable as a weights-only torch checkpoint ({first_line})") from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise ValueError(f"ckpt={path}: no state_dict in it (expected a Lightning checkpoint)")
        state_dict = checkpoint["state_dict"]
    if any(key.startswith("model.") for key in state_dict):
        state_dict = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
    result = model.load_state_dict(state_dict, strict=False)
    problems = result.missing_keys + result.unexpected_keys
    if problems:
        raise ValueError(f"ckpt={path}: does not match the configured model ({len(result.missing_keys)} missing, "
                         f"{len(result.unexpected_keys)} unexpected keys, e.g. {problems[0]}); pass the overrides "
                         "the run was trained with")


def find_run_config(ckpt: Path | None) -> Path | None:
    """The config.yaml of the run the checkpoint belongs to (beside it, or one level up from checkpoints/)."""
    if ckpt is None:
        return None
    for run_dir in (ckpt.parent, ckpt.parent.parent):
        path = run_dir / "config.yaml"
        if path.is_file() and {"model", "objective"} <= set(OmegaConf.load(path) or {}):
            return path
    return None


def find_tokenizer(option: str | None, ckpt: Path | None) -> Path | None:
    """tokenizer=DIR, else the run directory's tokenizer/ (beside the checkpoint or one level up)."""
    if option:
        if not (Path(option) / "tokenizer.json").is_file():
            raise FileNotFoundError(f"tokenizer={option}: no tokenizer.json there")
        return Path(option)
    if ckpt is None:
        return None
    for run_dir in (ckpt.parent, ckpt.parent.parent):
        if (run_dir / "tokenizer" / "tokenizer.json").is_file():
            return run_dir / "tokenizer"
    return None


def export(model: torch.nn.Module, out: Path, tokenizer: Path | None = None) -> list[str]:
    """save_pretrained of each HF part after a strict load; returns 'ClassName' or 'generator/ClassName' per part."""
    import transformers

    special_ids = _special_ids(tokenizer) if tokenizer else None
    written = []
    for part in hf_mapping.parts(model):
        hf_config, state_dict = hf_mapping.to_hf_state_dict(model, part=part, special_ids=special_ids)
        hf_model = getattr(transformers, hf_config.architectures[0])(hf_config)
        hf_model.load_state_dict(state_dict, strict=True)
        folder = out / part
        hf_model.save_pretrained(folder)
        if tokenizer:
            for file in tokenizer.iterdir():
                if file.is_file():
                    shutil.copy2(file, folder / file.name)
        written.append(f"{part}/{type(hf_model).__name__}" if part else type(hf_model).__name__)
    return written


def _special_ids(tokenizer_dir: Path) -> dict:
    from tokenizers import Tokenizer

    from plmbench.data.tokenizer import special_tokens

    ids = special_tokens(Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")))
    return {"pad_token_id": ids.pad, "bos_token_id": ids.cls, "eos_token_id": ids.sep}
