"""Normalised task rows -> model inputs, batched through `datasets.map` and `Tokenizer.encode_batch`.

Every input is laid out as in pre-training: [CLS] A [SEP] B [SEP], segment 0 for [CLS] A [SEP] and 1 for B [SEP],
with the ids taken from SpecialTokens. Texts are encoded without special tokens and assembled here, so the layout
does not depend on the tokenizer's post-processor.

- classification / regression: A = text_a, B = text_b (pair tasks); the pair is cut longest-first (BERT's
  `_truncate_seq_pair`: one token at a time from the longer side). With `task.readout: mention` a `mention_mask`
  marks the tokens of text_a between `task.mention_markers` ('[' and ']' in the supersense probe).
- span (SQuAD): A = the question (first max_query_length tokens), B = one window of the context. A long context
  gives several windows that overlap by `doc_stride` tokens (the Hugging Face meaning of the word; BERT's
  run_squad.py used it for the step instead). Each window keeps the character offsets of its context tokens, so
  a predicted span maps back to exact text, and its start/end positions point at the answer's first and last
  token, or at [CLS] (index 0) when the answer is not wholly inside the window or the question has none.
- multiple_choice (RACE): one input per option, A = the article, B = the question with the option in its blank
  ("_") or appended (ALBERT's run_race.py); B keeps its last max_qa_length tokens, the article is cut to fit.
- tagging (CoNLL-2003): A = the sentence's words, encoded as pre-split input (`is_pretokenized`) so that the
  tokenizer's `word_ids` say which word every piece comes from. As BERT tags CoNLL-2003, the first piece of a word
  carries the word's label id; its other pieces, [CLS], [SEP] and padding carry IGNORE_INDEX, which the loss
  ignores. `word_ids` is kept per input (-1 on special tokens) so that predictions map back to words; a sentence
  longer than max_length loses its last pieces, and the words they held are predicted "O" when decoding
  (plmbench.data.tagging_decoding).
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
import numpy as np
import torch
from tokenizers import Tokenizer

from plmbench.data.collate import pad_sequences
from plmbench.data.masking import IGNORE_INDEX
from plmbench.data.tokenizer import SpecialTokens

CLS_INDEX = 0  # where an impossible or out-of-window answer points


class FeatureError(ValueError):
    """Task settings that cannot produce inputs (a window with no room for context, a length below 3)."""


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list:
    return tokenizer.encode_batch(texts, add_special_tokens=False)


def longest_first(len_a: np.ndarray, len_b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths kept by BERT's pair truncation (drop from the longer side, from B on ties), in closed form."""
    len_a, len_b = np.asarray(len_a), np.asarray(len_b)
    fits = len_a + len_b <= budget
    half_a, half_b = (budget + 1) // 2, budget // 2  # both long: ties drop from B first, so A keeps the odd token
    keep_a = np.where(len_a <= half_b, len_a, np.where(len_b <= half_b, budget - len_b, half_a))
    keep_b = np.where(len_a <= half_b, budget - len_a, np.where(len_b <= half_b, len_b, half_b))
    return np.where(fits, len_a, keep_a), np.where(fits, len_b, keep_b)


def assemble(a: list[int], b: list[int] | None, special: SpecialTokens) -> tuple[list[int], list[int]]:
    """([CLS] a [SEP] b [SEP], segment ids); b=None gives [CLS] a [SEP]."""
    ids = [special.cls, *a, special.sep]
    types = [0] * len(ids)
    if b is not None:
        ids += [*b, special.sep]
        types += [1] * (len(b) + 1)
    return ids, types


# ------------------------------------------------------------------------------------------ classification


def _sentence_features(rows: dict, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping) -> dict:
    max_length, pair = int(task["max_length"]), bool(task["pair"])
    encodings = _encode(tokenizer, rows["text_a"])
    a = [e.ids for e in encodings]
    if not pair:
        pieces = [assemble(x[: max_length - 2], None, special) for x in a]
    else:
        b = [e.ids for e in _encode(tokenizer, rows["text_b"])]
        keep_a, keep_b = longest_first([len(x) for x in a], [len(x) for x in b], max_length - 3)
        pieces = [assemble(x[:ka], y[:kb], special) for x, y, ka, kb in zip(a, b, keep_a, keep_b)]
    out = {"input_ids": [p[0] for p in pieces], "token_type_ids": [p[1] for p in pieces], "labels": rows["label"]}
    if task.get("readout", "summary") == "mention":
        markers = tuple(task["mention_markers"])
        out["mention_mask"] = [mention_mask(text, encoding.offsets, len(ids), markers)
                               for text, encoding, (ids, _) in zip(rows["text_a"], encodings, pieces)]
    return out


