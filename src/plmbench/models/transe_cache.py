"""Trained TransE embeddings cached by content, as tokenizers are: the same triples and settings train once.

The key hashes the training triples' ids, the entity and relation counts and every TransEConfig field (the seed
included), so any change that could change the embeddings trains afresh; thread counts do not enter it (a speed
setting). Embeddings are stored as a tensors-only state dict and read back with torch.load(weights_only=True).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import torch

from plmbench import paths
from plmbench.errors import load_weights_only
from plmbench.models.transe import TransE, TransEConfig, train_transe

log = logging.getLogger(__name__)

TRANSE_CACHE_VERSION = 1  # bump when training changes in a way the config does not show, so caches are rebuilt


def transe_key(triples: torch.Tensor, num_entities: int, num_relations: int, config: TransEConfig) -> str:
    digest = hashlib.sha256(triples.to(torch.int64).contiguous().numpy().tobytes())
    spec = [digest.hexdigest(), num_entities, num_relations, dataclasses.asdict(config), TRANSE_CACHE_VERSION]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cached_transe(triples: torch.Tensor, num_entities: int, num_relations: int, config: TransEConfig,
                  **train_kwargs) -> tuple[TransE, bool]:
    """(model, whether it came from cache_root()/transe/<key>); trains with train_transe and saves when absent."""
    key = transe_key(triples, num_entities, num_relations, config)
    path = paths.cache_root() / "transe" / key / "embeddings.pt"
    model = TransE(num_entities, num_relations, config.dim, config.norm)
    if path.is_file():
        model.load_state_dict(load_weights_only(path))
        return model, True
    log.info("training TransE on %d triples (cache key %s)", len(triples), key)
    model = train_transe(triples, num_entities, num_relations, config, **train_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    meta = {"triples": len(triples), "num_entities": num_entities, "num_relations": num_relations,
            "config": dataclasses.asdict(config), "version": TRANSE_CACHE_VERSION}
    (path.parent / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return model, False
