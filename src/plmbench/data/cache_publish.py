"""Finishing a cached build: a content hash for its folder name, and one rename that moves it into place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def content_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def publish(staging: Path, final: Path, done: str = "stats.json") -> None:
    """Moves a finished build into place in one rename; a concurrent build of the same key just loses the race
    (`done`: the file a finished build holds, so that a lost race is told apart from a real failure)."""
    try:
        os.replace(staging, final)
    except OSError:
        if not (final / done).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
