"""One pre-training run, from a composed config to a checkpoint and metrics.json.

Used by `plmbench pretrain` (in a Hydra run directory) and by sweeps (in the cell's lineage directory). A run
directory that already holds checkpoints/last.ckpt is resumed from it: same step, same data order, same RNG.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from plmbench import termination
from plmbench.errors import UnsafeCheckpointError, UserError, refusal
from plmbench.lineage import cell_spec
from plmbench.lit.loggers import build_logger, finished, log_final, save_config, stable_run_id
from plmbench.lit.machine import check_machine
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.numbers import PRETRAINING, check_numbers
from plmbench.objectives import check_objective
from plmbench.safety import check_plain_name

log = logging.getLogger(__name__)


def validate_pretrain(cfg: DictConfig) -> None:
    """Everything that can be checked without data: fails in seconds, naming the key."""
    check_numbers(cfg, PRETRAINING)
    check_machine(str(cfg.trainer.accelerator), cfg.trainer.devices, str(cfg.impl.precision))
    model = ModelConfig.from_mapping(cfg.model)
    check_objective(model, OmegaConf.to_container(cfg.objective, resolve=True))
    minimum = 5 if cfg.objective.packing == "segment_pair" else 2  # [CLS] A [SEP] B [SEP] needs A and B
    if int(cfg.data.max_seq_len) < minimum:
        raise ConfigError(f"data.max_seq_len={cfg.data.max_seq_len}: must be at least {minimum} for "
                          f"objective={cfg.objective.name}")
    if int(cfg.data.max_seq_len) > model.max_positions:
        raise ConfigError(f"data.max_seq_len={cfg.data.max_seq_len} exceeds model.max_positions="
                          f"{model.max_positions}")
    if int(cfg.trainer.max_steps) < 0:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps}: must be 0 (no pre-training: the initial "
                          f"weights, a control cell) or a positive integer")
    if cfg.corpus.get("kind") == "files":  # globs that match nothing fail now, not after imports and caches
        from plmbench.data.corpora.files import from_config

        from_config(cfg.corpus)  # checks options and expands the globs; reading is lazy
    for key in ("name", "results"):  # each names a directory under results/: never a path out of it
        value = OmegaConf.select(cfg, f"experiment.{key}")
        if value is not None:
            check_plain_name(f"experiment.{key}", str(value))


# What a run directory holds before its config.yaml is written: Hydra's files, a multi-device launch's config and a
# sweep's lock. A run stopped in data preparation has only these, and its relaunch is welcome.
BEFORE_CONFIG = (".hydra", "launch_config.yaml", ".lock")


def check_run_dir(cfg: DictConfig, run_dir: Path, key: str = "run directory") -> None:
    """A run writes config.yaml and tokenizer/ into run_dir and resumes its checkpoint: run_dir must be new, empty,
    or a plmbench run of the same config (a relaunch; only trainer.max_steps may change, to train on). Anything
    else, a folder of the user's files or a run of another model shape, is refused before a file is written."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UserError(f"{key}={run_dir}: a file, not a folder; give a new or empty folder for the run")
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in BEFORE_CONFIG and p.suffix != ".log")
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(f"{key}={run_dir}: not empty ({shown}) and not a plmbench run (no config.yaml); "
                            f"give a new or empty folder: a run writes config.yaml and tokenizer/ there")
        return
    try:
        before = _resumable_spec(OmegaConf.load(saved))
    except Exception:  # noqa: BLE001 - any config.yaml that is not a run's
        raise UserError(f"{key}={run_dir}: its config.yaml is not a plmbench run's; give a new or empty folder: "
                        f"a run writes config.yaml and tokenizer/ there") from None
    changed = _differences(before, _resumable_spec(cfg))
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise UserError(f"{key}={run_dir}: a plmbench run of another config ({shown}); relaunch it with its own "
                        f"settings (only trainer.max_steps may change), or give this run a new folder")


def _resumable_spec(cfg: DictConfig) -> dict:
    """What a resumed run must share with the run that wrote its checkpoint: its cell's identity but for
    max_steps (a relaunch may train on, e.g. after a SIGTERM) and the lineage version (a relaunch after an
    upgrade resumes the same weights)."""
    spec = cell_spec(cfg)
    spec.pop("version", None)
    spec["trainer"].pop("max_steps", None)
    return spec


