"""Where plmbench keeps what it builds: embedded data, caches, runs and results.

Everything is relative to the directory the user runs from (Hydra is configured not to change it), so a clone
is self-contained; environment variables move each root elsewhere (e.g. a shared scratch disk on a cluster).
"""

import os
from importlib import resources
from pathlib import Path


def data_root() -> Path:
    """Built offline data (the embedded corpus, WordNet proxy tasks): `make data` writes here."""
    return Path(os.environ.get("PLMBENCH_DATA", "data")).resolve()


def cache_root() -> Path:
    """Content-keyed caches (tokenizers, tokenized instances); safe to delete."""
    return Path(os.environ.get("PLMBENCH_CACHE", ".cache/plmbench")).resolve()


def runs_root() -> Path:
    """Pre-training cells and fine-tuning units, one directory each, named by lineage hash."""
    return Path(os.environ.get("PLMBENCH_RUNS", "runs")).resolve()


def results_root() -> Path:
    """Results stores and rendered tables, one directory per experiment."""
    return Path(os.environ.get("PLMBENCH_RESULTS", "results")).resolve()


def shipped(name: str) -> Path:
    """What plmbench ships beside its code: `conf` (Hydra configs) or `experiments` (published tables).

    An installed wheel carries them inside the package (setup.py copies them there); a source tree (an editable
    install, PYTHONPATH=src) has them at the repository's top, and reads those, so that edits take effect.
    """
    packaged = Path(str(resources.files("plmbench") / name))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / name
