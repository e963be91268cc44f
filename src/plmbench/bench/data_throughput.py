"""How fast the data pipeline turns text into pre-training instances: MB of text per second, cold and cached.

Cold: a fresh, empty cache directory, so the corpus is tokenized and the instances are built (BERT's
segment-pair packing with NSP). Cached: the same call again, which loads the finished instances from disk. The
WordPiece tokenizer is trained first, in the same fresh cache, and its time is reported apart: it is a one-off per
corpus and vocabulary, not part of every run's pipeline. MB = 10^6 bytes of the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from plmbench.data.corpora.files import FilesCorpus
from plmbench.data.instances import build_instances
from plmbench.data.tokenizer import get_tokenizer

# The WikiText-2 validation text of the shared data folder beside the checkout (1.1 MB).
DEFAULT_TEXT = Path(__file__).resolve().parents[4] / "shared/data/corpus/wikitext-2/raw/valid.txt"


@contextlib.contextmanager
def cache_at(directory: Path):
    """Point plmbench's cache root (PLMBENCH_CACHE, read by paths.cache_root at each call) at `directory`."""
    before = os.environ.get("PLMBENCH_CACHE")
    os.environ["PLMBENCH_CACHE"] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PLMBENCH_CACHE", None)
        else:
            os.environ["PLMBENCH_CACHE"] = before


def data_throughput(text: Path | str = DEFAULT_TEXT, vocab_size: int = 30000, max_seq_len: int = 128,
                    sentence_task: str = "nsp", num_proc: int = 1) -> dict:
    """{mb, tokenizer_train_seconds, cold/cached: {seconds, mb_per_second}, instances, tokens}."""
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"bench data text={path}: no such file (give text=<a plain or WikiText file>)")
    corpus = FilesCorpus([str(path)], name=path.stem)
    mb = path.stat().st_size / 1e6
    options = {"sentence_task": sentence_task, "packing": "segment_pair", "max_seq_len": max_seq_len,
               "short_seq_prob": 0.1, "seed": 0, "num_proc": num_proc}
    timings = {}
    with tempfile.TemporaryDirectory(prefix="plmbench-bench-data-") as fresh, cache_at(Path(fresh)):
        start = time.perf_counter()
        tokenizer, special = get_tokenizer(corpus, "wordpiece", vocab_size)
        trained = time.perf_counter() - start
        for phase in ("cold", "cached"):
            start = time.perf_counter()
            _, stats = build_instances(corpus, tokenizer, special, **options)
            seconds = time.perf_counter() - start
            expected_cache = phase == "cached"
            if stats["from_cache"] != expected_cache:
                raise RuntimeError(f"bench data: the {phase} build came {'from' if stats['from_cache'] else 'without'}"
                                   " the cache")
            timings[phase] = {"seconds": seconds, "mb_per_second": mb / seconds}
    return {"text": str(path), "mb": mb, "vocab_size": tokenizer.get_vocab_size(), "max_seq_len": max_seq_len,
            "sentence_task": sentence_task, "num_proc": num_proc, "tokenizer_train_seconds": trained,
            "instances": stats["instances"], "tokens": stats["tokens"], **timings}
