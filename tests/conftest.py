"""Tests never reach the network and never write outside a temporary directory."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Test models are tiny: one intra-op thread is as fast, and immune to the collapse that OpenMP's spinning
# threads suffer when other processes share the two cores (measured here: 6 s vs 154 s for one test).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
NO_SHARED_DATA = "needs ../shared/data, the real benchmark files"  # the one skip reason for their absence


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real GLUE/SQuAD/RACE/WikiText files beside the checkout (never committed). Every test that reads them
    takes this fixture, so that their absence is one skip reason, counted at the end of the run."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{NO_SHARED_DATA} (not found at {SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def wordnet_root(tmp_path_factory) -> Path:
    """WordNet 3.0's dict folder: $PLMBENCH_WORDNET_DIR, the checkout's unpacked wordnet-base (`make data`), a
    developer's unpacked copy, or the Debian package fetched into a temporary data root (skips without it)."""
    if os.environ.get("PLMBENCH_WORDNET_DIR"):
        return Path(os.environ["PLMBENCH_WORDNET_DIR"])
    for unpacked in (REPO / "data/debian/wordnet-base/usr/share/wordnet", Path("/tmp/debs/x/usr/share/wordnet")):
        if (unpacked / "data.noun").is_file():
            return unpacked
    from plmbench.data.debian import MissingSourceError, ensure_package

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PLMBENCH_DATA", str(tmp_path_factory.mktemp("data")))
        try:
            return ensure_package("wordnet-base") / "usr/share/wordnet"
        except MissingSourceError as error:
            pytest.skip(str(error))


def pytest_terminal_summary(terminalreporter):
    """One line after the run: how many tests did not run because ../shared/data is missing."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(1 for report in skipped if NO_SHARED_DATA in str(report.longrepr))
    where = "present" if SHARED_DATA.is_dir() else "missing"
    terminalreporter.write_line(f"{count} test(s) skipped for lack of ../shared/data ({SHARED_DATA}: {where})",
                                yellow=bool(count), bold=bool(count))
