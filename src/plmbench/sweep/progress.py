"""The sweep-level progress line: units done / total, failures and an ETA from this process's pace."""

from __future__ import annotations

import time


class SweepProgress:
    def __init__(self, total: int, already_done: int = 0):
        self.total, self.done, self.failed = total, already_done, 0
        self.started, self.ran = time.perf_counter(), 0

    def unit_finished(self, failed: bool, ran: bool = True) -> str:
        self.done += 1
        self.failed += int(failed)
        self.ran += int(ran)
        return self.line()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        left = self.total - self.done
        eta = f"{elapsed / self.ran * left / 60:.1f} min" if self.ran and left else ("0 min" if not left else "?")
        return f"[sweep] {self.done}/{self.total} units done, {self.failed} failed, ETA {eta}"
