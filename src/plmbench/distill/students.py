"""Students of a teacher: their shapes, which teacher layer each student layer learns from, and their weights.

- DistilBERT (Sanh et al. 2019): half the teacher's layers, the same width, no segment embeddings, no pooler;
  the student's layers start as copies of teacher layers 0, 2, 4, 7, 9, 11 of BERT-base's 12, as Hugging Face's
  scripts/extract_distilbert.py picks them (see `distilbert_layer_map` for other depths). A teacher with
  cross-layer sharing (ALBERT) runs one instance several times; the student gets unshared copies of the instances
  those layers use.
- TinyBERT (Jiao et al. 2020): a smaller shape of its own, trained from scratch. Student layer m (1..M) learns
  from teacher layer g(m) = m * N / M (the uniform map; 0 is the embedding layer). The shape defaults to
  TinyBERT-4's proportions of BERT-base, so a BERT-base teacher gets exactly TinyBERT-4 (L4 H312 FFN1200 A12).

Every student is a `StudentMLM`: a backbone and a masked-LM head, saved under the same keys as the pre-training
objectives' (`backbone.*`, `mlm_head.*`), so a distillation run directory is a fine-tuning init like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from plmbench.distill import DistillError
from plmbench.models.backbone import Backbone
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.models.heads import MLMHead
from plmbench.models.layers import init_weights

BERT_BASE = {"num_layers": 12, "hidden_size": 768, "ffn_size": 3072}  # the teacher TinyBERT-4 was cut from
TINYBERT_4 = {"num_layers": 4, "hidden_size": 312, "ffn_size": 1200}  # with A12: the teacher's 12 heads
SHAPE_KEYS = ("num_layers", "hidden_size", "ffn_size", "num_heads")


class StudentMLM(nn.Module):
    """A backbone and an MLM head whose decoder is tied to the input embeddings; no sentence head, no pooler."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.mlm_head = MLMHead(config, self.backbone.embeddings.word)
        init_weights(self.mlm_head.dense, config), init_weights(self.mlm_head.norm, config)


# ------------------------------------------------------------------------------------------ DistilBERT


