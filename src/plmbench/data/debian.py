"""Fetch and unpack Debian packages that carry public-domain or freely licensed text (Austen, the KJV, WordNet).

Debian's archive is a stable, versioned, checksummed mirror of these texts, reachable where the Hugging Face hub
is not. `apt-get download` needs no root and `dpkg-deb -x` unpacks without installing, so nothing on the system
changes: each package lands in `data_root()/debian/<name>/` beside a `PACKAGE.json` that records its version and
the .deb's sha256 (the manifest of the embedded corpus cites both).

Machines without apt can drop the .deb files into a directory named by $PLMBENCH_DEB_DIR instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from plmbench import paths

RECORD = "PACKAGE.json"  # written last: its presence means the unpacked tree is complete


class MissingSourceError(ValueError):
    """A Debian package that could not be fetched or unpacked."""


def ensure_package(name: str) -> Path:
    """The root into which Debian package `name` is unpacked, fetching and unpacking it on first use."""
    root = paths.data_root() / "debian" / name
    if (root / RECORD).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root.parent) as scratch:
        deb = _fetch(name, Path(scratch))
        tree = Path(scratch) / "tree"
        _run(["dpkg-deb", "-x", str(deb), str(tree)], name)
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], name).strip()
        record = {"package": name, "version": version, "deb": deb.name, "sha256": _sha256(deb)}
        (tree / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if root.exists() and not (root / RECORD).is_file():
            shutil.rmtree(root)  # an interrupted older unpack (no record): replace it
        try:
            os.replace(tree, root)  # atomic: readers see the whole tree or none
        except OSError:
            if not (root / RECORD).is_file():  # a concurrent process won the race; else a real failure
                raise
    return root


def package_record(name: str) -> dict:
    """{'package', 'version', 'deb', 'sha256'} of an unpacked package (fetching it when needed)."""
    return json.loads((ensure_package(name) / RECORD).read_text(encoding="utf-8"))


def _fetch(name: str, scratch: Path) -> Path:
    """The package's .deb: from $PLMBENCH_DEB_DIR when it holds one, else `apt-get download` into `scratch`."""
    local_dir = os.environ.get("PLMBENCH_DEB_DIR")
    if local_dir:
        found = sorted(Path(local_dir).glob(f"{name}_*.deb"))
        if found:
            return found[-1]
    _run(["apt-get", "download", "-q", name], name, cwd=scratch)
    found = sorted(scratch.glob(f"{name}_*.deb"))
    if not found:
        raise MissingSourceError(_advice(name, "apt-get download produced no .deb"))
    return found[-1]


def _run(command: list[str], name: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:  # no apt/dpkg on this system, or a hung mirror
        raise MissingSourceError(_advice(name, f"{command[0]} failed: {error}")) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise MissingSourceError(_advice(name, f"`{' '.join(command[:2])}` exited {done.returncode}: {last}"))
    return done.stdout


def _advice(name: str, reason: str) -> str:
    return (f"Debian package {name!r} is unavailable ({reason}); run `apt-get download {name}` on a Debian/Ubuntu "
            f"machine and point $PLMBENCH_DEB_DIR at the .deb, or use corpus=files corpus.paths='...' or corpus=hub")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
