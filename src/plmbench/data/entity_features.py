"""Entity ids for fine-tuning inputs, so that a model pre-trained with ERNIE-style fusion sees its entities on tasks.

ERNIE fine-tunes with the entities of the task's text linked as in pre-training (thunlp/ERNIE code/run_*.py feed
`input_ent` and `ent_mask` beside the tokens). Here each text of a row is linked by the WordNet linker of the
pre-training run (data/entity_ids.py) and aligned to its first sub-word; the ids are then laid out as the task's
inputs are (data/features.py): -1 on [CLS] and [SEP], each segment cut exactly where its tokens were cut. The
segment lengths are read back from the built features' segment ids, so the two layouts cannot drift apart.

Kinds: classification, regression (text_a, text_b) and multiple choice (article, question + option). Span and
tagging inputs are windows and word pieces of their own; a fused run fine-tunes on them without entities.
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
from tokenizers import Tokenizer

from plmbench.data.entity_ids import LinkingSpec, linker_for, sentence_entity_ids
from plmbench.data.features import race_qa_text

KINDS = frozenset({"classification", "regression", "multiple_choice"})
NONE = -1  # no entity at this position (also [CLS], [SEP] and padding)


def segment_lengths(token_type_ids: list[int]) -> tuple[int, int]:
    """(tokens kept of A, tokens kept of B) of a [CLS] A [SEP] (B [SEP]) input."""
    second = sum(1 for t in token_type_ids if t == 1)
    return len(token_type_ids) - second - 2, max(second - 1, 0)


def layout(ids_a: list[int], ids_b: list[int] | None, types: list[int], b_from_end: bool = False) -> list[int]:
    """Entity ids in the input's layout: A cut to its kept head, B to its kept head (or tail, `b_from_end`)."""
    keep_a, keep_b = segment_lengths(types)
    out = [NONE, *ids_a[:keep_a], NONE]
    if ids_b is not None and any(t == 1 for t in types):
        out += [*(ids_b[len(ids_b) - keep_b:] if b_from_end else ids_b[:keep_b]), NONE]
    if len(out) != len(types):
        raise ValueError(f"entity ids ({len(out)}) do not match the input ({len(types)} tokens)")
    return out


def _linked(texts: list[str], tokenizer: Tokenizer, spec: LinkingSpec) -> list[list[int]]:
    linker = linker_for(spec)
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [sentence_entity_ids(linker, text, encoding) for text, encoding in zip(texts, encodings)]


def _sentence_entities(rows: Mapping, features: Mapping, tokenizer: Tokenizer, spec: LinkingSpec) -> list:
    a = _linked(rows["text_a"], tokenizer, spec)
    b = _linked(rows["text_b"], tokenizer, spec) if "text_b" in rows else [None] * len(a)
    return [layout(x, y, types) for x, y, types in zip(a, b, features["token_type_ids"])]


def _choice_entities(rows: Mapping, features: Mapping, tokenizer: Tokenizer, spec: LinkingSpec) -> list:
    articles = _linked(rows["article"], tokenizer, spec)
    qa = _linked([race_qa_text(q, o) for q, options in zip(rows["question"], rows["options"]) for o in options],
                 tokenizer, spec)
    out, at = [], 0
    for article, types in zip(articles, features["token_type_ids"]):
        out.append([layout(article, b, t, b_from_end=True) for b, t in zip(qa[at: at + len(types)], types)])
        at += len(types)
    return out


BUILDERS = {"classification": _sentence_entities, "regression": _sentence_entities,
            "multiple_choice": _choice_entities}


def attach_entity_ids(rows: datasets.Dataset, features: datasets.Dataset, tokenizer: Tokenizer, task: Mapping,
                      spec: LinkingSpec, batch_size: int = 1000) -> datasets.Dataset:
    """`features` (built from `rows`, one feature row per row) with an `entity_ids` column in the same layout."""
    build = BUILDERS[task["kind"]]
    entity_ids = []
    for start in range(0, len(rows), batch_size):
        end = min(start + batch_size, len(rows))
        entity_ids += build(rows[start:end], features[start:end], tokenizer, spec)
    return features.add_column("entity_ids", entity_ids)
