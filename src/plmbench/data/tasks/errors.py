"""Errors for downstream task data, and the policy for malformed rows (`task.on_bad_row`).

Missing files, unreadable files and missing columns always raise: nothing sensible can be loaded. A single malformed
row (wrong column count, unknown label, misaligned SQuAD answer, RACE answer outside its options) is skipped and
counted under the default `on_bad_row: skip`, because the real distribution files are large and one bad line should not
cost a run; `on_bad_row: error` raises at the first one instead, naming the file and line.
"""

import logging
from pathlib import Path

log = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("skip", "error")


class DataError(ValueError):
    """Task data that cannot be used; the message names the file and the line (or question) and what is wrong."""

    def __init__(self, path: str | Path, problem: str, at: int | str | None = None):
        self.path, self.problem, self.at = Path(path), problem, at
        if at is None:
            where = f"{path}"
        elif isinstance(at, int):
            where = f"{path}:{at}"  # a line number, as editors and compilers print it
        else:
            where = f"{path} ({at})"  # e.g. "question 56be4db0acb8001400a502ec"
        super().__init__(f"{where}: {problem}")


class TaskConfigError(ValueError):
    """A `task` config value that no loader understands (unknown source or family, bad on_bad_row)."""


class HubUnavailableError(ValueError):
    """The Hugging Face hub cannot be reached and the dataset is not cached."""


class BadRows:
    """Applies `task.on_bad_row` to the rows of one file: raise at the first bad row, or count and log them."""

    def __init__(self, path: str | Path, policy: str):
        if policy not in BAD_ROW_POLICIES:
            raise TaskConfigError(f"task.on_bad_row={policy!r} is not one of {', '.join(BAD_ROW_POLICIES)}")
        self.path, self.policy = Path(path), policy
        self.skipped = 0
        self.first: str | None = None

    def bad(self, problem: str, at: int | str | None = None) -> None:
        """Report one malformed row: raises DataError under 'error', otherwise remembers it for `report`."""
        error = DataError(self.path, problem, at)
        if self.policy == "error":
            raise error
        self.skipped += 1
        self.first = self.first or str(error)

    def report(self) -> None:
        """Log how many rows were skipped (nothing when none were)."""
        if self.skipped:
            log.warning(
                "skipped %d malformed row(s) of %s (task.on_bad_row=skip; set it to error to stop instead); first: %s",
                self.skipped,
                self.path,
                self.first,
            )
