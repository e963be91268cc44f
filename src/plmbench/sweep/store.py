"""The results store of an experiment: results/<experiment>/records.jsonl, one JSON record per finished unit.

Appends are crash-safe and safe between parallel jobs: each record is one line written by a single os.write to a
file opened O_APPEND, then fsync'd, under an exclusive flock on a sidecar lock file (a sidecar, not the records file
itself, so that `repair` can replace the records file without a waiting writer appending to the old inode).
A write killed half-way leaves a partial last line; readers skip it with a warning, the next append starts on a
fresh line so that its record stays whole, and `repair` rewrites the file without the damaged lines.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from pathlib import Path

from plmbench.errors import UserError
from plmbench.safety import check_plain_name, drop_secrets

log = logging.getLogger(__name__)

DONE_STATUSES = ("ok", "failed")  # a unit's final word; a relaunch runs a failed one again unless told not to


class StoreError(UserError):
    """The store cannot be written (disk full, unwritable directory); the message names the path and the reason."""


def _reason(error: OSError) -> str:
    code = errno.errorcode.get(error.errno, "?") if error.errno else "?"
    return f"{error.strerror or error} ({code})"


class ResultsStore:
    """Append-only JSON-lines store of unit records (see the record schema in plmbench.tables)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.skipped_lines: list[int] = []  # 1-based numbers of the unreadable lines met by the last read

    @classmethod
    def for_experiment(cls, experiment: str, results_dir: str | Path | None = None) -> ResultsStore:
        from plmbench.paths import results_root

        return cls(Path(results_dir or results_root()) / check_plain_name("experiment", experiment) / "records.jsonl")

    def exists(self) -> bool:
        return self.path.is_file()

    # ---- writing -------------------------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Fail now, before any compute, if records could not be appended (a sweep calls this first)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as error:
            raise StoreError(f"cannot write the results store {self.path}: {_reason(error)}") from None
        with self._locked(fcntl.LOCK_EX):
            pass

    def append(self, record: dict) -> None:
        """Write one record durably; secrets are dropped first. Raises StoreError, leaving earlier records intact."""
        if not isinstance(record, dict):
            raise TypeError(f"{self.path}: a record must be a dict, got {type(record).__name__}")
        if not isinstance(record.get("unit_id"), str):
            raise ValueError(f"{self.path}: a record needs a string unit_id, got {str(record)[:80]!r}")  # noqa: TRY004
        line = (json.dumps(drop_secrets(record), ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the results directory {self.path.parent}: {_reason(error)}") from None
        with self._locked(fcntl.LOCK_EX):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as error:
                raise StoreError(f"cannot open {self.path} for appending: {_reason(error)}") from None
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a killed write left a partial line: do not glue this record onto it
                self._write_all_or_nothing(fd, line, size)
            finally:
                os.close(fd)

    def _write_all_or_nothing(self, fd: int, data: bytes, size_before: int) -> None:
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write: the disk filled up (or a file size limit was reached)
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size_before)  # take back the partial record; earlier records are untouched
            raise StoreError(f"cannot append to {self.path}: {_reason(error)}") from None

    def repair(self) -> int:
        """Rewrite the file atomically (tmp + os.replace) without its unreadable lines; returns how many were dropped."""
        if not self.exists():
            return 0
        with self._locked(fcntl.LOCK_EX):
            good, bad = self._parse(self.path.read_bytes())
            if not bad:
                return 0
            tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
            try:
                with open(tmp, "wb") as handle:
                    handle.write(b"".join(raw + b"\n" for raw, _ in good))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
            except OSError as error:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise StoreError(f"cannot repair {self.path}: {_reason(error)}") from None
        log.warning("%s: repaired, dropped %d unreadable line(s) (numbers %s)", self.path, len(bad), bad)
        self.skipped_lines = []
        return len(bad)

    # ---- reading -------------------------------------------------------------------------------------------------

    def records(self) -> list[dict]:
        """All readable records in file order; an unreadable line (a killed write) is skipped with a warning."""
        if not self.exists():
            return []
        with self._locked(fcntl.LOCK_SH, required=False):
            data = self.path.read_bytes()
        good, bad = self._parse(data)
        self.skipped_lines = bad
        if bad:
            log.warning("%s: skipped %d unreadable line(s) %s (a write killed half-way?); "
                        "ResultsStore.repair() rewrites the file without them", self.path, len(bad), bad)
        return [record for _, record in good]

    def completed_units(self, retry_failed: bool = False, launch: str | None = None) -> set[str]:
        """unit_ids a resumed sweep skips, by each unit's latest final word (ok or failed): ok ones; failed ones too
        unless `retry_failed`, and even then those that failed in this same `launch` (one `plmbench sweep`, whose
        parts may share a cell), so that a relaunch tries a failed unit once more, not once per part."""
        latest = {r["unit_id"]: r for r in self.records() if r.get("status") in DONE_STATUSES}
        return {unit for unit, r in latest.items()
                if r["status"] == "ok" or not retry_failed or (launch is not None and r.get("launch") == launch)}

    def failed_units(self) -> set[str]:
        """unit_ids whose latest final word is failed: what a relaunch retries (sweep.retry_failed)."""
        return self.completed_units() - self.completed_units(retry_failed=True)

    def latest(self, unit_id: str) -> dict | None:
        """The last record appended for `unit_id` (a retried unit has several), or None."""
        found = [r for r in self.records() if r.get("unit_id") == unit_id]
        return found[-1] if found else None

    # ---- helpers -------------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(data: bytes) -> tuple[list[tuple[bytes, dict]], list[int]]:
        good, bad = [], []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                bad.append(number)
                continue
            if isinstance(record, dict) and isinstance(record.get("unit_id"), str):
                good.append((raw, record))
            else:
                bad.append(number)
        return good, bad

    @contextlib.contextmanager
    def _locked(self, mode: int, required: bool = True):
        """flock on the sidecar lock file. Readers of a read-only copy (required=False) go on without it."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if required:
                raise StoreError(f"cannot lock {self.lock_path}: {_reason(error)}") from None
            yield
            return
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
