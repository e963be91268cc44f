"""User-facing errors: one line naming the key, file or value at fault, and what is allowed; exit status 2."""

from __future__ import annotations

import contextlib
import sys


class UserError(ValueError):
    """Any error caused by input the user can fix (config, data files, paths)."""


class UnsafeCheckpointError(UserError):
    """A checkpoint that holds pickled Python objects besides tensors and plain data: refused, never executed."""


def load_weights_only(path):
    """torch.load(weights_only=True): tensors and plain containers only, so a checkpoint can never run code."""
    import pickle

    import torch

    check_checkpoint_file(path)  # plmbench and Lightning write zip checkpoints; anything else is damaged or foreign
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(refusal(path, error)) from None
    except (RuntimeError, EOFError) as error:  # torch's own message names no file and runs to five sentences
        first = (str(error).strip().split(". ") or [""])[0] or type(error).__name__
        raise UserError(f"{path}: not a readable checkpoint ({first}); it is truncated or not a torch file (a full "
                        "disk, an interrupted copy): delete it and rerun, or point at another checkpoint") from None


class DiskFullError(UserError):
    """No space left where a run writes: a sweep stops at once (every later unit would fail the same way)."""


def disk_full(error: BaseException) -> DiskFullError | None:
    """The one-line DiskFullError for an error caused by a full disk or quota (ENOSPC, EDQUOT), else None."""
    import errno

    seen = error
    while seen is not None:
        if isinstance(seen, DiskFullError):
            return seen
        if (isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)) or "ENOSPC" in str(seen):
            return DiskFullError(f"{' '.join(str(error).split())}; free some space and relaunch the same command: "
                                 "finished units and checkpoints are kept")
        seen = seen.__cause__ or seen.__context__
    return None


def check_checkpoint_file(path) -> None:
    """A torch checkpoint is a zip archive: a truncated one (a full disk, an interrupted copy) has no central
    directory. Checked in milliseconds, before data preparation, instead of failing after it."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable checkpoint (no zip central directory); it is truncated or not a "
                        "torch file (a full disk, an interrupted copy): delete it and rerun, or point at another "
                        "checkpoint")


def refusal(path, error: BaseException) -> str:
    """One line naming the checkpoint and what it smuggles (torch's own message is 10 lines advising to unpickle)."""
    import re

    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    what = f"the Python object {found.group(1)}" if found else "Python objects"
    return (f"{path}: refused: it holds {what} besides weights, and plmbench loads checkpoints with "
            "torch.load(weights_only=True) only, never running code from them")


@contextlib.contextmanager
def report_user_errors():
    """Turn configuration and data errors into one line on stderr; anything else keeps its traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (ValueError, FileNotFoundError, HydraException, OmegaConfBaseException) as error:
        if type(error) is ValueError and not _is_ours(error):
            raise
        print(f"plmbench: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(error: BaseException) -> str:
    """The message on one line; a misspelled override also gets the keys that exist where it points."""
    import re

    message = " ".join(str(error).split()).split(" Config search path:")[0]  # Hydra appends its search path
    override = re.match(r"Could not override '([^']+)'", message)
    cause = error.__cause__
    parent, key, full_key = (getattr(cause, name, None) for name in ("parent_node", "key", "full_key"))
    if override and hasattr(parent, "keys") and key is not None and full_key:
        import difflib

        known = [str(k) for k in parent if str(k) != "hydra"]
        if not known:
            return message
        where = str(full_key).rpartition(".")[0]
        close = difflib.get_close_matches(str(key), known, n=1)
        guess = f" (did you mean {where + '.' if where else ''}{close[0]}?)" if close else ""
        scope = f"under {where}" if where else "at the top level"
        message = (f"Could not override '{override.group(1)}': no key {full_key}{guess}; allowed keys {scope}: "
                   f"{', '.join(known)}; to add a new key use +{override.group(1)}=...")
    return message


def _is_ours(error: BaseException) -> bool:
    return any(frame.tb_frame.f_globals.get("__name__", "").startswith("plmbench")
               for frame in _frames(error.__traceback__))


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next