def distilbert_config(teacher: ModelConfig) -> ModelConfig:
    if teacher.num_layers < 2:
        raise DistillError(f"a DistilBERT student keeps half the teacher's layers; the teacher has "
                           f"model.num_layers={teacher.num_layers} (needs at least 2)")
    return teacher.replace(num_layers=teacher.num_layers // 2, type_vocab_size=0, sharing="none")


def distilbert_layer_map(teacher_layers: int) -> list[int]:
    """Teacher layer (0-based) each student layer is copied from, for a student of teacher_layers // 2 layers.

    extract_distilbert.py copies layers 0, 2, 4, 7, 9, 11 of 12: every other layer up from the first for half the
    student, every other layer down from the last for the rest. The same rule at any depth: 4 -> [0, 3],
    6 -> [0, 2, 5], 8 -> [0, 2, 5, 7], 24 -> [0, 2, ..., 10, 13, 15, ..., 23]; the first and last layers are kept.
    """
    student_layers = teacher_layers // 2
    bottom = [2 * m for m in range((student_layers + 1) // 2)]
    top = [teacher_layers - 1 - 2 * m for m in range(student_layers // 2)]
    return bottom + top[::-1]


@torch.no_grad()
def init_distilbert(student: StudentMLM, teacher: nn.Module) -> list[int]:
    """Copy the teacher's embeddings, projection, chosen layers and MLM head into `student`; returns the map.

    The student has no segment table: the teacher's segment-A vector, which every single-segment input adds,
    is folded into the position table, so the student's embedding output starts equal to the teacher's there.
    """
    ours, theirs = student.backbone, teacher.backbone
    ours.embeddings.word.weight.copy_(theirs.embeddings.word.weight)
    position = theirs.embeddings.position.weight
    if theirs.embeddings.segment is not None:
        position = position + theirs.embeddings.segment.weight[0]
    ours.embeddings.position.weight.copy_(position)
    ours.embeddings.norm.load_state_dict(theirs.embeddings.norm.state_dict())
    ours.projection.load_state_dict(theirs.projection.state_dict())
    ours.final_norm.load_state_dict(theirs.final_norm.state_dict())
    layer_map = distilbert_layer_map(len(theirs.layers))
    for student_layer, teacher_index in zip(ours.layers, layer_map):
        student_layer.load_state_dict(theirs.layers[teacher_index].state_dict())  # a shared instance: its weights
    student.mlm_head.load_state_dict(teacher.mlm_head.state_dict())  # its tied decoder: the words just copied
    return layer_map


# ------------------------------------------------------------------------------------------ TinyBERT


def _round(value: float, multiple: int = 1) -> int:
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)  # half up, never 0


def tinybert_config(teacher: ModelConfig, shape: Mapping | None = None, prefix: str = "distill.student") -> ModelConfig:
    """The student's shape: each key of `shape` that is null follows TinyBERT-4's proportions of BERT-base.

    Heads default to the teacher's: the attention-score loss compares the two models head by head.
    """
    shape = dict(shape or {})
    unknown = sorted(set(shape) - set(SHAPE_KEYS))
    if unknown:
        raise DistillError(f"{prefix}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SHAPE_KEYS)}")
    for key, value in shape.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise DistillError(f"{prefix}.{key}={value!r}: must be a positive integer or null")
    heads = shape.get("num_heads") or teacher.num_heads
    if heads != teacher.num_heads:
        raise DistillError(f"{prefix}.num_heads={heads}: TinyBERT's attention loss pairs student and teacher heads, "
                           f"so it must equal the teacher's {teacher.num_heads} (or be null)")
    layers = shape.get("num_layers") or _round(teacher.num_layers * TINYBERT_4["num_layers"] / BERT_BASE["num_layers"])
    hidden = shape.get("hidden_size") or _round(
        teacher.hidden_size * TINYBERT_4["hidden_size"] / BERT_BASE["hidden_size"], heads)
    ffn = shape.get("ffn_size") or _round(hidden * TINYBERT_4["ffn_size"] / TINYBERT_4["hidden_size"])
    if layers > teacher.num_layers:
        raise DistillError(f"{prefix}.num_layers={layers}: the layer map g(m) = m * N / M needs at most the "
                           f"teacher's {teacher.num_layers} layers")
    config = teacher.replace(num_layers=layers, hidden_size=hidden, ffn_size=ffn, num_heads=heads,
                             embedding_size=hidden, sharing="none")
    try:
        config.validate(prefix)
    except ConfigError as error:
        raise DistillError(str(error)) from None
    return config


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """g(m) = m * N / M for student layers m = 1..M: the teacher layer (1-based; 0 = embeddings) each learns from."""
    return [m * teacher_layers // student_layers for m in range(1, student_layers + 1)]


# ------------------------------------------------------------------------------------------ registry


def build_student(kind: str, teacher: nn.Module, shape: Mapping | None = None) -> tuple[StudentMLM, dict]:
    """(student, description) for `distill.kind`; DistilBERT's student starts from the teacher's weights."""
    if kind not in STUDENTS:
        raise DistillError(f"distill.kind={kind!r}: allowed values are {', '.join(STUDENTS)}")
    return STUDENTS[kind](teacher, shape)


def _distilbert(teacher: nn.Module, shape: Mapping | None) -> tuple[StudentMLM, dict]:
    if shape and any(v is not None for v in shape.values()):
        raise DistillError(f"distill.student={dict(shape)}: DistilBERT's shape follows the teacher (half its "
                           "layers, same width); leave distill.student empty")
    student = StudentMLM(distilbert_config(teacher.config))
    layer_map = init_distilbert(student, teacher)
    return student, {"init": "teacher layers", "init_layers": layer_map}


def _tinybert(teacher: nn.Module, shape: Mapping | None) -> tuple[StudentMLM, dict]:
    student = StudentMLM(tinybert_config(teacher.config, shape))
    return student, {"init": "random", "layer_map": uniform_layer_map(student.config.num_layers,
                                                                      teacher.config.num_layers)}


STUDENTS = {"distilbert": _distilbert, "tinybert": _tinybert}


def shape_of(config: ModelConfig) -> dict:
    return {"num_layers": config.num_layers, "hidden_size": config.hidden_size, "ffn_size": config.ffn_size,
            "num_heads": config.num_heads, "embedding_size": config.embedding_size,
            "type_vocab_size": config.type_vocab_size, "sharing": config.sharing}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a shared tensor counts once
