"""A run's one checkpoint, `checkpoints/last.ckpt`: when it is written, and how.

Fine-tuning, export and resume read only that path, so it must always hold the run's latest step. Lightning's
ModelCheckpoint(save_last=True) does not guarantee it: when the file exists but is not one it wrote in this process
(written after a validation, or a run directory that was copied or resumed), its version counter writes the final
step to `last-v1.ckpt` and leaves `last.ckpt` stale. LastCheckpoint writes the one path itself, and
AtomicCheckpointIO writes it whole or not at all.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import time
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from plmbench import termination
from plmbench.errors import UnsafeCheckpointError, UserError, refusal


class LastCheckpoint(Checkpoint):
    """Writes `path` every `every_n_steps` optimizer steps, after each validation and when training ends.

    After a validation: a step's periodic save runs before that step's validation, and Lightning does not run the
    validation again on resume, so a run killed in between would lose its metrics. At the end: the final step is
    what the run's metrics.json reports, so it is what the checkpoint must hold. A Checkpoint subclass, so that
    Lightning calls it after the other callbacks (their state is current when it is saved) and adds no
    ModelCheckpoint of its own. At a SIGTERM it saves the step just taken and stops the run (termination.py)."""

    def __init__(self, path: Path, every_n_steps: int):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)
        self.saved_step: int | None = None
        self._seen_step: int | None = None

    def save(self, trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: optimiser, loops, callbacks
        self.saved_step = int(trainer.global_step)

    def on_train_start(self, trainer, pl_module):
        self.saved_step = self._seen_step = int(trainer.global_step)  # a resumed run's step is on disk already

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # global_step counts optimizer steps: under gradient accumulation several batches share one value, and
        # only the batch that stepped may be saved (a later one would drop its half-accumulated gradient).
        step = int(trainer.global_step)
        stepped, self._seen_step = step != self._seen_step, step
        if not stepped:
            return
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self.saved_step:
            self.save(trainer)
        if termination.requested():  # SIGTERM during this step (termination.deferred): save it, then stop
            if step != self.saved_step:
                self.save(trainer)
            raise termination.Terminated()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module):
        if int(trainer.global_step) != self.saved_step:
            self.save(trainer)


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (full disk, quota, read-only folder); the previous one is kept."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint whole or not at all, so that the previous one survives a full disk or a kill.

    Lightning's TorchCheckpointIO writes a temporary file where fsspec puts it (/tmp) and then copies it over the
    target: when the target's disk fills up during the copy, last.ckpt is left truncated and the good checkpoint
    it replaced is gone. Here the temporary file is in the target's own folder (a rename across file systems is
    a copy), flushed and fsynced before os.replace swaps it in, and removed if anything fails."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")  # one fixed name: a kill mid-write leaves one stray file
        payload = io.BytesIO()  # serialised first, as Lightning does: a disk error is then a plain OSError
        torch.save(checkpoint, payload)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                out.write(payload.getbuffer())
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
            fsync_dir(path.parent)
        except OSError as error:
            partial.unlink(missing_ok=True)
            kept = "the previous checkpoint is kept" if path.exists() else "there is no earlier checkpoint"
            raise CheckpointWriteError(
                f"{path}: cannot write the checkpoint of step {checkpoint.get('global_step', '?')}: "
                f"{error.strerror or error} ({errno.errorcode.get(error.errno, error.errno)}); {kept}") from None
        except BaseException:  # Terminated, KeyboardInterrupt: the target stays as it was
            partial.unlink(missing_ok=True)
            raise


def fsync_dir(folder: Path) -> None:
    """Makes a rename in `folder` durable (the directory entry, not only the file's bytes)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside_unreadable(path: Path) -> str | None:
    """A checkpoint that cannot be read (zero bytes, truncated, overwritten) is renamed to
    `<name>.corrupt-<UTC time>` beside it, kept for inspection, so that the run restarts instead of failing on
    it at every relaunch; returns the line that says so, or None when `path` is absent or reads. One holding
    Python objects is refused (never set aside, never run): see errors.refusal."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: no second copy in memory
        return None
    except pickle.UnpicklingError as error:
        if any(unsafe in str(error) for unsafe in ("Unsupported global", "Unsupported class")):
            raise UnsafeCheckpointError(refusal(path, error)) from None
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"
    except Exception as error:  # noqa: BLE001 - EOFError, RuntimeError (a bad zip), ...: all mean unreadable
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:120]}".rstrip(": ")
    size = path.stat().st_size
    stamp, n = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), 0
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    while aside.exists():  # two in one second: keep both
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    fsync_dir(path.parent)
    what = "zero bytes" if not size else f"{size} bytes, {reason}"
    return f"{path}: unreadable ({what}); set aside as {aside.name}"
