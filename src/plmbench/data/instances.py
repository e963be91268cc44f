"""Pre-training instances from a corpus, cached on disk by content.

Three packings, after the papers:

- `segment_pair` (BERT's create_pretraining_data.py): sentences of one document accumulate into a chunk until a
  target length, the chunk splits at a random sentence boundary into A and B, and the pair is trimmed from random
  ends to fit [CLS] A [SEP] B [SEP]. The sentence task decides B: `nsp` replaces it half of the time by text from
  another document (the unused sentences go back to the document), `sop` (ALBERT) swaps A and B half of the time,
  `none` keeps them in order with no label.
- `full_sentences` (RoBERTa): contiguous sentences packed up to max_seq_len, crossing document boundaries with an
  extra separator; one segment, no sentence task.
- `causal` (GPT): documents joined by the separator and cut into blocks of exactly max_seq_len tokens.

`sentence_label` follows Hugging Face (BertForPreTraining's next_sentence_label): 0 = B continues A in order,
1 = B is random (nsp) or swapped (sop), -1 = no sentence task.

Departures from the reference code, each for a reason:
- BERT draws the short target length once per document, so long documents make every one of their instances
  short; here it is drawn per instance, so `short_seq_prob` of the instances are short as the comment there intends.
- BERT runs one random stream over a shuffled corpus; here every document (packings: every unit of
  DOCS_PER_UNIT documents) has its own stream seeded by (seed, copy, index), so the result does not depend on
  `num_proc`. Instances are not shuffled: the DataLoader does that.
- The random document for an NSP negative is drawn from the other documents (BERT tries 10 times to avoid its own).
- SOP needs two segments; a chunk of one sentence is cut at a random token instead of borrowing another document
  (which ALBERT's code does, making such negatives NSP-like). Documents of one sentence are skipped for nsp/sop.
- Text that spells a special token ("[SEP]") is tokenized as text, so specials only appear where placed here.

Knowledge fusion (`entity_linking`, a data.entity_ids.LinkingSpec): every sentence is linked to WordNet when it is
tokenized (data/tokenized_documents.py), and an `entity_ids` column (the entity on the first sub-word of each
mention, -1 elsewhere and on special tokens) travels beside input_ids and word_start through packing, truncation and
static masking, as ERNIE's create_instances.py carries its entity list beside the tokens. Masking (static here,
dynamic in the collator) never touches entity_ids: a masked token keeps its entity, as in ERNIE, whose
create_masked_lm_predictions rewrites the tokens only (dEA corrupts entities on its own, objectives/dea.py). Without
linking nothing changes: same columns, same cache keys.
"""

from __future__ import annotations

import bisect
import json
import logging
import random
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, Features, List, Value, load_from_disk
from tokenizers import Tokenizer

from plmbench import paths
from plmbench.data import cache_publish
from plmbench.data.cache_publish import content_hash
from plmbench.data.entity_ids import LinkingSpec
from plmbench.data.masking import Masker
from plmbench.data.tokenized_documents import DOC_COLUMNS, tokenized_documents
from plmbench.data.tokenizer import Corpus, SpecialTokens, tokenizer_fingerprint

log = logging.getLogger(__name__)

INSTANCES_VERSION = 1  # bump when the output of this module changes, so caches are rebuilt
DOCS_PER_UNIT = 128  # documents per work unit: a unit's instances never depend on other units' random draws
SENTENCE_TASKS = ("none", "nsp", "sop")
PACKINGS = ("segment_pair", "full_sentences", "causal")
IN_ORDER, NOT_IN_ORDER, NO_LABEL = 0, 1, -1
MASKER_KEYS = ("rate", "mode", "max_ngram", "max_predictions", "mask_prob", "random_prob")
NO_ENTITY = -1
# Per-token columns travel together as a tuple of parallel lists, a "segment": (ids, word_start[, entities]).
ROW_COLUMNS = ("input_ids", "word_start", "entity_ids")  # in the instances


@dataclass(frozen=True)
class InstanceSpec:
    sentence_task: str
    packing: str
    max_seq_len: int
    short_seq_prob: float
    seed: int
    dupe_factor: int
    static_masking: dict | None
    debug: bool
    entity_linking: LinkingSpec | None = None


def _spec_key(spec: InstanceSpec) -> dict:
    """The spec as it enters the cache key; without entity linking exactly as before the field existed."""
    fields = asdict(spec)
    fields.pop("entity_linking")
    return fields if spec.entity_linking is None else fields | {"entity_linking": spec.entity_linking.key()}


