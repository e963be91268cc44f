"""The pre-training LightningDataModule: corpus -> tokenizer -> instances -> masked, padded batches.

Held-out documents (a fixed share, chosen by a hash of their position) give the validation sets: the objective's
own instances, plus NSP and SOP instances for every encoder so that ALBERT Table 5's intrinsic accuracies are
measured the same way whatever the model was trained with. The NSP and SOP sets hold as many label 0 as label 1
rows (chance is 50%, as in the paper). Held-out rows are masked like training rows, static masking or not: a fixed
mask per batch of a fixed order, so every evaluation scores the same masked positions.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from plmbench.data.collate import PretrainCollator
from plmbench.data.corpora import build_corpus
from plmbench.data.entity_ids import LinkingSpec
from plmbench.data.instances import build_instances
from plmbench.data.masking import Masker
from plmbench.data.tokenizer import get_tokenizer, special_tokens
from plmbench.lit.sampling import IndexedDataset, ResumableBatches

log = logging.getLogger(__name__)
INTRINSIC_OBJECTIVES = ("mlm", "mlm_nsp", "mlm_sop")  # models built with a sentence head (MaskedLM)
PROBES = ("nsp", "sop")  # ALBERT Table 5's intrinsic sentence tasks, held out for every such model


@dataclass
class DocumentSplit:
    """A deterministic share of a corpus's documents (train or held-out), itself a Corpus."""

    corpus: object
    held_out: bool
    fraction: float

    @property
    def name(self) -> str:
        return f"{self.corpus.name}/{'val' if self.held_out else 'train'}"

    @property
    def fingerprint(self) -> str:
        return f"{self.corpus.fingerprint}:{'val' if self.held_out else 'train'}:{self.fraction}"

    def documents(self) -> Iterator[list[str]]:
        for index, document in enumerate(self.corpus.documents()):
            bucket = int(hashlib.md5(str(index).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            if (bucket < self.fraction) == self.held_out:
                yield document


class StepSeededCollate:
    """Seeds each batch's dynamic mask from (seed, batch index): a fresh mask every time a sequence is seen, and
    the same mask for the same batch after a resume."""

    def __init__(self, collator: PretrainCollator, seed: int):
        self.collator, self.seed = collator, seed

    def __call__(self, items: list[dict]) -> dict:
        batch_index = items[0].pop("_batch_index", 0)
        for item in items[1:]:
            item.pop("_batch_index", None)
        self.collator.generator = torch.Generator().manual_seed(self.seed * 7_919 + int(batch_index))
        return self.collator(items)


class PretrainData(pl.LightningDataModule):
    """`tokenizer_file`: a resumed run's own tokenizer (its ids are the checkpoint's), used instead of the cache."""

    def __init__(self, cfg, tokenizer_file: Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer_file = tokenizer_file
        self.prepared = False

    def prepare(self) -> None:
        """Builds (or loads from cache) the tokenizer and every instance set; runs before the model is built, since
        the model's vocabulary size is the tokenizer's."""
        if self.prepared:
            return
        cfg, data, objective = self.cfg, self.cfg.data, self.cfg.objective
        corpus = build_corpus(cfg.corpus)
        if self.tokenizer_file is not None:
            self.tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
            self.special = special_tokens(self.tokenizer)
        else:
            self.tokenizer, self.special = get_tokenizer(corpus, cfg.model.tokenizer, int(cfg.model.vocab_size),
                                                         lowercase=bool(data.get("lowercase", True)))
        self.vocab_size = self.tokenizer.get_vocab_size()
        fraction = float(data.get("val_fraction", 0.02))
        train_docs, val_docs = DocumentSplit(corpus, False, fraction), DocumentSplit(corpus, True, fraction)
        common = {"max_seq_len": int(data.max_seq_len), "short_seq_prob": float(data.short_seq_prob),
                  "num_proc": int(data.get("num_proc", 1)),
                  # knowledge=ernie: entity_ids linked to WordNet in every set (absent, and the keys unchanged, when off)
                  "entity_linking": LinkingSpec.from_knowledge(cfg.get("knowledge"))}
        masking = data.masking
        static = bool(masking.get("static")) and objective.mlm
        self.train, self.stats = build_instances(
            train_docs, self.tokenizer, self.special, sentence_task=objective.sentence_task,
            packing=objective.packing, seed=int(cfg.seed), dupe_factor=int(masking.dupe_factor) if static else 1,
            static_masking=self.masking_options() if static else None, **common)
        self.val = {"main": build_instances(val_docs, self.tokenizer, self.special,
                                            sentence_task=objective.sentence_task, packing=objective.packing,
                                            seed=int(cfg.seed) + 1, **common)[0]}
        if objective.name in INTRINSIC_OBJECTIVES and int(cfg.model.type_vocab_size) >= 2:
            for task in PROBES:
                probe = build_instances(val_docs, self.tokenizer, self.special, sentence_task=task,
                                        packing="segment_pair", seed=int(cfg.seed) + 2, **common)[0]
                self.val[task] = balanced_probe(probe, seed=30_000 + int(cfg.seed))
        self.masker = Masker(self.vocab_size, self.special, **self.masking_options()) \
            if objective.mlm and not static else None
        # Static masks are stored for training rows only: without a Masker here the held-out rows would have every
        # token as a label and no [MASK], and validation loss, MLM accuracy and the NSP/SOP probes a copy task.
        self.val_masker = Masker(self.vocab_size, self.special, **self.masking_options()) if objective.mlm else None
        self.prepared = True
        log.info("pre-training data: %d train instances, %s held out; stats %s", len(self.train),
                 {k: len(v) for k, v in self.val.items()}, self.stats)

    def masking_options(self) -> dict:
        """The Masker's keyword arguments from data.masking (the model's choices composed in)."""
        m = self.cfg.data.masking
        options = {"rate": float(m.rate), "mode": str(m.mode), "max_ngram": int(m.max_ngram),
                   "max_predictions": m.get("max_predictions")}
        # Only when set (ELECTRA), so that other runs keep their static-masking cache keys.
        return options | {k: float(m[k]) for k in ("mask_prob", "random_prob") if m.get(k) is not None}

    def _collate(self, seed: int, masker: Masker | None) -> StepSeededCollate:
        pad_to = self.cfg.impl.get("pad_to")
        segments = int(self.cfg.model.type_vocab_size) >= 2  # RoBERTa's single segment type: all zeros
        return StepSeededCollate(PretrainCollator(self.special, masker, pad_to=pad_to, segments=segments), seed)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        accumulate = int(self.cfg.trainer.accumulate_grad_batches)
        start = trainer.global_step * accumulate if trainer is not None else 0
        end = int(self.cfg.trainer.max_steps) * accumulate
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = ResumableBatches(len(self.train), int(self.cfg.trainer.batch_size), int(self.cfg.seed), start, end,
                                   rank=rank, world_size=world)
        return DataLoader(IndexedDataset(self.train), batch_sampler=sampler,
                          collate_fn=self._collate(self.cfg.seed, self.masker),
                          num_workers=int(self.cfg.trainer.num_workers), generator=_own_generator(self.cfg.seed))

    def val_dataloader(self) -> list[DataLoader]:
        batch = int(self.cfg.trainer.batch_size)
        loaders = []
        for name, rows in self.val.items():
            # A fixed shuffle: trainer.limit_val_batches then reads a sample of every held-out document, not the
            # first few. The NSP/SOP probes come in their own fixed order (labels alternating, see balanced_probe).
            order = list(range(len(rows))) if name in PROBES else \
                torch.randperm(len(rows), generator=torch.Generator().manual_seed(20_000 + self.cfg.seed)).tolist()
            sampler = [[(k, i) for i in order[k * batch:(k + 1) * batch]]
                       for k in range(max(1, (len(rows) + batch - 1) // batch))]
            loaders.append(DataLoader(IndexedDataset(rows), batch_sampler=sampler,
                                      collate_fn=self._collate(10_000 + self.cfg.seed, self.val_masker),
                                      generator=_own_generator(10_000 + self.cfg.seed)))
        return loaders


def balanced_probe(rows, seed: int):
    """As many label-0 as label-1 rows, in the order 0, 1, 0, 1, ...: the majority label is subsampled, and any
    prefix of batches (what trainer.limit_val_batches reads) is balanced too. Each label's rows come in a fixed
    random order, so a prefix still samples every held-out document."""
    labels = torch.tensor(rows["sentence_label"])
    generator = torch.Generator().manual_seed(seed)
    by_label = []
    for label in (0, 1):
        index = torch.nonzero(labels == label).flatten()
        by_label.append(index[torch.randperm(len(index), generator=generator)])
    n = min(len(index) for index in by_label)
    return rows.select(torch.stack([by_label[0][:n], by_label[1][:n]], dim=1).flatten().tolist())


def _own_generator(seed: int) -> torch.Generator:
    """Each new loader iterator draws a base seed; from its own generator it leaves the global RNG (dropout's
    stream, saved in checkpoints) alone, so a resumed run, whose loader starts after the restore, stays in step."""
    return torch.Generator().manual_seed(int(seed))
