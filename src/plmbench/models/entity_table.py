"""The frozen entity table of ERNIE-style fusion: TransE trained on WordNet's triples, row i = graph entity i.

`knowledge.entity_table: auto` resolves here. Row i is the vector of KnowledgeGraph.entities[i], the same index the
entity linker puts in `entity_ids`, so linked text and table agree with no mapping file in between (entities.txt
beside the table lists the ids, for people and for other tools).

Leakage: issue 16 asks that the embeddings used for fusion be trained "only on triples that no probe evaluates on".
The WordNet supersense probe (data/tasks/supersense.py) evaluates no triple: its label is a synset's lexicographer
file, which no WordNet pointer states, and its splits hold out lemmas from fine-tuning, not from the graph. So by
default (`table.exclude: []`) the table is TransE on every triple, as ERNIE's FIGER typing links test entities to
a TransE table trained on all of Wikidata. `table.exclude: [supersense]` is the strict reading: every triple
touching a synset of a held-out target lemma is left out (38,180 of WordNet's 364,552 at seed 0), so a held-out
noun's vector is never fitted to its own edges (it appears in training only as a random negative), and the probe
then measures what fusion teaches about the words around a noun, not a lookup. The excluded probes and their seed
enter the cache key.

Budget: FUSION_TRANSE below, 8 epochs of 4 negatives over the 326k kept triples of 117,659 entities; the measured
time is in conf/knowledge/ernie.yaml. The table is cached by content under cache_root()/entity_table/<key>/ (the
TransE weights themselves under cache_root()/transe/, models/transe_cache.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from plmbench import paths
from plmbench.data.entity_ids import wordnet_fingerprint
from plmbench.data.knowledge_graph import KnowledgeGraph, load_graph
from plmbench.data.wordnet import default_root
from plmbench.models.config import ConfigError
from plmbench.models.transe import TransEConfig
from plmbench.models.transe_cache import cached_transe

log = logging.getLogger(__name__)

AUTO = "auto"
ENTITY_TABLE_VERSION = 1  # bump when the table's construction changes in a way the key does not show
# The fixed budget for fusion: WN18RR's settings (bench/transe_wn18rr.py) with 4 negatives instead of 16 and 8
# epochs instead of 15, so that the whole WordNet graph (4x WN18RR's triples) trains in minutes on 2 cores.
FUSION_TRANSE = TransEConfig(negatives=4, epochs=8)


def supersense_held_out(graph: KnowledgeGraph, root: Path, seed: int = 0) -> set[int]:
    """Entities of the supersense probe's held-out (validation) lemmas: the noun synset of each target lemma."""
    from plmbench.data.tasks.supersense import is_held_out, target_forms

    lemmas = {lemma for lemma, _ in target_forms(root).values() if is_held_out(lemma, seed)}
    return {sense.entity for lemma in lemmas for sense in graph.senses.get(lemma.replace(" ", "_"), ())
            if sense.pos == "n"}


PROBES = {"supersense": supersense_held_out}  # probe name -> its held-out entities, (graph, root, seed)


def held_out_entities(graph: KnowledgeGraph, root: Path, probes: Sequence[str], seed: int) -> set[int]:
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ConfigError(f"knowledge.table.exclude: unknown probe(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(PROBES)}")
    return set().union(*(PROBES[name](graph, root, seed) for name in probes))


def fusion_triples(triples: np.ndarray, held_out: set[int]) -> np.ndarray:
    """The (n, 3) triples that touch no held-out entity, as head or as tail."""
    if not held_out:
        return triples
    banned = np.fromiter(held_out, dtype=np.int64)
    keep = ~(np.isin(triples[:, 0], banned) | np.isin(triples[:, 2], banned))
    return triples[keep]


def build_entity_table(root: Path | str | None = None, exclude: Sequence[str] = (),
                       probe_seed: int = 0, transe: TransEConfig = FUSION_TRANSE) -> Path:
    """The path of table.pt, a (n_entities, dim) float tensor (TransE trained on the graph less the probes'
    triples), trained once and then read from the cache."""
    root = Path(root).resolve() if root is not None else default_root().resolve()
    spec = {"root": wordnet_fingerprint(root), "exclude": sorted(exclude), "probe_seed": int(probe_seed),
            "transe": dataclasses.asdict(transe), "version": ENTITY_TABLE_VERSION}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    folder = paths.cache_root() / "entity_table" / key
    if (folder / "table.pt").is_file():
        return folder / "table.pt"
    began, cpu = time.perf_counter(), time.process_time()
    graph = load_graph(root)
    triples = fusion_triples(graph.triples, held_out_entities(graph, root, list(exclude), int(probe_seed)))
    log.info("entity table: TransE on %d of %d WordNet triples (%d entities), %d epochs", len(triples),
             len(graph.triples), len(graph.entities), transe.epochs)
    model, _ = cached_transe(torch.as_tensor(triples), len(graph.entities), len(graph.relations), transe,
                             on_epoch=lambda epoch, loss, _: log.info("TransE epoch %d: loss %.4f, %.0f s", epoch,
                                                                      loss, time.perf_counter() - began))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entities.txt").write_text("\n".join(graph.entities) + "\n")
    meta = spec | {"triples": len(triples), "graph_triples": len(graph.triples), "entities": len(graph.entities),
                   "seconds": round(time.perf_counter() - began, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    scratch = folder / f"table.pt.tmp{os.getpid()}"
    torch.save(model.entity.weight.detach().clone(), scratch)
    os.replace(scratch, folder / "table.pt")  # the table appears last and whole: its presence means done
    log.info("entity table written to %s in %.0f s (%.0f s of CPU)", folder, meta["seconds"], meta["cpu_seconds"])
    return folder / "table.pt"


def resolve_entity_table(knowledge: Mapping) -> str | None:
    """knowledge.entity_table as a file path: `auto` builds (or finds) the cached table from the node's
    `wordnet_dir` and `table` settings; anything else is returned as given."""
    value = knowledge.get("entity_table")
    if value != AUTO:
        return value
    table = dict(knowledge.get("table") or {})
    return str(build_entity_table(knowledge.get("wordnet_dir"), exclude=tuple(table.get("exclude", ())),
                                  probe_seed=int(table.get("probe_seed", 0))))

