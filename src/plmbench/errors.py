"""User-facing errors: one line naming the key, file or value at fault, and what is allowed; exit status 2."""

from __future__ import annotations

import contextlib
import sys


class UserError(ValueError):
    """Any error caused by input the user can fix (config, data files, paths)."""


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
        message = " ".join(str(error).split()).split(" Config search path:")[0]  # Hydra appends its search path
        print(f"plmbench: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_ours(error: BaseException) -> bool:
    return any(frame.tb_frame.f_globals.get("__name__", "").startswith("plmbench")
               for frame in _frames(error.__traceback__))


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next