def mention_mask(text: str, offsets: list[tuple[int, int]], length: int, markers: tuple[str, str]) -> list[int]:
    """1 on the input positions of the tokens between the first pair of markers in `text` ('... the [horse] ran'),
    markers excluded, 0 elsewhere. A mention cut off by truncation (or a text without markers) marks [CLS]
    instead, so that every row still reads something; the probe's builder keeps such rows rare."""
    mask = [0] * length
    start = text.find(markers[0])
    end = text.find(markers[1], start + len(markers[0])) if start >= 0 else -1
    if end >= 0:
        inside = range(start + len(markers[0]), end)
        for position, (first, last) in enumerate(offsets[: length - 2], start=1):  # [CLS] is input position 0
            if first in inside and last <= end and last > first:
                mask[position] = 1
    if not any(mask):
        mask[CLS_INDEX] = 1
    return mask


# ------------------------------------------------------------------------------------------ multiple choice


def race_qa_text(question: str, option: str) -> str:
    """ALBERT's run_race.py: a cloze question gets the option in its blank, any other is followed by it."""
    return question.replace("_", option) if "_" in question else f"{question} {option}"


def _choice_features(rows: dict, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping) -> dict:
    budget, max_qa = int(task["max_length"]) - 3, int(task.get("max_qa_length") or task["max_length"])
    articles = [e.ids for e in _encode(tokenizer, rows["article"])]
    counts = [len(options) for options in rows["options"]]
    qa = [e.ids for e in _encode(tokenizer, [race_qa_text(q, o) for q, options in zip(rows["question"], rows["options"])
                                             for o in options])]
    input_ids, token_type_ids, at = [], [], 0
    for article, count in zip(articles, counts):
        ids, types = [], []
        for b in qa[at: at + count]:
            b = b[len(b) - min(len(b), max_qa, budget):]  # the option sits at the end: keep the tail
            pair = assemble(article[: budget - len(b)], b, special)
            ids.append(pair[0])
            types.append(pair[1])
        input_ids.append(ids)
        token_type_ids.append(types)
        at += count
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "labels": rows["label"]}


# ------------------------------------------------------------------------------------------ span


def window_starts(n_tokens: int, window: int, overlap: int) -> list[int]:
    """First context token of each window: windows of `window` tokens overlapping by `overlap`, covering all."""
    step = window - overlap
    starts = [0]
    while starts[-1] + window < n_tokens:
        starts.append(starts[-1] + step)
    return starts


def _answer_tokens(offsets: np.ndarray, answers: Mapping) -> tuple[int, int] | None:
    """(first, last) context token of the first gold answer, or None for an unanswerable question."""
    if not answers["text"]:
        return None
    start = int(answers["answer_start"][0])
    end = start + len(answers["text"][0])
    first = int(np.searchsorted(offsets[:, 1], start, side="right"))  # first token ending after the start
    last = int(np.searchsorted(offsets[:, 0], end, side="left")) - 1  # last token beginning before the end
    return first, last


def span_window(task: Mapping) -> tuple[int, int, int]:
    """(max_length, max_query_length, doc_stride), checked so that every window has fresh context."""
    max_length, max_query, stride = int(task["max_length"]), int(task["max_query_length"]), int(task["doc_stride"])
    room = max_length - max_query - 3
    if room <= stride:
        raise FeatureError(f"task.doc_stride={stride} must be below task.max_length - task.max_query_length - 3 = "
                           f"{room}: each window needs context the previous one did not have")
    return max_length, max_query, stride


def _span_features(rows: dict, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping) -> dict:
    max_length, max_query, stride = span_window(task)
    questions = [e.ids[:max_query] for e in _encode(tokenizer, [q.strip() for q in rows["question"]])]
    contexts = _encode(tokenizer, rows["context"])
    out = {k: [] for k in ("input_ids", "token_type_ids", "start_positions", "end_positions", "example_id",
                           "context_start", "offsets")}
    for question, context, answers, example_id in zip(questions, contexts, rows["answers"], rows["id"]):
        offsets = np.asarray(context.offsets, dtype=np.int64).reshape(-1, 2)
        answer = _answer_tokens(offsets, answers)
        window = max_length - len(question) - 3
        for first in window_starts(len(context.ids), window, stride):
            last = min(first + window, len(context.ids))  # exclusive
            ids, types = assemble(question, context.ids[first:last], special)
            context_start = len(question) + 2
            inside = answer is not None and first <= answer[0] and answer[1] < last
            out["input_ids"].append(ids)
            out["token_type_ids"].append(types)
            out["start_positions"].append(context_start + answer[0] - first if inside else CLS_INDEX)
            out["end_positions"].append(context_start + answer[1] - first if inside else CLS_INDEX)
            out["example_id"].append(example_id)
            out["context_start"].append(context_start)
            out["offsets"].append(offsets[first:last].tolist())
    return out


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
        out.append(IGNORE_INDEX if word is None or word == previous else ids[tags[word]])
        previous = word
    return out