def _differences(before, after, prefix: str = "") -> list[str]:
    """`key: old -> new` for each leaf that differs, in dotted keys."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [line for k in sorted(set(before) | set(after), key=str)
                for line in _differences(before.get(k), after.get(k), f"{prefix}{k}.")]
    return [] if before == after else [f"{prefix.rstrip('.')}: {before} -> {after}"]


def checkpoint_kept(run_dir: Path) -> bool:
    """Whether a finished run's checkpoints/last.ckpt is there and reads. An unreadable one (zero bytes after a
    crash, truncated by a copy) is set aside, so that the run trains again instead of every unit failing on it."""
    from plmbench.lit.checkpoints import set_aside_unreadable

    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    aside = set_aside_unreadable(last)
    if aside:
        log.warning("%s; the run trains again from step 0", aside)
    return last.is_file()


def world_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.devices
    per_node = int(devices) if str(devices).isdigit() else 1  # "auto"/-1 on one device count as 1 here
    return per_node * int(cfg.trainer.num_nodes)


def launched_by_cluster() -> bool:
    """SLURM (srun) and torchrun start every rank themselves: then the current process is already a rank."""
    return "LOCAL_RANK" in os.environ or ("SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1)


def run_in_worker(cfg: DictConfig, run_dir: Path) -> dict:
    """Runs the pre-training in a fresh Hydra-free process (plmbench.lit.ddp_worker) that Lightning can relaunch
    per rank."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "launch_config.yaml"
    save_config(cfg, config_path)  # secrets dropped: nothing in a run reads them
    subprocess.run([sys.executable, "-m", "plmbench.lit.ddp_worker", str(config_path), str(run_dir)], check=True)
    return json.loads((run_dir / "metrics.json").read_text())


def pretraining_trainer(cfg: DictConfig, run_dir: Path, callbacks: list, logger):
    """The Trainer of a pre-training or distillation run: a step budget, validation every so many steps, and the
    checkpoint a relaunch resumes (written atomically, every trainer.checkpoint_every_n_steps)."""
    from plmbench.lit.checkpoints import AtomicCheckpointIO, LastCheckpoint
    from plmbench.lit.trainer import build_trainer

    t = cfg.trainer
    checkpoints = LastCheckpoint(run_dir / "checkpoints" / "last.ckpt", int(t.checkpoint_every_n_steps))
    return build_trainer(
        cfg, run_dir, logger, [*callbacks, checkpoints],
        max_steps=int(t.max_steps), accumulate_grad_batches=int(t.accumulate_grad_batches),
        val_check_interval=int(t.val_check_interval) * int(t.accumulate_grad_batches),
        check_val_every_n_epoch=None, limit_val_batches=t.limit_val_batches,
        plugins=[AtomicCheckpointIO()], use_distributed_sampler=False)


