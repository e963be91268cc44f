"""Batches of pre-training instances: pad, build the attention mask, and mask for MLM or copy labels for CLM.

Which labels come out follows from what is given:
- a Masker: dynamic masking (RoBERTa), a fresh mask every time a sequence is batched;
- rows with `mlm_labels`: static masking (BERT), the masks stored by `build_instances(static_masking=...)`;
- neither: causal LM, labels = input_ids with padding ignored (the shift happens in the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch

from plmbench.data.masking import IGNORE_INDEX, Masker
from plmbench.data.tokenizer import SpecialTokens


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, length: int, dtype=np.int64) -> np.ndarray:
    """[len(sequences), length] array: each sequence left-aligned, the rest `value`. No per-token Python loop."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    out = np.full((len(sequences), length), value, dtype=dtype)
    flat = np.fromiter(chain.from_iterable(sequences), dtype=dtype, count=int(lengths.sum()))
    out[np.arange(length)[None, :] < lengths[:, None]] = flat  # row-major order matches the concatenation
    return out


class PretrainCollator:
    """list of instances -> input_ids, token_type_ids, attention_mask (0/1 long), labels, sentence_label, and
    entity_ids (-1 = none, also on padding) when the instances carry them.

    `pad_to` pads every batch to one length (static shapes for torch.compile); None pads to the longest row.
    `generator` seeds dynamic masking in a single process; leave it None under a multi-worker DataLoader,
    which seeds torch's global generator differently in every worker. `segments=False` (a model with one segment
    type, RoBERTa) gives every token segment 0, whatever segment pair the instance was built from.
    """

    def __init__(self, special: SpecialTokens, masker: Masker | None = None, pad_to: int | None = None,
                 generator: torch.Generator | None = None, segments: bool = True):
        self.special, self.masker, self.pad_to, self.generator = special, masker, pad_to, generator
        self.segments = segments

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        ids = [row["input_ids"] for row in rows]
        longest = max(map(len, ids))
        if self.pad_to is not None and longest > self.pad_to:
            raise ValueError(f"an instance has {longest} tokens, more than pad_to={self.pad_to} (data.max_seq_len)")
        length = self.pad_to or longest

        input_ids = torch.from_numpy(pad_sequences(ids, self.special.pad, length))
        lengths = torch.tensor([len(x) for x in ids])
        attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        token_types = [(self.segments and row.get("token_type_ids")) or [0] * len(row["input_ids"]) for row in rows]
        batch = {
            "token_type_ids": torch.from_numpy(pad_sequences(token_types, 0, length)),
            "attention_mask": attention_mask,
            "sentence_label": torch.tensor([row.get("sentence_label", -1) for row in rows], dtype=torch.long),
        }
        if "mlm_labels" in rows[0]:
            if self.masker is not None:
                raise ValueError("instances carry static masks (mlm_labels) and a Masker was given: use one")
            labels = torch.from_numpy(pad_sequences([row["mlm_labels"] for row in rows], IGNORE_INDEX, length))
        elif self.masker is not None:
            word_start = None
            if "word_start" in rows[0]:
                word_start = torch.from_numpy(pad_sequences([row["word_start"] for row in rows], False, length, bool))
            input_ids, labels = self.masker(input_ids, word_start, self.generator)
        else:
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        if "entity_ids" in rows[0]:  # knowledge fusion; ids stay on MLM-masked tokens, as in ERNIE (see instances)
            batch["entity_ids"] = torch.from_numpy(pad_sequences([row["entity_ids"] for row in rows], -1, length))
        return {"input_ids": input_ids, **batch, "labels": labels}