def tagging_features(rows: dict, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping) -> dict:
    """A batch of {tokens, tags} rows -> input_ids, token_type_ids, labels, word_ids."""
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
        out["labels"].append([IGNORE_INDEX, *align_labels(word_ids, tags, ids), IGNORE_INDEX])
        out["word_ids"].append([NO_WORD, *(NO_WORD if w is None else w for w in word_ids), NO_WORD])
    return out


BUILDERS = {
    "classification": _sentence_features,
    "regression": _sentence_features,
    "span": _span_features,
    "multiple_choice": _choice_features,
    "tagging": tagging_features,  # CoNLL-2003 NER: one label per word, on its first piece
}


def build_features(rows: datasets.Dataset, tokenizer: Tokenizer, special: SpecialTokens, task: Mapping,
                   batch_size: int = 1000) -> datasets.Dataset:
    """Model inputs for one split. SQuAD gives one row per window (several per question), others one per row."""
    kind = task["kind"]
    if kind not in BUILDERS:
        raise FeatureError(f"task.kind={kind!r}: allowed values are {', '.join(BUILDERS)}")
    if int(task["max_length"]) < 3:
        raise FeatureError(f"task.max_length={task['max_length']}: must be at least 3 ([CLS] A [SEP])")
    tokenizer.encode_special_tokens = True  # "[SEP]" written in a text is text, not a separator
    build = BUILDERS[kind]
    return rows.map(lambda batch: build(batch, tokenizer, special, task), batched=True, batch_size=batch_size,
                    remove_columns=rows.column_names, load_from_cache_file=False, desc=f"features ({kind})")


# ------------------------------------------------------------------------------------------ batches

MODEL_COLUMNS = ("input_ids", "token_type_ids", "entity_ids", "mention_mask", "labels", "start_positions",
                 "end_positions")


class FeatureCollator:
    """Pads a list of feature rows into tensors: (B, T) inputs, or (B, C, T) for multiple choice."""

    def __init__(self, special: SpecialTokens):
        self.special = special

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = rows[0]["input_ids"]
        choices = len(ids) if ids and isinstance(ids[0], list) else None
        flat = (lambda key: [seq for row in rows for seq in row[key]]) if choices else \
            (lambda key: [row[key] for row in rows])
        sequences = flat("input_ids")
        length = max(map(len, sequences))
        lengths = torch.tensor([len(seq) for seq in sequences])
        batch = {
            "input_ids": torch.from_numpy(pad_sequences(sequences, self.special.pad, length)),
            "token_type_ids": torch.from_numpy(pad_sequences(flat("token_type_ids"), 0, length)),
            "attention_mask": (torch.arange(length)[None, :] < lengths[:, None]).long(),
        }
        if "entity_ids" in rows[0]:  # a fused (knowledge=ernie) model's linked entities, -1 = none
            batch["entity_ids"] = torch.from_numpy(pad_sequences(flat("entity_ids"), -1, length))
        if "mention_mask" in rows[0]:  # a mention read-out's positions (task.readout=mention)
            batch["mention_mask"] = torch.from_numpy(pad_sequences(flat("mention_mask"), 0, length))
        if choices:
            batch = {key: value.view(len(rows), choices, length) for key, value in batch.items()}
        for key in ("labels", "start_positions", "end_positions"):
            if key in rows[0]:
                batch[key] = torch.tensor([row[key] for row in rows])
        return batch


class TaggingCollator(FeatureCollator):
    """FeatureCollator's padded inputs, with the per-piece labels padded with -100 to the same length."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        labels = [row["labels"] for row in rows] if "labels" in rows[0] else None
        batch = super().__call__([{k: v for k, v in row.items() if k not in ("labels", "word_ids")} for row in rows])
        if labels is not None:
            length = batch["input_ids"].shape[1]
            batch["labels"] = torch.from_numpy(pad_sequences(labels, IGNORE_INDEX, length))
        return batch