def run_pretraining(cfg: DictConfig, run_dir: Path, logger_meta: dict | None = None, in_worker: bool = False) -> dict:
    validate_pretrain(cfg)
    check_run_dir(cfg, run_dir)  # before config.yaml is rewritten: never over the user's files or another run
    if world_size(cfg) > 1 and not in_worker and not launched_by_cluster():
        return run_in_worker(cfg, run_dir)  # DDP ranks re-run a Hydra-free command line, not the Hydra app
    import pytorch_lightning as pl

    from plmbench.data.tokenizer import save_hf_tokenizer
    from plmbench.impl import apply_threads
    from plmbench.lit.checkpoints import set_aside_unreadable
    from plmbench.lit.pretrain_data import PretrainData
    from plmbench.lit.pretrain_module import PretrainModule
    from plmbench.lit.run_metrics import RunMetrics

    aside = set_aside_unreadable(run_dir / "checkpoints" / "last.ckpt")  # a zero-byte or truncated file failed
    if aside:  # every relaunch (a bare EOFError): kept aside for a look, and the run trains again
        log.warning("%s; the run restarts from step 0 (it has no other checkpoint)", aside)
    run_dir.mkdir(parents=True, exist_ok=True)
    apply_threads(cfg.impl)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # A resume keeps the tokenizer its checkpoint was trained with: one trained again (another machine, a newer
    # TOKENIZER_VERSION, a cleared cache) may number the pieces differently.
    own_tokenizer = run_dir / "tokenizer" / "tokenizer.json"
    resuming = (run_dir / "checkpoints" / "last.ckpt").is_file() and own_tokenizer.is_file()
    data = PretrainData(cfg, tokenizer_file=own_tokenizer if resuming else None)
    data.prepare()
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if data.vocab_size != model_cfg["vocab_size"]:
        log.info("model.vocab_size %d -> %d (the trained tokenizer's size)", model_cfg["vocab_size"], data.vocab_size)
        model_cfg["vocab_size"] = data.vocab_size
    module = PretrainModule(model_cfg, OmegaConf.to_container(cfg.objective, resolve=True),
                            OmegaConf.to_container(cfg.optim, resolve=True),
                            OmegaConf.to_container(cfg.impl, resolve=True), int(cfg.trainer.max_steps),
                            val_names=tuple(data.val),
                            knowledge=OmegaConf.to_container(cfg.knowledge, resolve=True) if "knowledge" in cfg else None)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    save_config(cfg, run_dir / "config.yaml")
    save_hf_tokenizer(data.tokenizer, data.special, run_dir / "tokenizer", cfg.model.family)
    meta = logger_meta or {}
    logger = build_logger(resolved.get("logger", {"kind": "none"}), run_dir, meta.get("name", run_dir.name), resolved,
                          group=meta.get("group"), job_type="pretrain", tags=meta.get("tags"),
                          run_id=meta.get("id") or stable_run_id(run_dir))  # a relaunch continues this W&B run
    with finished(logger):  # the W&B run ends whatever happens: failed (exit code 1) if training raised
        metrics = RunMetrics(run_dir / "metrics.json", extra={"vocab_size": data.vocab_size,
                                                              "instances": len(data.train), "data_stats": data.stats})
        trainer = pretraining_trainer(cfg, run_dir, [metrics], logger)
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            log.info("resuming from %s", last)
        # Our loader resumes at the checkpoint's batch by construction (lit/sampling.py): Lightning's warning that
        # it cannot does not apply. weights_only: a checkpoint is data, never code to unpickle.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        untrained = int(cfg.trainer.max_steps) == 0  # a control cell: the initial weights, validated, as a checkpoint
        if untrained:
            trainer.validate(module, datamodule=data, verbose=False)  # the intrinsic metrics of a random model
        fit_resumable(trainer, module, data, cfg, run_dir, metrics)
        if untrained and not last.exists():
            trainer.save_checkpoint(last, weights_only=True)  # what fine-tuning loads, as from any other cell
        log_final(logger, _read(run_dir))
    return _read(run_dir)


def fit_resumable(trainer, module, data, cfg: DictConfig, run_dir: Path, metrics) -> None:
    """trainer.fit from run_dir's last.ckpt when there is one; SIGTERM stops it at the end of a step, saved
    (lit/checkpoints.py), and raises Terminated saying where."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        with termination.deferred():
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except pickle.UnpicklingError as error:  # only a checkpoint load unpickles here
        raise UnsafeCheckpointError(refusal(last, error)) from None
    except (termination.Terminated, SIGTERMException):  # SIGTERMException: Lightning's stop, e.g. in a validation
        raise termination.Terminated(_stopped(cfg, run_dir, trainer, module, metrics)) from None


def _stopped(cfg: DictConfig, run_dir: Path, trainer, module, metrics) -> str:
    """Records a run stopped by SIGTERM (metrics.json, status "stopped": a relaunch resumes it); says where."""
    step, saved = int(trainer.global_step), trainer.checkpoint_callback.saved_step
    if step < int(cfg.trainer.max_steps) and metrics.started:  # a finished run keeps its "finished"
        metrics.write(trainer, module, "stopped", stopped_by="SIGTERM", checkpoint_step=saved)
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        checkpoint = ("checkpoint saved at this step" if saved == step else
                      f"its checkpoint holds step {saved}" if saved is not None else "its checkpoint is kept")
    else:
        checkpoint = "no checkpoint yet"
    return f"at step {step} of {cfg.trainer.max_steps} in {run_dir} ({checkpoint})"


def _read(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def copy_tokenizer(src_run: Path, dst: Path) -> None:
    shutil.copytree(src_run / "tokenizer", dst, dirs_exist_ok=True)
