"""What a fine-tuning run starts from (`init`): its kind, architecture, tokenizer and weights.

  random                a fresh backbone of the configured model; its tokenizer is trained (and cached) on the
                        configured pre-training corpus, as a pre-training run would train it;
  <pre-training run>    a `plmbench pretrain` directory: config.yaml (its model node is the architecture),
                        tokenizer/, checkpoints/last.ckpt (the `model.backbone.*` weights, and the sentence head's
                        pooler where there is one: BERT and ALBERT fine-tune the pre-trained pooler);
  <Hugging Face folder> config.json + model.safetensors + tokenizer.json (`plmbench export-hf` writes these).
A knowledge-fusion run (knowledge=ernie) brings its fused backbone and entity table to tasks that carry entities.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tokenizers import Tokenizer

from plmbench.data.entity_features import KINDS as ENTITY_KINDS
from plmbench.data.entity_ids import LinkingSpec
from plmbench.data.tokenizer import SpecialTokens, special_tokens
from plmbench.errors import UserError, load_weights_only
from plmbench.models.config import ModelConfig
from plmbench.models.knowledge_fusion import KnowledgeBackbone, KnowledgeConfig, plain_backbone_state

log = logging.getLogger(__name__)

INIT_LAYOUTS = {  # what each kind of init directory holds
    "pretrain_run": ("config.yaml", "tokenizer/tokenizer.json", "checkpoints/last.ckpt"),
    "hf": ("config.json", "tokenizer.json"),  # weights: model.safetensors (or its sharded index), read by hf_mapping
}


class FinetuneError(UserError):
    """A fine-tuning setting or init that cannot work; the message names the key or path."""


def init_kind(init: str) -> tuple[str, Path | None]:
    """('random', None) or (layout name, directory), with a one-line error naming `init` otherwise."""
    if str(init) == "random":
        return "random", None
    return folder_layout(init, INIT_LAYOUTS, "init", FinetuneError,
                         "allowed: random, a pre-training run directory or a Hugging Face folder")


def folder_layout(given, layouts: dict[str, tuple[str, ...]], key: str, error: type[Exception],
                  allowed: str) -> tuple[str, Path]:
    """(layout name, directory) of the first layout whose files `given` holds; a one-line `error` naming `key`
    otherwise. Shared by fine-tuning's init and distillation's teacher."""
    folder = Path(str(given)).expanduser()
    if not folder.is_dir():
        raise error(f"{key}={given}: no such directory; {allowed}")
    for kind, files in layouts.items():
        if all((folder / name).is_file() for name in files):
            return kind, folder
    wanted = "; ".join(f"{kind}: {', '.join(files)}" for kind, files in layouts.items())
    raise error(f"{key}={folder}: holds neither a pre-training run nor a Hugging Face folder ({wanted})")


def read_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the tokenizers library raises a bare Exception
        raise FinetuneError(f"{path}: not a readable tokenizer ({error})") from None


def init_model_config(cfg: DictConfig) -> ModelConfig:
    """The architecture fine-tuning will build: the init's own, or cfg.model for init=random."""
    kind, path = init_kind(cfg.init)
    try:
        if kind == "pretrain_run":  # pre-training sized the vocabulary to its trained tokenizer, which may be smaller
            config = ModelConfig.from_mapping(OmegaConf.load(path / "config.yaml").model)
            return config.replace(vocab_size=read_tokenizer(path / "tokenizer" / "tokenizer.json").get_vocab_size())
        if kind == "hf":
            from plmbench.models import hf_mapping

            family = json.loads((path / "config.json").read_text()).get("model_type")
            if family not in hf_mapping.FAMILIES:
                raise ValueError(f"model_type={family!r}: plmbench imports {', '.join(hf_mapping.FAMILIES)}")
            return hf_mapping.config_from_hf(_hf_config(path))
    except (ValueError, KeyError, OSError) as error:
        raise FinetuneError(f"init={path}: not a usable architecture: {' '.join(str(error).split())}") from None
    return ModelConfig.from_mapping(cfg.model)


