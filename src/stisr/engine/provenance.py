"""What a result was made from: code commit, package versions, data hashes, seed.

Recorded in every run's params.json and evaluation JSON (and so in MLflow), so that two numbers
can always be traced back to the exact code and data that produced them.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "pillow", "lmdb", "stisr")


@cache
def git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


@cache
def _file_sha256(path: Path, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_hash(folder: Path) -> str | None:
    """sha256 of an LMDB's data.mdb (or of gt.txt for a folder set); None if neither exists."""
    for name in ("data.mdb", "gt.txt"):
        path = Path(folder) / name
        if path.is_file():
            st = path.stat()
            return _file_sha256(path, st.st_size, st.st_mtime)
    return None


def provenance(data_dirs: Iterable[Path | str], seed: int | None = None) -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "git": git_commit(),
        "python": platform.python_version(),
        "packages": versions,
        "data": {str(d): data_hash(Path(d)) for d in data_dirs},
        "seed": seed,
    }
