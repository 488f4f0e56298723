"""The official-source registry: ``sources.yaml``, read and validated into :class:`Source` entries.

Why a module of its own: the planner (``stisr.papers``), ``dvc.yaml`` generation and the
Snakefile only need to know which sources exist and where each one lands, not how to download
them. This module therefore imports nothing heavier than ``yaml`` (no HTTP client, no progress
bar), so listing the sources stays cheap; the downloader is :mod:`stisr.data.fetch`.

The original repositories link their data through Google Drive, Dropbox and release pages with no
checksums; each entry here records its URLs, the expected size / sha256 / md5 where known, the
archive format and the destination under the data root. A malformed entry raises
:class:`SourceError` naming the entry and the key.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

__all__ = [
    "ARCHIVES",
    "KINDS",
    "PARTIAL_DIR",
    "PIN_FILE_NAME",
    "Source",
    "SourceError",
    "gdrive_download_url",
    "load_sources",
]

SOURCES_FILE = Path(__file__).with_name("sources.yaml")
# Overridable (tests point it at a local server): where ``gdrive://<id>`` files are requested.
GDRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download"
# Names the downloader keeps at the top of a data root, so no entry may install there.
PIN_FILE_NAME = "checksums.json"
PARTIAL_DIR = ".partial"

KINDS = ("dataset", "weights")
ARCHIVES = ("zip", "tar", "tar.gz", "none")
_SCHEMES = ("https", "http", "gdrive", "gdrive-folder")
_REQUIRED = ("name", "description", "kind", "urls", "sha256", "size", "archive", "dest", "license")
_OPTIONAL = ("manual", "citation", "md5", "auto")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_GDRIVE_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


class SourceError(ValueError):
    """A registry entry (or the registry file) is malformed; the message names entry and key."""


@dataclass(frozen=True)
class Source:
    """One registry entry; see the header of ``sources.yaml`` for the meaning of each key."""

    name: str
    description: str
    kind: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    archive: str
    dest: str
    license: str
    manual: str | None = None
    citation: str | None = None
    md5: str | None = None
    auto: bool = True

    @property
    def download_urls(self) -> tuple[str, ...]:
        """URLs a program can download (folders and pages for people are left out)."""
        if not self.auto:
            return ()
        return tuple(u for u in self.urls if not u.startswith("gdrive-folder://"))


def load_sources(path: str | Path | None = None) -> dict[str, Source]:
    """Read and validate the registry (default: the ``sources.yaml`` shipped with the package)."""
    path = Path(path) if path is not None else SOURCES_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SourceError(f"{path}: cannot read the registry: {e}") from e
    except yaml.YAMLError as e:
        raise SourceError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list):
        raise SourceError(f"{path}: key 'sources': expected a list of entries")
    unknown_top = set(doc) - {"version", "sources"}
    if unknown_top:
        raise SourceError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}")
    out: dict[str, Source] = {}
    for i, entry in enumerate(doc["sources"]):
        src = _parse_entry(entry, f"{path}: entry #{i + 1}")
        where = f"{path}: entry {src.name!r}"
        if src.name in out:
            raise SourceError(f"{where}: key 'name': duplicate name")
        for other in out.values():
            a, b = PurePosixPath(src.dest), PurePosixPath(other.dest)
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                raise SourceError(f"{where}: key 'dest': {src.dest!r} overlaps {other.name!r}")
        out[src.name] = src
    return out


def _parse_entry(entry: Any, where: str) -> Source:
    if not isinstance(entry, dict):
        raise SourceError(f"{where}: expected a mapping, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SourceError(f"{where}: key 'name': expected a lowercase id, got {name!r}")
    where = f"{where.rsplit(': entry', 1)[0]}: entry {name!r}"

    def bad(key: str, why: str) -> SourceError:
        return SourceError(f"{where}: key {key!r}: {why}")

    for key in _REQUIRED:
        if key not in entry:
            raise bad(key, "missing")
    for key in entry:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise bad(key, "unknown key")
    for key in ("description", "license"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise bad(key, "expected a non-empty string")
    for key in ("manual", "citation"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise bad(key, "expected a string")
    if entry["kind"] not in KINDS:
        raise bad("kind", f"expected one of {KINDS}, got {entry['kind']!r}")
    if entry["archive"] not in ARCHIVES:
        raise bad("archive", f"expected one of {ARCHIVES}, got {entry['archive']!r}")
    urls = entry["urls"]
    if not isinstance(urls, list) or not urls:
        raise bad("urls", "expected a non-empty list")
    for url in urls:
        reason = _url_problem(url)
        if reason:
            raise bad("urls", f"{url!r}: {reason}")
    sha256 = _hex_or_none(entry["sha256"], 64, bad("sha256", "expected 64 hex digits or null"))
    md5 = _hex_or_none(entry.get("md5"), 32, bad("md5", "expected 32 hex digits or null"))
    size = entry["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise bad("size", f"expected a byte count or null, got {size!r}")
    auto = entry.get("auto", True)
    if not isinstance(auto, bool):
        raise bad("auto", f"expected true or false, got {auto!r}")
    dest = entry["dest"]
    if not isinstance(dest, str) or not dest:
        raise bad("dest", "expected a relative path")
    parts = PurePosixPath(dest).parts
    if (
        dest.startswith("/")
        or "\\" in dest
        or any(p in ("..", ".") for p in parts)
        or parts[0] in (PARTIAL_DIR, PIN_FILE_NAME)
        or PurePosixPath(dest).as_posix() != dest.rstrip("/")
    ):
        raise bad("dest", f"expected a clean relative path under the root, got {dest!r}")
    src = Source(
        name=name,
        description=entry["description"].strip(),
        kind=entry["kind"],
        urls=tuple(urls),
        sha256=sha256,
        size=size,
        archive=entry["archive"],
        dest=dest.rstrip("/"),
        license=entry["license"].strip(),
        manual=(entry.get("manual") or "").strip() or None,
        citation=entry.get("citation"),
        md5=md5,
        auto=auto,
    )
    if not src.download_urls and not src.manual:
        raise bad("manual", "required when no URL can be downloaded automatically")
    return src


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return "expected a string"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        return f"scheme must be one of {_SCHEMES}"
    if scheme.startswith("gdrive"):
        return None if _GDRIVE_ID_RE.match(rest) else "expected a Google Drive id"
    return None if urllib.parse.urlsplit(url).netloc else "missing host"


def _hex_or_none(value: Any, length: int, error: SourceError) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != length or not _HEX_RE.match(value.lower()):
        raise error
    return value.lower()


def gdrive_download_url(file_id: str) -> str:
    """Direct-download URL of a Drive file (``confirm=t`` skips the warning for most files)."""
    query = urllib.parse.urlencode({"id": file_id, "export": "download", "confirm": "t"})
    return f"{GDRIVE_DOWNLOAD_URL}?{query}"