def cap_to_pretraining_length(cfg: DictConfig) -> int | None:
    """Caps task.max_length at the init run's pre-training length (BERT's alternative, a last phase of pre-training
    at the fine-tuning length, is not run here): positions never trained would start from their random init. SQuAD
    windows keep a quarter of the input for the question and half of the rest as stride. Returns the length it
    capped from, or None; `cap_to_pretraining_length=false` keeps the task's own length."""
    kind, path = init_kind(cfg.init)
    if kind != "pretrain_run" or not cfg.get("cap_to_pretraining_length", True):
        return None
    length = OmegaConf.select(OmegaConf.load(path / "config.yaml"), "data.max_seq_len")
    task = cfg.task
    if length is None or int(task.max_length) <= int(length):
        return None
    original, length = int(task.max_length), int(length)
    with open_dict(task):
        task.max_length = length
        if task.kind == "span":
            task.max_query_length = min(int(task.max_query_length), length // 4)
            task.doc_stride = min(int(task.doc_stride), (length - int(task.max_query_length) - 3) // 2)
    log.info("task.max_length %d -> %d: the pre-training length of init=%s", original, length, path)
    return original


def _hf_config(path: Path):
    import transformers

    return transformers.AutoConfig.from_pretrained(path)


@dataclass
class Init:
    kind: str  # random | pretrain_run | hf
    path: Path | None
    config: ModelConfig
    tokenizer: Tokenizer
    special: SpecialTokens
    hf_checkpoint: tuple | None = None  # (HF config, state dict), read once for every run of a grid
    knowledge: dict | None = None  # a knowledge=ernie run's `knowledge` node: fine-tune the fused model on entities
    entity_table: torch.Tensor | None = None  # that run's frozen (shuffled, for the control) TransE table

    def backbone(self) -> torch.nn.Module | None:
        """The fused backbone of a knowledge run (its table already in place; shuffled once, in pre-training);
        None = the task model's plain one."""
        if self.knowledge is None:
            return None
        fusion = dataclasses.replace(KnowledgeConfig.from_mapping(self.knowledge), shuffle=False)
        return KnowledgeBackbone(self.config, fusion, self.entity_table)

    def linking(self) -> LinkingSpec | None:
        return LinkingSpec.from_knowledge(self.knowledge) if self.knowledge is not None else None

    def describe(self) -> dict:
        """The pre-training cell a result comes from: its path and lineage id (the sweep's cell id)."""
        return {"kind": self.kind, "path": str(self.path) if self.path else None, "lineage_id": self.lineage_id()}

    def lineage_id(self) -> str | None:
        if self.kind != "pretrain_run":
            return None
        from plmbench.lineage import cell_id

        try:
            return cell_id(OmegaConf.load(self.path / "config.yaml"))
        except Exception as error:  # noqa: BLE001 - a run made outside a sweep may lack what the id hashes
            log.info("no lineage id for %s: %s", self.path, error)
            return None

    def load_weights(self, model: torch.nn.Module) -> None:
        """Put the init's backbone (and pre-trained pooler, when both have one) into a TaskModel."""
        LOADERS[self.kind](self, model)


def _load_nothing(init: Init, model) -> None:
    return None


def _load_pretrain_run(init: Init, model) -> None:
    state = load_weights_only(init.path / "checkpoints" / "last.ckpt")["state_dict"]
    backbone = {k.removeprefix("model.backbone."): v for k, v in state.items() if k.startswith("model.backbone.")}
    if init.knowledge is None:  # a knowledge=ernie run on a task without entities: its plain layers (exact)
        backbone = plain_backbone_state(backbone)
    if not backbone:
        raise FinetuneError(f"init={init.path}: checkpoints/last.ckpt holds no model.backbone.* weights")
    try:
        model.backbone.load_state_dict(backbone, strict=True)
    except RuntimeError as error:
        first = " ".join(str(error).split())[:300]
        raise FinetuneError(f"init={init.path}: the checkpoint does not fit the architecture in its config.yaml: "
                            f"{first}") from None
    pooler = {k.removeprefix("model.sentence_head.pooler."): v for k, v in state.items()
              if k.startswith("model.sentence_head.pooler.")}
    if pooler and hasattr(model.head, "pooler"):
        model.head.pooler.load_state_dict(pooler)


def _load_hf(init: Init, model) -> None:
    from plmbench.models import hf_mapping

    try:
        hf_config, state = init.hf_checkpoint
        hf_mapping.from_hf_state_dict(model.backbone, state, hf_config)
    except (ValueError, FileNotFoundError) as error:
        raise FinetuneError(f"init={init.path}: {' '.join(str(error).split())}") from None


LOADERS = {"random": _load_nothing, "pretrain_run": _load_pretrain_run, "hf": _load_hf}


def load_init(cfg: DictConfig) -> Init:
    kind, path = init_kind(cfg.init)
    config = init_model_config(cfg)
    if kind == "random":
        from plmbench.data.corpora import build_corpus
        from plmbench.data.tokenizer import get_tokenizer

        lowercase = bool(cfg.get("data", {}).get("lowercase", True))
        tokenizer, special = get_tokenizer(build_corpus(cfg.corpus), cfg.model.tokenizer, config.vocab_size,
                                           lowercase=lowercase)
        config = config.replace(vocab_size=tokenizer.get_vocab_size())  # as pre-training sizes it
        return Init(kind, None, config, tokenizer, special)
    tokenizer, checkpoint = Tokenizer.from_file(str(path / INIT_LAYOUTS[kind][1])), None
    try:
        if kind == "hf":
            from plmbench.models import hf_mapping
            from plmbench.models.hf_folder import read_hf_folder

            checkpoint = read_hf_folder(path)
            config = hf_mapping.config_from_hf(*checkpoint)  # sharing is read off the weights
        special = special_tokens(tokenizer)
    except (ValueError, FileNotFoundError) as error:
        raise FinetuneError(f"init={path}: {' '.join(str(error).split())}") from None
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise FinetuneError(f"init={path}: its tokenizer has {tokenizer.get_vocab_size()} tokens, more than the "
                            f"model's vocab_size={config.vocab_size}")
    init = Init(kind, path, config, tokenizer, special, checkpoint)
    if kind == "pretrain_run":
        init.knowledge, init.entity_table = fused_run(path, str(cfg.task.kind))
    return init


def fused_run(path: Path, kind: str) -> tuple[dict | None, torch.Tensor | None]:
    """(knowledge node, entity table) when the run at `path` was pre-trained with ERNIE-style fusion and the task
    kind can carry entities (data/entity_features.py); (None, None) otherwise: the plain layers fine-tune alone."""
    knowledge = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=False).get("knowledge") or {}
    if not knowledge.get("enabled"):
        return None, None
    if kind not in ENTITY_KINDS:
        log.info("init=%s is a knowledge-fusion run; task.kind=%s carries no entities, so its plain layers are "
                 "fine-tuned", path, kind)
        return None, None
    state = load_weights_only(path / "checkpoints" / "last.ckpt")["state_dict"]
    return knowledge, state["model.backbone.entity_table"]
