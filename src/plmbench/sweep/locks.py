"""Locks that keep two sweeps on one results folder from training the same cell or unit twice.

Each cell and each unit folder holds a `.lock` file; the process running it holds an exclusive flock on that file
(and writes its pid there, so that others can say who). A second sweep does not wait: it skips what is held, says
so, and a later relaunch picks it up from the store. The kernel drops a flock when its process dies (SIGKILL
included), so a killed sweep never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK = ".lock"


@contextlib.contextmanager
def hold(folder: Path) -> Iterator[str | None]:
    """Yields None while this process holds `folder`'s lock; when another process holds it, yields at once who
    does ("pid 1234", or "another process")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield holder(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield None
    finally:
        os.close(fd)  # closing releases the lock


def holder(fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"pid {pid}" if pid.isdigit() else "another process"