def build_instances(
    corpus: Corpus, tokenizer: Tokenizer, special: SpecialTokens, *, sentence_task: str = "none",
    packing: str = "segment_pair", max_seq_len: int, short_seq_prob: float = 0.1, seed: int,
    dupe_factor: int = 1, num_proc: int = 1, static_masking: dict | None = None, debug: bool = False,
    entity_linking: LinkingSpec | None = None,
) -> tuple[Dataset, dict]:
    """Instances (input_ids, token_type_ids, sentence_label, word_start [, mlm_labels]) and build statistics.

    `static_masking` (Masker keyword arguments) stores masked input_ids and mlm_labels, one fresh mask per
    dupe copy; without it the collator masks every batch anew. `debug` adds provenance columns (doc_a, doc_b,
    sent_a, sent_b, target_len). `entity_linking` adds entity_ids (see the module docstring). `num_proc` changes
    only the speed.
    """
    spec = InstanceSpec(sentence_task, packing, max_seq_len, short_seq_prob, seed, dupe_factor,
                        dict(sorted(static_masking.items())) if static_masking else None, debug, entity_linking)
    _validate(spec)
    root = paths.cache_root() / "instances"
    key = content_hash([corpus.fingerprint, tokenizer_fingerprint(tokenizer), _spec_key(spec), INSTANCES_VERSION])
    final = root / key
    if (final / "stats.json").is_file():
        stats = json.loads((final / "stats.json").read_text()) | {"from_cache": True}
        return load_from_disk(str(final / "dataset")), stats

    docs = tokenized_documents(corpus, tokenizer, num_proc, entity_linking)
    n_docs = len(docs)
    rows = list(range(n_docs))  # the documents instances are made from; nsp/sop need two sentences
    if sentence_task != "none":
        n_sentences = pc.list_value_length(docs.data.column("ids")).to_numpy()
        rows = [int(i) for i in (n_sentences >= 2).nonzero()[0]]
        if n_docs - len(rows):
            log.info("skipped %d documents of one sentence (%s needs two segments)", n_docs - len(rows),
                     sentence_task)
        if len(rows) < (2 if sentence_task == "nsp" else 1):
            raise ValueError(f"sentence_task={sentence_task} needs {2 if sentence_task == 'nsp' else 1}+ "
                             f"documents of 2+ sentences; corpus {corpus.name!r} has {len(rows)}")

    masker = Masker(tokenizer.get_vocab_size(), special, **spec.static_masking) if spec.static_masking else None
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".work-{key}-") as work:
        units = Dataset.from_dict({"first": list(range(0, len(rows), DOCS_PER_UNIT))})
        dataset = units.map(
            _unit_instances, batched=True, batch_size=1, num_proc=max(1, min(num_proc, len(units))),
            remove_columns=["first"], features=_features(spec),
            fn_kwargs={"docs": docs, "rows": rows, "spec": spec, "special": special, "masker": masker},
            cache_file_name=str(Path(work) / "instances.arrow"), new_fingerprint=key,
            desc=f"{packing} instances ({sentence_task})",
        )
        lengths = pc.list_value_length(dataset.data.column("input_ids"))
        stats = {"key": key, "documents": n_docs, "skipped_single_sentence_documents": n_docs - len(rows),
                 "instances": len(dataset), "tokens": int(pc.sum(lengths).as_py() or 0),
                 "max_length": int(pc.max(lengths).as_py() or 0)}
        staging = Path(work) / "out"
        dataset.save_to_disk(str(staging / "dataset"))
        (staging / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        cache_publish.publish(staging, final)
    return load_from_disk(str(final / "dataset")), stats | {"from_cache": False}


def _validate(spec: InstanceSpec) -> None:
    if spec.sentence_task not in SENTENCE_TASKS:
        raise ValueError(f"sentence_task={spec.sentence_task!r} is not one of {'|'.join(SENTENCE_TASKS)}")
    if spec.packing not in PACKINGS:
        raise ValueError(f"data.packing={spec.packing!r} is not one of {'|'.join(PACKINGS)}")
    if spec.sentence_task != "none" and spec.packing != "segment_pair":
        raise ValueError(f"sentence_task={spec.sentence_task} needs packing=segment_pair, not {spec.packing}")
    minimum = {"segment_pair": 5, "full_sentences": 3, "causal": 2}[spec.packing]
    if spec.max_seq_len < minimum:
        layout = {"segment_pair": "[CLS] A [SEP] B [SEP]", "full_sentences": "[CLS] A [SEP]",
                  "causal": "two tokens to predict one"}[spec.packing]
        raise ValueError(f"data.max_seq_len={spec.max_seq_len} is too small for {spec.packing} ({layout}); "
                         f"the minimum is {minimum}")
    if not 0.0 <= spec.short_seq_prob <= 1.0:
        raise ValueError(f"data.short_seq_prob={spec.short_seq_prob} must be in [0, 1]")
    if spec.dupe_factor < 1:
        raise ValueError(f"data.masking.dupe_factor={spec.dupe_factor} must be >= 1")
    if spec.static_masking is not None:
        unknown = sorted(set(spec.static_masking) - set(MASKER_KEYS))
        if unknown:
            raise ValueError(f"static_masking keys {unknown} are not among {'|'.join(MASKER_KEYS)}")
        if spec.packing == "causal":
            raise ValueError("static masking is for masked-LM objectives; packing=causal predicts every token")


# ---------------------------------------------------------------- instance creation, one work unit at a time

def _features(spec: InstanceSpec) -> Features:
    columns = {"input_ids": List(Value("int32")), "token_type_ids": List(Value("int8")),
               "sentence_label": Value("int8"), "word_start": List(Value("bool"))}
    if spec.entity_linking is not None:
        columns["entity_ids"] = List(Value("int32"))
    if spec.static_masking:
        columns["mlm_labels"] = List(Value("int32"))
    if spec.debug:
        columns |= {"doc_a": Value("int32"), "doc_b": Value("int32"), "sent_a": List(Value("int32")),
                    "sent_b": List(Value("int32")), "target_len": Value("int32")}
    return Features(columns)


class _Rows:
    """Column lists for one unit's instances."""

    def __init__(self, spec: InstanceSpec, special: SpecialTokens):
        self.spec, self.special = spec, special
        self.columns: dict[str, list] = {name: [] for name in _features(spec) if name != "mlm_labels"}

    def add(self, tokens: tuple[list, ...], token_types: list, label: int, debug: dict) -> None:
        """tokens: the per-token columns (ids, word_start[, entities])."""
        for name, values in zip(ROW_COLUMNS, tokens):
            self.columns[name].append(values)
        self.columns["token_type_ids"].append(token_types)
        self.columns["sentence_label"].append(label)
        if self.spec.debug:
            for name, value in debug.items():
                self.columns[name].append(value)

    def add_pair(self, a: tuple[list, ...], b: tuple[list, ...], label: int, debug: dict) -> None:
        """[CLS] A [SEP] B [SEP], or [CLS] A [SEP] when B is empty; a and b are segments (ids, word_start[,
        entities]). Special tokens begin a word and carry no entity (ERNIE: entity -1 at [CLS] and [SEP])."""
        edges = ((self.special.cls, self.special.sep), (True, True), (NO_ENTITY, NO_ENTITY))
        if not b[0]:
            self.add(tuple([first, *part, last] for (first, last), part in zip(edges, a)), [0] * (len(a[0]) + 2),
                     label, debug)
            return
        self.add(tuple([first, *part_a, last, *part_b, last] for (first, last), part_a, part_b in zip(edges, a, b)),
                 [0] * (len(a[0]) + 2) + [1] * (len(b[0]) + 1), label, debug)


def _unit_instances(batch: dict, docs: Dataset, rows: list[int], spec: InstanceSpec, special: SpecialTokens,
                    masker: Masker | None) -> dict:
    """The instances of documents rows[first : first + DOCS_PER_UNIT], all dupe copies."""
    first = batch["first"][0]
    unit_rows = rows[first:first + DOCS_PER_UNIT]
    unit = docs[unit_rows]
    columns = [unit[name] for name in DOC_COLUMNS if name in unit]  # per document, per sentence, per token
    out = _Rows(spec, special)
    others = _OtherDocuments(docs, rows)
    for copy in range(spec.dupe_factor):
        if spec.packing == "segment_pair":
            for position, *document in zip(range(first, first + len(unit_rows)), *columns):
                rng = random.Random(f"{spec.seed}:{copy}:{rows[position]}")
                _segment_pairs(document, position, others, spec, rng, out)
        elif spec.packing == "full_sentences":
            _full_sentences(columns, first, spec, special, out)
        else:
            _causal_blocks(columns, first, spec, special, out)
    if masker is not None:
        generator = torch.Generator().manual_seed(int(content_hash([spec.seed, first, "mask"]), 16))
        out.columns["input_ids"], out.columns["mlm_labels"] = _mask_rows(out.columns, masker, generator)
    return out.columns


def _target_length(rng: random.Random, max_num_tokens: int, short_seq_prob: float) -> int:
    if rng.random() < short_seq_prob:
        return rng.randint(2, max_num_tokens)
    return max_num_tokens


def _segment_pairs(document: list[list], position: int, others: _OtherDocuments, spec: InstanceSpec,
                   rng: random.Random, out: _Rows) -> None:
    """BERT's create_instances_from_document, on sentence indices; see the module docstring for departures.
    `document` holds the per-token columns (ids, word_start[, entities]), each one list per sentence."""
    ids = document[0]
    doc_index = others.rows[position]
    max_num_tokens = spec.max_seq_len - 3
    target = _target_length(rng, max_num_tokens, spec.short_seq_prob)
    chunk: list[int] = []
    length = 0
    i = 0
    while i < len(ids):
        chunk.append(i)
        length += len(ids[i])
        if i == len(ids) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            sent_a, sent_b = chunk[:a_end], chunk[a_end:]
            a, b = _join(document, sent_a), _join(document, sent_b)
            doc_b, label = doc_index, NO_LABEL
            if spec.sentence_task == "nsp":
                label = IN_ORDER
                if not sent_b or rng.random() < 0.5:
                    label = NOT_IN_ORDER
                    doc_b, sent_b, b = others.random_segment(position, target - len(a[0]), rng)
                    i -= len(chunk) - a_end  # put the unused sentences back
            elif spec.sentence_task == "sop":
                if not sent_b:  # one sentence: cut it at a random token
                    cut = rng.randint(1, len(a[0]) - 1) if len(a[0]) >= 2 else 0
                    a, b, sent_b = tuple(part[:cut] for part in a), tuple(part[cut:] for part in a), sent_a
                label = IN_ORDER
                if rng.random() < 0.5:
                    label = NOT_IN_ORDER
                    a, b, sent_a, sent_b = b, a, sent_b, sent_a
            if a[0] and (b[0] or spec.sentence_task == "none"):  # a one-token sentence cannot make a SOP pair
                a, b = _truncate_pair(a, b, max_num_tokens + (0 if b[0] else 1), rng)
                out.add_pair(a, b, label, {"doc_a": doc_index, "doc_b": doc_b if b[0] else -1,
                                            "sent_a": sent_a, "sent_b": sent_b, "target_len": target})
            chunk, length = [], 0
            target = _target_length(rng, max_num_tokens, spec.short_seq_prob)
        i += 1


def _join(document: list[list], sentences: Iterable[int]) -> tuple[list, ...]:
    """The segment made of `sentences` of a document: each per-token column concatenated."""
    sentences = list(sentences)
    return tuple([t for s in sentences for t in column[s]] for column in document)


class _OtherDocuments:
    """Random access to the sentences of any document, reading only the sentences it returns."""

    def __init__(self, docs: Dataset, rows: list[int]):
        self.rows = rows
        self.columns = [docs.data.column(name) for name in DOC_COLUMNS if name in docs.column_names]

    def random_segment(self, position: int, target_length: int,
                       rng: random.Random) -> tuple[int, list[int], tuple[list, ...]]:
        """Sentences of another document from a random start until target_length tokens: (row, sentences, B)."""
        other = rng.randrange(len(self.rows) - 1)
        row = self.rows[other + (other >= position)]
        sentences = self.columns[0][row].values  # one list of ids per sentence
        start = rng.randint(0, len(sentences) - 1)
        lengths = np.cumsum(pc.list_value_length(sentences.slice(start)).to_numpy())
        count = min(int(np.searchsorted(lengths, target_length)) + 1, len(lengths))  # stop once it is long enough
        document = [column[row].values.slice(start, count).to_pylist() for column in self.columns]
        return row, list(range(start, start + count)), _join(document, range(count))


def _truncate_pair(a: tuple[list, ...], b: tuple[list, ...], max_num_tokens: int,
                   rng: random.Random) -> tuple[tuple[list, ...], tuple[list, ...]]:
    """BERT's truncate_seq_pair: trim the longer segment (B on ties) from a random end until both fit."""
    bounds = [[0, len(a[0])], [0, len(b[0])]]
    while bounds[0][1] - bounds[0][0] + bounds[1][1] - bounds[1][0] > max_num_tokens:
        longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
        if rng.random() < 0.5:
            longer[0] += 1
        else:
            longer[1] -= 1
    (a_lo, a_hi), (b_lo, b_hi) = bounds
    return tuple(part[a_lo:a_hi] for part in a), tuple(part[b_lo:b_hi] for part in b)


def _full_sentences(columns: list, first: int, spec: InstanceSpec, special: SpecialTokens, rows: _Rows) -> None:
    """[CLS] s1 s2 .. [SEP]: whole sentences while they fit, a [SEP] between documents (RoBERTa).

    A sentence longer than an instance is cut into instance-sized pieces; a unit's last instance may be short."""
    capacity = spec.max_seq_len - 2
    buffer = tuple([] for _ in columns)  # the instance being packed: ids, word_start[, entities]
    ids = buffer[0]
    boundary = (special.sep, True, NO_ENTITY)  # what a document boundary adds to each column
    empty = tuple([] for _ in columns)
    doc = first

    def flush() -> None:
        if ids and ids[-1] == special.sep:  # a document boundary at the very end separates nothing
            for part in buffer:
                del part[-1]
        if ids:
            rows.add_pair(tuple(part[:] for part in buffer), empty, NO_LABEL, _packed_debug(doc, capacity))
        for part in buffer:
            del part[:]

    for offset, document in enumerate(zip(*columns)):
        if ids:  # the instance goes on into the next document
            if len(ids) + 1 > capacity:
                flush()
            else:
                for part, value in zip(buffer, boundary):
                    part.append(value)
        for sentence in zip(*document):
            if ids and len(ids) + len(sentence[0]) > capacity:
                flush()
            if not ids:
                doc = first + offset
            for part, values in zip(buffer, sentence):
                part.extend(values)
            while len(ids) > capacity:
                rows.add_pair(tuple(part[:capacity] for part in buffer), empty, NO_LABEL, _packed_debug(doc, capacity))
                for part in buffer:
                    del part[:capacity]
    flush()


def _causal_blocks(columns: list, first: int, spec: InstanceSpec, special: SpecialTokens, rows: _Rows) -> None:
    """Documents joined by [SEP] (</s> for byte-level BPE), cut into blocks of exactly max_seq_len; the unit's
    tail shorter than a block is dropped."""
    stream = tuple([] for _ in columns)  # ids, word_start[, entities]
    ids = stream[0]
    boundary = (special.sep, True, NO_ENTITY)
    doc_offsets = []  # where each document begins in the stream
    for document in zip(*columns):
        doc_offsets.append(len(ids))
        for sentence in zip(*document):
            for part, values in zip(stream, sentence):
                part.extend(values)
        for part, value in zip(stream, boundary):
            part.append(value)
    block = spec.max_seq_len
    for begin in range(0, len(ids) - block + 1, block):
        doc = first + bisect.bisect_right(doc_offsets, begin) - 1
        rows.add(tuple(part[begin:begin + block] for part in stream), [0] * block, NO_LABEL, _packed_debug(doc, block))


def _packed_debug(doc: int, capacity: int) -> dict:
    return {"doc_a": doc, "doc_b": -1, "sent_a": [], "sent_b": [], "target_len": capacity}


def _mask_rows(columns: dict, masker: Masker, generator: torch.Generator) -> tuple[list, list]:
    """Static masking: one padded batch through the Masker, then back to ragged lists.

    Runs single-threaded: `datasets` runs map() in forked workers, and an OpenMP pool inherited across fork()
    deadlocks on its first parallel region (seen here with datasets 5.2 even at num_proc=1)."""
    ids, starts = columns["input_ids"], columns["word_start"]
    if not ids:
        return [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _mask_padded(ids, starts, masker, generator)
    finally:
        torch.set_num_threads(threads)


def _mask_padded(ids: list, starts: list, masker: Masker, generator: torch.Generator) -> tuple[list, list]:
    lengths = torch.tensor([len(x) for x in ids])
    inside = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    padded = torch.full(inside.shape, masker.special_ids[0].item(), dtype=torch.long)  # any special id pads
    padded[inside] = torch.tensor([t for x in ids for t in x], dtype=torch.long)
    word_start = torch.zeros(inside.shape, dtype=torch.bool)
    word_start[inside] = torch.tensor([w for x in starts for w in x], dtype=torch.bool)
    masked, labels = masker(padded, word_start, generator)
    split = lengths.tolist()
    return ([row[:n] for row, n in zip(masked.tolist(), split)], [row[:n] for row, n in zip(labels.tolist(), split)])
