"""Token tagging inputs: a sentence's words -> [CLS] pieces [SEP], with each word's label on its first piece.

Words are encoded as pre-split input (`is_pretokenized`), so the tokenizer's `word_ids` say which word every piece
comes from. As BERT tags CoNLL-2003, the first piece of a word carries the word's label id; its other pieces,
[CLS], [SEP] and padding carry -100, which the loss ignores. `word_ids` is kept per input (-1 on special tokens) so
that predictions map back to words; a sentence longer than max_length loses its last pieces, and the words they held
are predicted "O" when decoding (plmbench.data.tagging_decoding).
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
import torch
from tokenizers import Tokenizer

from plmbench.data.collate import pad_sequences
from plmbench.data.features import FeatureCollator, FeatureError, assemble
from plmbench.data.tokenizer import SpecialTokens
from plmbench.models.heads import IGNORE

NO_WORD = -1  # word_ids of [CLS] and [SEP]


def label_ids(task: Mapping) -> dict[str, int]:
    labels = list(task.get("labels") or [])
    if len(labels) != int(task["num_labels"]):
        raise FeatureError(f"task.labels has {len(labels)} tags but task.num_labels={task['num_labels']}")
    return {tag: i for i, tag in enumerate(labels)}


def align_labels(word_ids: list[int | None], tags: list[str], ids: Mapping[str, int]) -> list[int]:
    """Per piece: the word's label id on its first piece, -100 on later pieces and on pieces of no word."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else ids[tags[word]])
        previous = word
    return out


def tagging_features(rows: dict, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping) -> dict:
    """A batch of {tokens, tags} rows -> input_ids, token_type_ids, labels, word_ids (same shape as
    plmbench.data.features.BUILDERS' functions, so it can be registered there as "tagging")."""
    ids = label_ids(task)
    room = int(task["max_length"]) - 2
    out = {"input_ids": [], "token_type_ids": [], "labels": [], "word_ids": []}
    for words, tags, encoding in zip(rows["tokens"], rows["tags"],
                                     tokenizer.encode_batch(rows["tokens"], is_pretokenized=True,
                                                            add_special_tokens=False)):
        unknown = sorted(set(tags) - set(ids))
        if unknown:
            raise FeatureError(f"tag {unknown[0]!r} is not one of task.labels ({', '.join(ids)})")
        word_ids = encoding.word_ids[:room]
        input_ids, types = assemble(encoding.ids[:room], None, special)
        out["input_ids"].append(input_ids)
        out["token_type_ids"].append(types)
        out["labels"].append([IGNORE, *align_labels(word_ids, tags, ids), IGNORE])
        out["word_ids"].append([NO_WORD, *(NO_WORD if w is None else w for w in word_ids), NO_WORD])
    return out


def build_tagging_features(rows: datasets.Dataset, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping,
                           batch_size: int = 1000) -> datasets.Dataset:
    if int(task["max_length"]) < 3:
        raise FeatureError(f"task.max_length={task['max_length']}: must be at least 3 ([CLS] word [SEP])")
    tokenizer.encode_special_tokens = True  # a word that spells "[SEP]" is a word
    return rows.map(lambda batch: tagging_features(batch, tokenizer, special, task), batched=True,
                    batch_size=batch_size, remove_columns=rows.column_names, load_from_cache_file=False,
                    desc="features (tagging)")


class TaggingCollator(FeatureCollator):
    """FeatureCollator's padded inputs, with the per-piece labels padded with -100 to the same length."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        labels = [row["labels"] for row in rows] if "labels" in rows[0] else None
        batch = super().__call__([{k: v for k, v in row.items() if k not in ("labels", "word_ids")} for row in rows])
        if labels is not None:
            length = batch["input_ids"].shape[1]
            batch["labels"] = torch.from_numpy(pad_sequences(labels, IGNORE, length))
        return batch
