"""Where plmbench keeps what it builds: embedded data, caches, runs and results.

Everything is relative to the directory the user runs from (also under `hydra.job.chdir=true`: see anchored), so
a clone is self-contained; environment variables move each root elsewhere (e.g. a shared scratch disk on a cluster).
"""

import contextlib
import os
from importlib import resources
from pathlib import Path

from plmbench.errors import UserError


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


ROOTS = {"PLMBENCH_DATA": "data", "PLMBENCH_CACHE": ".cache/plmbench", "PLMBENCH_RUNS": "runs",
         "PLMBENCH_RESULTS": "results"}
FOLDER_LISTS = ("PLMBENCH_CONFIG_PATH",)  # also read at each call: relative entries must not follow a chdir


@contextlib.contextmanager
def anchored():
    """The roots (and the user's config folders), made absolute where the user ran plmbench, for as long as a
    Hydra app runs: `hydra.job.chdir=true` moves each job into its output folder, where relative roots would
    scatter records and cells into multirun/<job>/ (and a table would read none). Set in the environment, so
    child processes (a DDP worker, a SLURM job) see the same folders."""
    saved = {name: os.environ.get(name) for name in (*ROOTS, *FOLDER_LISTS)}
    for name, default in ROOTS.items():
        os.environ[name] = str(Path(os.environ.get(name) or default).resolve())
    for name in FOLDER_LISTS:
        if os.environ.get(name):
            os.environ[name] = os.pathsep.join(str(Path(entry).resolve()) if entry else entry
                                               for entry in os.environ[name].split(os.pathsep))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shipped(name: str) -> Path:
    """What plmbench ships beside its code: `conf` (Hydra configs) or `experiments` (published tables).

    An installed wheel carries them inside the package (setup.py copies them there); a source tree (an editable
    install, PYTHONPATH=src) has them at the repository's top, and reads those, so that edits take effect.
    """
    packaged = Path(str(resources.files("plmbench") / name))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / name


def user_config_dirs() -> list[Path]:
    """The user's config folders, $PLMBENCH_CONFIG_PATH (separated by os.pathsep), in search order: Hydra
    reads them before our conf/, and their sibling `experiments/` folders before ours."""
    entries = os.environ.get("PLMBENCH_CONFIG_PATH", "").split(os.pathsep)
    dirs = [Path(entry).resolve() for entry in entries if entry]
    for directory in dirs:
        if not directory.is_dir():
            raise UserError(f"PLMBENCH_CONFIG_PATH: {directory} is not a folder; it names folders of config "
                            f"groups (experiment/, embedding/, task/, ...), separated by {os.pathsep!r}")
    return dirs
