"""DistilBERT's and TinyBERT's distillation losses.

Soft targets are matched by KL(p_teacher || p_student), not by the papers' cross-entropy -sum p_teacher log
p_student: the two differ by the teacher's entropy, a constant for the student, so the gradients are identical,
but the KL is zero when the student predicts what the teacher predicts (which the tests check for every term).

- DistilBERT (Sanh et al. 2019): alpha_ce * T^2 * KL at temperature T on every real token (Hugging Face's
  distiller.py with its default restrict_ce_to_mask=False, not only the masked ones) + alpha_mlm * MLM on the
  masked tokens + alpha_cos * (1 - cos) between student and teacher last hidden states on real tokens; 5.0, 2.0,
  1.0, T = 2.
- TinyBERT (Jiao et al. 2020): MSE of the embedding outputs (student's through W_e: H_s -> H_t), MSE of the
  hidden states of each mapped layer pair (through W_h), MSE of the *unnormalised* attention scores of each pair
  (the paper found them better than probabilities), and the soft-target loss on predictions. Each layer term is
  summed over the layer pairs, as in the paper; every MSE is averaged over real tokens (padding never counts).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.masking import IGNORE_INDEX
from plmbench.distill import DistillError
from plmbench.distill.attention_scores import Trace

DISTILBERT_WEIGHTS = {"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0}
TINYBERT_WEIGHTS = {"embedding": 1.0, "hidden": 1.0, "attention": 1.0, "prediction": 1.0}


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over rows (every dim but the last)."""
    t = float(temperature)
    student = F.log_softmax(student_logits.float().reshape(-1, student_logits.shape[-1]) / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.float().reshape(-1, teacher_logits.shape[-1]) / t, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * t * t


def _span_soft_targets(student_logits, teacher_logits, temperature):
    """(B, T, 2) start/end logits: a distribution over positions for the start and one for the end."""
    return soft_target_loss(student_logits.transpose(1, 2), teacher_logits.transpose(1, 2), temperature)


def _regression_mse(student_logits, teacher_logits, temperature):
    return F.mse_loss(student_logits.float(), teacher_logits.float())  # TinyBERT: MSE for STS-B, no temperature


# How predictions are matched, by what the logits are: MLM and classification rows, spans, or scores.
PREDICTION_LOSSES = {
    "mlm": soft_target_loss,
    "classification": soft_target_loss,
    "multiple_choice": soft_target_loss,
    "span": _span_soft_targets,
    "regression": _regression_mse,
}


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor | None):
    """Mean of 1 - cos(student, teacher) over real tokens (PyTorch's CosineEmbeddingLoss with target 1)."""
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return _masked_mean(1.0 - cos, attention_mask)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor | None):
    """Mean squared error over real tokens and features of (B, T, H) states of equal width."""
    error = (student.float() - teacher.float()).pow(2).mean(-1)
    return _masked_mean(error, attention_mask)


def attention_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor, attention_mask: torch.Tensor | None):
    """Mean squared error of (B, heads, T, T) attention scores over pairs of real tokens (query and key)."""
    error = (student_scores.float() - teacher_scores.float()).pow(2)
    if attention_mask is None:
        return error.mean()
    real = attention_mask.bool()
    pairs = (real[:, None, :, None] & real[:, None, None, :]).expand_as(error)
    return error[pairs].mean()


