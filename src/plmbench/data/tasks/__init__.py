"""Downstream task data: `load_task(task_cfg, data_dir)` -> DatasetDict with 'train' and the task's eval splits.

`task.source` says where rows come from: `hub` (Hugging Face datasets), `local` (the original distribution files
under data_dir: glue_data TSVs, SQuAD JSON, the RACE tree) or `proxy` (offline stand-ins, plmbench.data.tasks.proxy).
Family `wordnet` (probes built from WordNet, plmbench.data.tasks.supersense) has one source, `wordnet`, whatever
task.source says.
Every source yields the same columns for a task kind (interface 4):
  classification/regression: idx, text_a, text_b ('' for one sentence), label (int; float for STS-B)
  span (SQuAD): id, title, context, question, answers {text: [...], answer_start: [...]} (empty = unanswerable)
  multiple_choice (RACE): id, article, question, options (4), label 0..3, level ('middle'|'high')
  multiple_choice (CommonsenseQA, family csqa): id, article (''), question, options (5), label 0..4 (-1: test),
    question_concept
The family modules (glue, squad, race) know the file formats; this module finds files and assembles splits.
"""

import logging
import os
import random
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import datasets

from plmbench import paths
from plmbench.data.tasks import commonsenseqa, conll, glue, race, squad
from plmbench.data.tasks.errors import DataError, HubUnavailableError, TaskConfigError

log = logging.getLogger(__name__)

FAMILIES: dict[str, ModuleType] = {"glue": glue, "squad": squad, "race": race, "conll": conll,
                                  "csqa": commonsenseqa}
OFFLINE_ALTERNATIVES = (
    "use the original files with task.source=local data_dir=<folder holding glue/, squad/, race/> "
    "or the offline stand-in task.source=proxy"
)
HUB_PROBE_TIMEOUT_S = (
    3.0  # a quick connect test, instead of load_dataset's ~30 s of retries against a dead network
)


def load_task(task_cfg: Mapping, data_dir: str | Path | None = None) -> datasets.DatasetDict:
    """The task's 'train' split and its eval splits (task.eval_splits), from task.source."""
    source = task_cfg.get("source")
    if task_cfg.get("family") in BUILT_FROM_WORDNET:  # no hub or local copy exists: a sweep's task_source is moot
        source = "wordnet"
    if source not in SOURCES:
        raise TaskConfigError(f"task.source={source!r} is not one of {', '.join(SOURCES)}")
    return SOURCES[source](task_cfg, data_dir)


