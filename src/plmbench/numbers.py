"""Numeric settings checked by key before any data is read: `optim.lr=fast` or `optim.lr=-1` gets one line naming
the key, the value and what is allowed, instead of a TypeError after data preparation or torch's unnamed
"Invalid learning rate: -1".

Each entry: key -> (kind, lowest allowed, whether the lowest itself is allowed, highest or None). Keys missing from
a config (an optimiser without betas, a command without a trainer) are skipped.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from plmbench.errors import UserError

Rule = tuple[type, float, bool, float | None]

OPTIMISER: dict[str, Rule] = {
    "optim.lr": (float, 0.0, False, None),
    "optim.eps": (float, 0.0, False, None),
    "optim.weight_decay": (float, 0.0, True, None),
    "optim.warmup_ratio": (float, 0.0, True, 1.0),
}
PRETRAINING: dict[str, Rule] = {
    **OPTIMISER,
    "trainer.max_steps": (int, -math.inf, True, None),  # the range check in validate_pretrain says what 0 means
    "trainer.batch_size": (int, 1, True, None),
    "trainer.accumulate_grad_batches": (int, 1, True, None),
    "trainer.val_check_interval": (int, 1, True, None),
    "trainer.limit_val_batches": (int, 1, True, None),
    "trainer.checkpoint_every_n_steps": (int, 1, True, None),
    "trainer.gradient_clip_val": (float, 0.0, True, None),
    "data.max_seq_len": (int, 1, True, None),
    "seed": (int, 0, True, None),
}
FINETUNING: dict[str, Rule] = {
    "task.lr": (float, 0.0, False, None),
    "task.batch_size": (int, 1, True, None),
    "task.max_length": (int, 1, True, None),
    "seed": (int, 0, True, None),
}

NAMES = {int: "an integer", float: "a number"}


class SettingError(UserError):
    """A numeric setting of the wrong type or out of range."""


def check_numbers(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    for key, (kind, low, low_allowed, high) in rules.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        if isinstance(value, ListConfig):  # a grid (task.lr=[1e-4,3e-4]): each value obeys the rule
            for index, item in enumerate(value):
                _check(f"{key}[{index}]", item, (kind, low, low_allowed, high))
        else:
            _check(key, value, (kind, low, low_allowed, high))


def _check(key: str, value, rule: Rule) -> None:
    kind, low, low_allowed, high = rule
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
    if (wrong_type or (kind is int and not float(value).is_integer()) or value < low
            or (value == low and not low_allowed) or (high is not None and value > high)):
        raise SettingError(f"{key}={value!r}: must be {NAMES[kind]}{_range(low, low_allowed, high)}")


def _range(low: float, low_allowed: bool, high: float | None) -> str:
    if low == -math.inf:
        return ""
    if high is not None:
        return f" from {low:g} to {high:g}"
    return f" >= {low:g}" if low_allowed else f" > {low:g}"