def _masked_mean(values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return values.mean()
    return values[attention_mask.bool()].mean()


def _weights(given: Mapping | None, defaults: dict, key: str) -> dict:
    weights = {**defaults, **dict(given or {})}
    unknown = sorted(set(weights) - set(defaults))
    if unknown:
        raise DistillError(f"{key}: unknown weight(s) {', '.join(unknown)}; allowed: {', '.join(defaults)}")
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise DistillError(f"{key}.{name}={value!r}: must be a number >= 0")
    if not any(weights.values()):
        raise DistillError(f"{key}: every weight is 0; at least one loss term must count")
    return {name: float(value) for name, value in weights.items()}


def _temperature(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DistillError(f"distill.loss.temperature={value!r}: must be a number > 0")
    return float(value)


class DistilBertLoss(nn.Module):
    """Needs the last hidden states of both models, and MLM logits at every real token with their labels
    (IGNORE_INDEX where the token was not masked): the soft targets count every row, the MLM loss the masked ones."""

    needs_layers = False  # the plain SDPA forward is enough

    def __init__(self, weights: Mapping | None = None, temperature: float = 2.0):
        super().__init__()
        self.weights = _weights(weights, DISTILBERT_WEIGHTS, "distill.loss")
        self.temperature = _temperature(temperature)

    @property
    def needs_logits(self) -> bool:
        return bool(self.weights["alpha_ce"] or self.weights["alpha_mlm"])

    def forward(self, student: Trace, teacher: Trace, attention_mask, student_logits=None, teacher_logits=None,
                labels=None) -> dict:
        if student.last_hidden.shape[-1] != teacher.last_hidden.shape[-1]:
            raise DistillError(f"DistilBERT's cosine loss needs the teacher's width {teacher.last_hidden.shape[-1]}; "
                               f"the student has {student.last_hidden.shape[-1]}")
        w = self.weights
        terms = {"cos": cosine_loss(student.last_hidden, teacher.last_hidden, attention_mask)}
        if self.needs_logits:
            terms["ce"] = soft_target_loss(student_logits, teacher_logits, self.temperature)
            terms["mlm"] = F.cross_entropy(student_logits.float(), labels, ignore_index=IGNORE_INDEX)
        total = sum(w[f"alpha_{name}"] * value for name, value in terms.items())
        return {"loss": total, **{f"{name}_loss": value for name, value in terms.items()}}


class TinyBertLoss(nn.Module):
    """Holds the learned projections W_e and W_h (student width -> teacher width) and the layer map."""

    needs_layers = True

    def __init__(self, student_hidden: int, teacher_hidden: int, layer_map: list[int],
                 weights: Mapping | None = None, temperature: float = 1.0, prediction: str = "mlm"):
        super().__init__()
        self.weights = _weights(weights, TINYBERT_WEIGHTS, "distill.loss")
        self.temperature = _temperature(temperature)
        if prediction not in PREDICTION_LOSSES:
            raise DistillError(f"prediction={prediction!r}: allowed values are {', '.join(PREDICTION_LOSSES)}")
        self.prediction = PREDICTION_LOSSES[prediction]
        self.layer_map = list(layer_map)
        self.embedding_projection = nn.Linear(student_hidden, teacher_hidden)
        self.hidden_projection = nn.Linear(student_hidden, teacher_hidden)
        for linear in (self.embedding_projection, self.hidden_projection):
            nn.init.normal_(linear.weight, 0.0, 0.02), nn.init.zeros_(linear.bias)  # as TinyBERT's fit_dense

    @property
    def needs_logits(self) -> bool:
        return bool(self.weights["prediction"])

    def forward(self, student: Trace, teacher: Trace, attention_mask, student_logits=None, teacher_logits=None,
                labels=None, weights: Mapping | None = None) -> dict:
        """`weights` overrides the configured ones for one call (task-specific distillation's two stages)."""
        w = dict(weights) if weights is not None else self.weights
        terms = {}
        if w["embedding"]:
            terms["embedding"] = hidden_mse(self.embedding_projection(student.hidden_states[0]),
                                            teacher.hidden_states[0], attention_mask)
        pairs = list(enumerate(self.layer_map, start=1))  # (student layer m, teacher layer g(m)), 1-based
        if w["hidden"]:
            terms["hidden"] = sum(hidden_mse(self.hidden_projection(student.hidden_states[m]),
                                             teacher.hidden_states[g], attention_mask) for m, g in pairs)
        if w["attention"]:
            terms["attention"] = sum(attention_mse(student.scores[m - 1], teacher.scores[g - 1], attention_mask)
                                     for m, g in pairs)
        if w["prediction"] and student_logits is not None:
            terms["prediction"] = self.prediction(student_logits, teacher_logits, self.temperature)
        total = sum(w[name] * value for name, value in terms.items())
        return {"loss": total, **{f"{name}_loss": value for name, value in terms.items()}}