def _family(task_cfg: Mapping) -> ModuleType:
    family = task_cfg.get("family")
    if family not in FAMILIES:
        raise TaskConfigError(f"task.family={family!r} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def _eval_splits(task_cfg: Mapping) -> list[str]:
    splits = list(task_cfg.get("eval_splits") or [])
    if not splits or "train" in splits:
        raise TaskConfigError(
            f"task.eval_splits={splits!r} must list evaluation splits (e.g. [validation]), not train"
        )
    return splits


# ---------------------------------------------------------------------------------------------------- hub


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be contacted now, or None. Offline mode skips the probe: load_dataset then reads the cache."""
    if _hub_offline():
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return f"cannot connect to {endpoint.hostname}:{port} ({e})"
    return None


def _hub_error(task_cfg: Mapping, why: str) -> HubUnavailableError:
    hub = task_cfg["hub"]
    what = f"{hub['path']}" + (f" ({hub['name']})" if hub.get("name") else "")
    why = " ".join(why.split())  # one line, whatever the underlying library printed
    return HubUnavailableError(
        f"task {task_cfg.get('name')}: the Hugging Face hub is unavailable for {what}: {why}; {OFFLINE_ALTERNATIVES}"
        + ("" if _hub_offline() else " (or set HF_HUB_OFFLINE=1 to use a cached copy)")
    )


def load_hub(task_cfg: Mapping, data_dir: str | Path | None = None) -> datasets.DatasetDict:
    """task.hub {path, name} through datasets.load_dataset, normalised to the task's schema. data_dir is unused."""
    family = _family(task_cfg)
    why = _hub_unreachable_reason()
    if why:
        raise _hub_error(task_cfg, why)
    hub = task_cfg["hub"]
    try:
        raw = datasets.load_dataset(hub["path"], hub.get("name"), revision=hub.get("revision"))
    except ConnectionError as e:  # datasets wraps offline-mode and network failures in ConnectionError
        raise _hub_error(task_cfg, str(e) or type(e).__name__) from None
    wanted = ["train", *_eval_splits(task_cfg)]
    missing = [s for s in wanted if s not in raw]
    if missing:
        raise TaskConfigError(
            f"task.eval_splits: {hub['path']} has no split(s) {', '.join(missing)}; it has {', '.join(raw)}"
        )
    return family.normalise_hub(datasets.DatasetDict({s: raw[s] for s in wanted}), task_cfg)


# ---------------------------------------------------------------------------------------------------- local


def _candidates(task_cfg: Mapping, split: str) -> list[str]:
    found = (task_cfg.get("local") or {}).get(split)
    if found is None:
        return []
    return [found] if isinstance(found, str) else list(found)


def _find_local(root: Path, task_cfg: Mapping, split: str) -> Path | None:
    """The first of task.local[split]'s candidate paths (relative to data_dir) that exists."""
    return next((root / c for c in _candidates(task_cfg, split) if (root / c).exists()), None)


def _missing_file(root: Path, task_cfg: Mapping, split: str) -> DataError:
    tried = ", ".join(_candidates(task_cfg, split)) or "nothing (task.local has no entry for it)"
    return DataError(
        root,
        f"task {task_cfg.get('name')}: no {split} file found; tried {tried}. Point data_dir= at the folder "
        "holding glue/, squad/, race/ (or use task.source=hub|proxy)",
    )


def _carve_train(
    rows: list[dict], family: ModuleType, task_cfg: Mapping, path: Path
) -> tuple[list[dict], list[dict]]:
    """Split an evaluation file into (train, eval) by group (article, first sentence), seeded and disjoint."""
    spec = task_cfg.get("dev_split") or {}
    fraction, seed = float(spec.get("train_fraction", 0.8)), int(spec.get("seed", 0))
    keys = sorted({family.group_key(r) for r in rows})
    if len(keys) < 2:
        raise DataError(
            path, f"only {len(keys)} {family.GROUP}: too few to carve a train split from this file"
        )
    random.Random(seed).shuffle(keys)
    n_train = min(max(round(fraction * len(keys)), 1), len(keys) - 1)
    train_keys = set(keys[:n_train])
    train = [r for r in rows if family.group_key(r) in train_keys]
    held_out = [r for r in rows if family.group_key(r) not in train_keys]
    log.warning(
        f"task {task_cfg.get('name')}: no train file found, so training on {n_train} of the {len(keys)} "
        f"{family.GROUP} of {path} ({len(train)} rows; train_fraction {fraction:.2f}, seed {seed}) and evaluating "
        f"on the other {len(keys) - n_train} ({len(held_out)} rows): scores are NOT comparable with published "
        "dev-set results"
    )
    return train, held_out


def load_local(task_cfg: Mapping, data_dir: str | Path | None = None) -> datasets.DatasetDict:
    """The original distribution files under data_dir (default: plmbench.paths.data_root())."""
    family = _family(task_cfg)
    root = Path(data_dir) if data_dir is not None else paths.data_root()
    if not root.is_dir():
        raise DataError(root, "data_dir is not a folder; pass data_dir=<folder holding glue/, squad/, race/>")
    on_bad_row = task_cfg.get("on_bad_row", "skip")
    eval_splits = _eval_splits(task_cfg)

    found: dict[str, tuple[Path, list[dict]]] = {}
    for split in ["train", *eval_splits]:
        path = _find_local(root, task_cfg, split)
        if path is None and split != "train":
            raise _missing_file(root, task_cfg, split)
        if path is not None:
            found[split] = (path, family.read_local(path, task_cfg, on_bad_row))
    if "train" not in found:
        path, rows = found[eval_splits[0]]
        _no_rows_check(path, rows, eval_splits[0])
        train, held_out = _carve_train(rows, family, task_cfg, path)
        found["train"], found[eval_splits[0]] = (path, train), (path, held_out)

    splits = {}
    for split in ["train", *eval_splits]:
        path, rows = found[split]
        _no_rows_check(path, rows, split)
        splits[split] = datasets.Dataset.from_list(rows, features=family.features(task_cfg))
        log.info("task %s: %s = %d rows from %s", task_cfg.get("name"), split, len(rows), path)
    return datasets.DatasetDict(splits)


def _no_rows_check(path: Path, rows: list[dict], split: str) -> None:
    if not rows:
        raise DataError(path, f"split {split!r} has no usable rows (empty file, or every row was malformed)")


def _load_proxy(task_cfg: Mapping, data_dir: str | Path | None = None) -> datasets.DatasetDict:
    from plmbench.data.tasks.proxy import load_proxy  # imported only when asked for: it builds from WordNet

    return load_proxy(task_cfg, data_dir)


def _load_wordnet_probe(task_cfg: Mapping, data_dir: str | Path | None = None) -> datasets.DatasetDict:
    from plmbench.data.tasks.supersense import load_supersense  # imported on use: it reads WordNet

    probes = {"supersense": load_supersense, "supersense_probe": load_supersense}  # one set of rows, two readings
    name = task_cfg.get("name")
    if name not in probes:
        raise TaskConfigError(f"task.name={name!r} is no WordNet probe; allowed: {', '.join(probes)}")
    return probes[name](task_cfg, data_dir)


SOURCES: dict[str, Callable[..., datasets.DatasetDict]] = {
    "hub": load_hub,
    "local": load_local,
    "proxy": _load_proxy,
    "wordnet": _load_wordnet_probe,
}
BUILT_FROM_WORDNET = {"wordnet"}  # families whose rows are built from WordNet and the embedded corpus only
