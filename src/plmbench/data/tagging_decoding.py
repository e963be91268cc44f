"""Per-piece tagging logits -> one IOB2 tag per word, for seqeval.

A word's tag is the argmax at its first piece (the piece that carried its label in training). A word with no piece
in the input (cut by max_length, or a character the tokenizer drops) is predicted "O", so every predicted sequence
is exactly as long as its gold sequence and a truncated sentence is scored in full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def decode_tags(logits: np.ndarray, word_ids: Sequence[int], n_words: int, labels: Sequence[str]) -> list[str]:
    """(T, num_labels) logits of one input and its pieces' word ids (-1 for special tokens) -> n_words tags."""
    best = np.asarray(logits)[: len(word_ids)].argmax(-1)
    tags = ["O"] * n_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word >= 0 and word not in seen:
            seen.add(word)
            tags[word] = labels[int(best[position])]
    return tags


def score_tagging(split, logits: list[torch.Tensor], task: Mapping, metric) -> dict:
    """seqeval on an evaluation split from the per-batch (B, T_batch, num_labels) logits, in the split's order
    (the signature of plmbench.lit.finetune_module.SCORERS, so it can be registered there as "tagging")."""
    rows = [row for batch in logits for row in batch]
    word_ids = split.features["word_ids"]
    examples = split.examples.select_columns(["tokens", "tags"]).to_list()
    predictions = [decode_tags(row.numpy(), ids, len(example["tokens"]), task["labels"])
                   for row, ids, example in zip(rows, word_ids, examples)]
    return metric.compute(predictions=predictions, references=[example["tags"] for example in examples])
