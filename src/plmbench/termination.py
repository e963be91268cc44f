"""SIGTERM, what SLURM, Docker and `timeout` send: stop with exit status 143 and one line saying what stopped.

Python's default is to die without a word, and under Lightning a fit ended quietly with exit status 0, so a
scheduler counted a stopped job as a success. The `plmbench` command installs this module's handler: outside a
fit it raises Terminated at once; inside `deferred()` (pre-training) it only takes note, and the pre-training
callback stops at the end of the current step, after saving it, so that a relaunch resumes from there.
"""

from __future__ import annotations

import contextlib
import signal
import sys

EXIT_STATUS = 128 + signal.SIGTERM  # 143, what a shell reports for a process killed by SIGTERM


AFTER = {  # what a relaunch does, per command that can pick up where it stopped
    "pretrain": "relaunch the same command to resume from its checkpoint",
    "sweep": "relaunch the same command to resume: finished units are kept, a cell resumes from its checkpoint",
    "distill": "relaunch the same command to resume from its checkpoint",
}


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, as KeyboardInterrupt is: `except Exception` (a sweep recording a failed
    unit and going on to the next) must not swallow it. The message, if any, says where the run stopped."""


_deferred = 0
_requested = False


def requested() -> bool:
    return _requested


def _handler(signum, frame) -> None:
    global _requested
    _requested = True
    if not _deferred:
        raise Terminated()


@contextlib.contextmanager
def deferred():
    """SIGTERM inside only sets requested(): whoever runs the loop stops at a point it can save. One arriving
    after the loop finished still stops the process on the way out."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if _requested and not _deferred:
        raise Terminated()


@contextlib.contextmanager
def stop_on_sigterm(command: str):
    """Around a whole `plmbench <command>`: SIGTERM ends it with one line on stderr and exit status 143."""
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    except Terminated as stop:
        where = f" {stop}" if str(stop) else ""
        after = AFTER.get(command, "relaunch the same command to run it again")
        print(f"plmbench: {command} stopped by SIGTERM{where}; {after}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
