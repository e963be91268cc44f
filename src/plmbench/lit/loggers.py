"""Experiment loggers: W&B (offline by default, online when the user has credentials and asks), CSV, none, or a
user's own, named by the logger config's `_target_` (conf/logger/).

A logger that cannot start never fails a run: the run falls back to CSV and says why (a `_target_` that does
not import is a config error, one line).

Every W&B run is finished whatever happens to its unit (`finished`): Lightning leaves the run of a failed fit
open, and the next WandbLogger of the process would attach to it, putting the next unit's metrics in the failed
run. A run that is resumed from its checkpoint (a pre-training cell, a distilled student) passes a stable
`run_id`, so that its relaunch continues the same W&B run (resume="allow").
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import socket
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

# W&B keys never reach logs, results or tables
from plmbench.safety import drop_secrets, is_secret_key, wandb_settings

log = logging.getLogger(__name__)


# What logger.kind built before configs named their `_target_` (a run's older config.yaml, a hand-made dict).
FACTORIES = {"wandb": "plmbench.lit.loggers.wandb_logger", "csv": "plmbench.lit.loggers.csv_logger",
             "none": "plmbench.lit.loggers.no_logger"}


def build_logger(logger_cfg: dict, run_dir: Path, name: str, config: dict, group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None, run_id: str | None = None):
    """The run's logger (False for none): logger_cfg's `_target_`, called with the node's keys but `kind` (a label
    that `plmbench sweep` reads) and, of the run's facts (save_dir: the run directory, name, config, group, job_type,
    tags, run_id), those its signature names; so a Lightning logger class fits as it is."""
    from hydra.utils import get_object

    kind = logger_cfg.get("kind", "none")
    target = logger_cfg.get("_target_") or FACTORIES.get(kind)
    if target is None:
        raise ValueError(f"logger.kind={kind!r}: allowed values are {', '.join(FACTORIES)}, or give logger._target_")
    try:
        factory = get_object(target)
    except Exception as error:  # noqa: BLE001 - hydra says ImportError, or ValueError for an empty name
        raise ValueError(f"logger._target_={target!r}: cannot be imported ({' '.join(str(error).split())[:200]})") \
            from None
    facts = {"save_dir": str(run_dir), "name": name, "config": config, "group": group, "job_type": job_type,
             "tags": tags, "run_id": run_id}
    named = inspect.signature(factory).parameters
    settings = {key: value for key, value in logger_cfg.items() if key not in ("_target_", "kind")}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in named.values()):
        # A key the factory does not take is left out, not a TypeError that would cost the run its logger: a
        # credential (+logger.api_key=..., which W&B reads from WANDB_API_KEY or `wandb login` anyway) silently.
        unknown = [key for key in settings if key not in named]
        if [key for key in unknown if not is_secret_key(key)]:
            log.warning("logger %s takes no %s; ignored", target, ", ".join(k for k in unknown if not is_secret_key(k)))
        settings = {key: value for key, value in settings.items() if key in named}
    try:
        return factory(**{key: value for key, value in facts.items() if key in named}, **settings)
    except Exception as error:  # noqa: BLE001 - a logging backend must never take a run down
        log.warning("logger %s unavailable (%s: %s); falling back to CSV", target, type(error).__name__, error)
        return csv_logger(str(run_dir))


def no_logger() -> bool:
    return False  # Lightning's "no logger"; metrics.json is still written


def csv_logger(save_dir: str):
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=save_dir, name="csv", version="")


def wandb_logger(save_dir: str, name: str, config: dict, group: str | None = None, job_type: str | None = None,
                 tags: list[str] | None = None, run_id: str | None = None, mode: str = "offline",
                 project: str = "plmbench", entity: str | None = None, dir: str = ".",  # `dir`: the config key
                 log_model: bool | str = False, log_results: bool = False):  # log_results: the summary run's
    """A W&B run under <dir>/wandb, offline unless mode=online works (online_or_offline); a relaunch with the same
    run_id continues its run. If W&B cannot start at all, the run logs to CSV in save_dir and says why."""
    try:
        from pytorch_lightning.loggers import WandbLogger

        mode = online_or_offline(mode)
        _finish_open_run(name)

        def start(mode: str) -> WandbLogger:
            logger = WandbLogger(project=project, entity=entity, name=name, group=group, job_type=job_type,
                                 tags=tags, mode=mode, id=run_id, resume="allow", save_dir=str(Path(dir).resolve()),
                                 log_model=log_model,
                                 config=drop_secrets(config), settings=wandb_settings())
            _ = logger.experiment  # create the run now, inside this try
            return logger

        try:
            return start(mode)
        except Exception as error:  # online refused (a bad key): this run and the next go offline
            if mode != "online":
                raise
            ONLINE_FAILED.append(f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
            log.warning("W&B online failed (%s); logging offline from now on in this process (wandb sync later)",
                        ONLINE_FAILED[-1])
            _finish_open_run(name)
            return start("offline")
    except Exception as error:  # noqa: BLE001 - a logging backend must never take a run down
        log.warning("W&B logger unavailable (%s: %s); falling back to CSV", type(error).__name__, error)
        return csv_logger(save_dir)


ONLINE_FAILED: list[str] = []  # why W&B online failed in this process: later runs go offline without waiting


def online_or_offline(mode: str) -> str:
    """`online` only with credentials, a W&B server that answers within seconds, and no earlier failure in this
    process; otherwise `offline` at once (W&B itself waits its init timeout, a minute, before giving up)."""
    if mode != "online":
        return mode
    if not (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists()):
        log.warning("logger.mode=online but no W&B credentials found: logging offline (wandb sync later)")
        return "offline"
    if ONLINE_FAILED:
        return "offline"
    server = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = server.port or (443 if server.scheme == "https" else 80)
    try:
        socket.create_connection((server.hostname, port), timeout=SERVER_TIMEOUT_S).close()
    except OSError as error:
        ONLINE_FAILED.append(f"{server.hostname}:{port} unreachable ({error})")
        log.warning("W&B server %s unreachable within %d s: logging offline (wandb sync later)",
                    ONLINE_FAILED[-1], SERVER_TIMEOUT_S)
        return "offline"
    return "online"


SERVER_TIMEOUT_S = 3


def stable_run_id(run_dir: Path) -> str:
    """The W&B run id of a run directory that may be resumed: a relaunch in the same directory finds it again."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def _finish_open_run(name: str) -> None:
    """A W&B run still open here was left by a unit that did not finish it (it failed): a new WandbLogger would
    attach to it instead of starting its own run."""
    import wandb

    if wandb.run is not None:
        log.warning("W&B run %s was left open; finishing it as failed before starting %s", wandb.run.id, name)
        wandb.run.finish(exit_code=1)


@contextmanager
def finished(logger):
    """Runs the block, then finishes the logger's W&B run whatever happened: exit code 1 if the block raised."""
    try:
        yield logger
    except BaseException:
        finish_run(logger, exit_code=1)
        raise
    finish_run(logger, exit_code=0)


def finish_run(logger, exit_code: int = 0) -> None:
    try:
        if logger and hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish(exit_code=exit_code)
    except Exception as error:  # noqa: BLE001 - W&B must never fail a run
        log.warning("could not close the W&B run: %s", error)


def log_final(logger, metrics: dict, prefix: str = "final") -> None:
    """A unit's final numbers (its metrics.json's), flattened as `final/<key>`, so that every run shows its result
    in W&B whether or not its unit logged during training."""
    if not logger:
        return
    flat = {f"{prefix}/{key}": float(value) for key, value in _flatten(metrics).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
    if flat:
        logger.log_metrics(flat)
        logger.save()


def _flatten(values: dict, parent: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{parent}/{key}" if parent else str(key)
        flat.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return flat


def save_config(cfg, path: Path) -> None:
    """A run's resolved config.yaml, without secret-named keys (logger.api_key=...): run directories get shared."""
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create(drop_secrets(OmegaConf.to_container(cfg, resolve=True))), path)
