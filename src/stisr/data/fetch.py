"""Official-source registry (``sources.yaml``) and a resumable, checksummed, atomic downloader.

Why this shape: the original repositories link their data through Google Drive, Dropbox and
release pages with no checksums, and users lose hours to half-written folders and silently
corrupt downloads. Here nothing is ever half-written at ``<root>/<dest>``:

* bytes go to ``<partial_dir>/<name>.part`` (plus a ``.part.json`` note of the URL), and an
  interrupted transfer resumes there with an HTTP Range request on the next run (``stisr fetch``
  stages in ``.downloads/`` at the repository root, so nothing partial is ever under ``data/``;
  the library default is ``<root>/.partial``);
* the file is checked against the registry's size / sha256 / md5, or, when the registry has no
  sha256, against the one pinned in ``<root>/checksums.json`` by an earlier download; a first
  download pins its sha256 and size there, so every later download is verified;
* archives are extracted into a temporary sibling of the destination (members that would land
  outside it are rejected) and renamed into place in one step.

A checksum mismatch deletes the partial file; other failures keep it so the rerun resumes.
Every failure raises :class:`FetchError` naming the source, the URL and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml
from tqdm import tqdm

__all__ = [
    "ARCHIVES",
    "FetchError",
    "KINDS",
    "Source",
    "SourceError",
    "fetch",
    "gdrive_download_url",
    "load_sources",
    "read_pins",
]

log = logging.getLogger("stisr.data.fetch")

SOURCES_FILE = Path(__file__).with_name("sources.yaml")
# Overridable (tests point it at a local server): where ``gdrive://<id>`` files are requested.
GDRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download"
PIN_FILE_NAME = "checksums.json"
PARTIAL_DIR = ".partial"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "stisr-fetch/0.1 (python urllib)"
MAX_CONFIRM_PAGES = 3  # Google Drive "virus scan warning" pages followed before giving up
MAX_HTML_BYTES = 1 << 20

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


class FetchError(RuntimeError):
    """A source could not be fetched; carries the source name, the URL and the reason."""

    def __init__(self, source: str, url: str | None, reason: str) -> None:
        self.source = source
        self.url = url
        self.reason = reason
        where = f" (url: {url})" if url else ""
        super().__init__(f"fetch {source!r}: {reason}{where}")


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


# --------------------------------------------------------------------------------- registry
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


def _resolve(url: str) -> str:
    if url.startswith("gdrive://"):
        return gdrive_download_url(url.removeprefix("gdrive://"))
    return url


# -------------------------------------------------------------------------------- pin file
def read_pins(path: str | Path) -> dict[str, dict[str, Any]]:
    """Pinned checksums: ``{name: {"sha256": hex, "size": bytes}}`` ({} when absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        pins = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read pin file {path}: {e}") from e
    if not isinstance(pins, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in pins.values()
    ):
        raise ValueError(f"pin file {path}: expected {{name: {{sha256, size}}}}")
    return pins


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------- fetch
def fetch(
    name: str,
    root: str | Path,
    *,
    sources: dict[str, Source] | None = None,
    pin_file: str | Path | None = None,
    partial_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Download, verify and install source ``name`` at ``root/<dest>``; return that path.

    An existing destination is returned as is (installs are atomic, so it is complete). URLs are
    tried in order; the error of the last one is raised when all fail.
    """
    sources = load_sources() if sources is None else sources
    if name not in sources:
        known = ", ".join(sorted(sources))
        raise FetchError(name, None, f"unknown source; known sources: {known}")
    src = sources[name]
    root = Path(root)
    dest = root / src.dest
    if dest.exists() or dest.is_symlink():
        log.info("%s: already present at %s", name, dest)
        return dest
    urls = src.download_urls
    if not urls:
        raise FetchError(
            name, src.urls[0], f"cannot be downloaded automatically. {src.manual or ''}".strip()
        )

    pin_path = Path(pin_file) if pin_file is not None else root / PIN_FILE_NAME
    pinned = _load_pins(name, pin_path).get(name)
    expected_sha = src.sha256 or (pinned["sha256"] if pinned else None)
    expected_size = src.size if src.size is not None else (pinned or {}).get("size")
    sha_origin = "sources.yaml" if src.sha256 else f"pinned in {pin_path}"
    if src.sha256 and pinned and pinned["sha256"] != src.sha256:
        log.warning("%s: %s disagrees with sources.yaml; using sources.yaml", name, pin_path)

    part = Path(partial_dir or root / PARTIAL_DIR) / f"{name}.part"
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(name, None, f"cannot create {part.parent}: {e}") from e
    # A URL that already delivered bytes goes first, so its partial file is resumed.
    started = _read_meta(part).get("url")
    urls = tuple(sorted(urls, key=lambda u: u != started))

    errors: list[FetchError] = []
    for i, url in enumerate(urls):
        try:
            _download(src, url, part, expected_size, progress)
            digest, size = _verify(src, url, part, expected_sha, expected_size, sha_origin)
            break
        except FetchError as e:
            errors.append(e)
            if part.exists() and part.stat().st_size > 0:
                raise  # keep this URL's bytes for the rerun instead of trying a mirror
            if i + 1 < len(urls):
                log.warning("%s; trying the next URL", e)
    else:
        if len(errors) == 1:
            raise errors[0]
        summary = "; ".join(f"{e.url}: {e.reason}" for e in errors)
        raise FetchError(name, errors[-1].url, f"every URL failed: {summary}") from errors[-1]

    if expected_sha is None:
        pins = _load_pins(name, pin_path)
        pins[name] = {"sha256": digest, "size": size}
        try:
            _write_json_atomic(pin_path, pins)
        except OSError as e:
            raise FetchError(name, url, f"cannot write pin file {pin_path}: {e}") from e
        log.info("%s: pinned sha256 %s (%d bytes) in %s", name, digest, size, pin_path)
    _install(src, url, part, dest)
    log.info("%s: installed at %s", name, dest)
    return dest


def _load_pins(name: str, pin_path: Path) -> dict[str, dict[str, Any]]:
    try:
        return read_pins(pin_path)
    except ValueError as e:
        raise FetchError(name, None, str(e)) from e


# -------------------------------------------------------------------------------- download
class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None) -> None:
        self.total = total


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict[str, Any]:
    try:
        meta = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _save_meta(name: str, url: str, part: Path, meta: dict[str, Any]) -> None:
    try:
        _write_json_atomic(_meta_path(part), meta)
    except OSError as e:
        raise FetchError(name, url, f"cannot write {_meta_path(part)}: {e}") from e


def _discard_partial(part: Path) -> None:
    for p in (part, _meta_path(part)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _download(src: Source, url: str, part: Path, expected_size: int | None, progress: bool) -> None:
    """Bring ``part`` to the complete file, resuming what an earlier run left there."""
    meta = _read_meta(part)
    if part.exists() and meta.get("url") != url:
        log.info("%s: partial file came from another URL; starting over", src.name)
        _discard_partial(part)
        meta = {}
    have = part.stat().st_size if part.exists() else 0
    if meta.get("complete") and meta.get("size") == have:
        log.info("%s: %s already downloaded", src.name, part)
        return
    if expected_size is not None and have > expected_size:
        _discard_partial(part)
        have = 0
    if have and have == expected_size:
        return

    resp, have = _open(src, url, part, have, meta)
    if resp is None:
        return
    request_url = resp.geturl()
    with resp:
        length_header = resp.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        total = have + length if length is not None else None
        if expected_size is not None and total is not None and total != expected_size:
            _discard_partial(part)
            raise FetchError(
                src.name, request_url, f"server sends {total} bytes, expected {expected_size}"
            )
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        if validator and validator.startswith("W/"):
            validator = None  # weak ETags are not allowed in If-Range
        _save_meta(src.name, url, part, {"url": url, "validator": validator})
        mode = "ab" if have else "wb"
        received = _stream(src.name, request_url, resp, part, mode, have, total, progress)
    if length is not None and received < length:
        raise FetchError(
            src.name,
            request_url,
            f"truncated transfer: received {have + received} of {total} bytes "
            f"(kept in {part}; rerun to resume)",
        )
    size = have + received
    if expected_size is not None and size != expected_size:
        _discard_partial(part)
        raise FetchError(src.name, request_url, f"got {size} bytes, expected {expected_size}")
    _save_meta(src.name, url, part, {"url": url, "complete": True, "size": size})


def _open(
    src: Source, url: str, part: Path, have: int, meta: dict[str, Any]
) -> tuple[http.client.HTTPResponse | None, int]:
    """Open the transfer, following Drive confirmation pages.

    Returns (response, offset the body starts at); response None means the partial file is
    already complete (the server refused a range starting at its end).
    """
    request_url = _resolve(url)
    is_gdrive = url.startswith("gdrive://")
    for _ in range(MAX_CONFIRM_PAGES + 2):
        try:
            resp = _request(src.name, request_url, have, meta.get("validator"))
        except _RangeNotSatisfiable as e:
            if e.total is not None and e.total == have:
                _save_meta(src.name, url, part, {"url": url, "complete": True, "size": have})
                return None, have  # everything is already here
            log.info("%s: server refused the resume offset; starting over", src.name)
            _discard_partial(part)
            have = 0
            continue
        if resp.headers.get_content_type() == "text/html":
            page = resp.read(MAX_HTML_BYTES)
            resp.close()
            if not is_gdrive:
                raise FetchError(
                    src.name,
                    request_url,
                    "server returned an HTML page instead of the file "
                    "(the link may need a login or has moved)",
                )
            next_url = _gdrive_confirm_url(page, resp.geturl() or request_url)
            if next_url is None:
                raise FetchError(
                    src.name,
                    request_url,
                    "Google Drive returned a page without a download form (quota exceeded, "
                    f"file not shared, or a folder id). {src.manual or ''}".strip(),
                )
            log.info("%s: following the Google Drive confirmation form", src.name)
            request_url = next_url
            continue
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                resp.close()
                _discard_partial(part)
                raise FetchError(
                    src.name,
                    request_url,
                    f"server answered the resume at byte {have} with range start {start}; "
                    "partial file deleted, rerun to download again",
                )
            log.info("%s: resuming at byte %d", src.name, have)
            return resp, have
        if resp.status == 200:
            if have:
                log.info("%s: server ignored the Range request; restarting from 0", src.name)
            return resp, 0
        resp.close()
        raise FetchError(src.name, request_url, f"unexpected HTTP status {resp.status}")
    raise FetchError(src.name, request_url, "too many redirections through confirmation pages")


def _request(name: str, url: str, start: int, validator: str | None) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and start:
                total = _content_range_total(e.headers.get("Content-Range"))
                raise _RangeNotSatisfiable(total) from None
            raise FetchError(name, url, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(name, url, f"connection failed: {reason}") from e


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _content_range_total(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+[^/]+/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _write_chunk(fh: BinaryIO, data: bytes) -> None:
    """Single write seam (tests inject ENOSPC here)."""
    fh.write(data)


def _stream(
    name: str,
    url: str,
    resp: http.client.HTTPResponse,
    part: Path,
    mode: str,
    have: int,
    total: int | None,
    progress: bool,
) -> int:
    received = 0
    bar = tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=not progress,
        leave=False,
    )
    try:
        with open(part, mode) as fh:
            while True:
                try:
                    chunk = resp.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as e:
                    raise FetchError(
                        name,
                        url,
                        f"transfer interrupted after {have + received} bytes ({e!r}); "
                        f"kept in {part}, rerun to resume",
                    ) from e
                if not chunk:
                    break
                _write_chunk(fh, chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as e:
        raise FetchError(name, url, f"cannot write {part}: {e.strerror or e}") from e
    finally:
        bar.close()
    return received


# --------------------------------------------------------------------------- Google Drive
class _FormParser(HTMLParser):
    """Collects forms with their hidden inputs (Drive's 'download anyway' page is one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[dict[str, str], dict[str, str]]] = []
        self._open: tuple[dict[str, str], dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self._open = (a, {})
            self.forms.append(self._open)
        elif (
            tag == "input"
            and self._open is not None
            and a.get("name")
            and a.get("type", "text").lower() == "hidden"
        ):
            self._open[1][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def _gdrive_confirm_url(page: bytes, page_url: str) -> str | None:
    parser = _FormParser()
    parser.feed(page.decode("utf-8", errors="replace"))
    forms = [f for f in parser.forms if f[0].get("action")]
    forms.sort(key=lambda f: f[0].get("id") != "download-form")
    if not forms:
        return None
    attrs, inputs = forms[0]
    action = urllib.parse.urljoin(page_url, attrs["action"])
    if urllib.parse.urlsplit(action).scheme not in ("http", "https"):
        return None
    sep = "&" if urllib.parse.urlsplit(action).query else "?"
    return f"{action}{sep}{urllib.parse.urlencode(inputs)}" if inputs else action


# ------------------------------------------------------------------------------- verify
def _verify(
    src: Source,
    url: str,
    part: Path,
    expected_sha: str | None,
    expected_size: int | None,
    sha_origin: str,
) -> tuple[str, int]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with open(part, "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                sha.update(chunk)
                if src.md5:
                    md5.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise FetchError(src.name, url, f"cannot read {part}: {e}") from e
    digest = sha.hexdigest()
    problems = []
    if expected_size is not None and size != expected_size:
        problems.append(f"size mismatch: expected {expected_size} bytes, got {size}")
    if expected_sha is not None and digest != expected_sha:
        problems.append(f"sha256 mismatch: expected {expected_sha} ({sha_origin}), got {digest}")
    if src.md5 and md5.hexdigest() != src.md5:
        problems.append(f"md5 mismatch: expected {src.md5}, got {md5.hexdigest()}")
    if problems:
        _discard_partial(part)
        raise FetchError(
            src.name, url, "; ".join(problems) + "; download deleted, rerun to download again"
        )
    return digest, size


# ------------------------------------------------------------------------------ install
def _install(src: Source, url: str, part: Path, dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(src.name, url, f"cannot create {dest.parent}: {e}") from e
    for stale in dest.parent.glob(f".{dest.name}.extract-*"):
        log.info("%s: removing %s left by an interrupted extraction", src.name, stale)
        shutil.rmtree(stale, ignore_errors=True)
    if src.archive == "none":
        _move_file(src.name, url, part, dest)
        _discard_partial(part)
        return
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    except OSError as e:
        raise FetchError(src.name, url, f"cannot create a directory in {dest.parent}: {e}") from e
    try:
        _extract(src, url, part, tmp)
        os.replace(tmp, dest)
    except FetchError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(src.name, url, f"extracting into {dest} failed: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _discard_partial(part)


def _move_file(name: str, url: str, part: Path, dest: Path) -> None:
    try:
        os.replace(part, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise FetchError(name, url, f"cannot move {part} to {dest}: {e}") from e
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(part, tmp)
        os.replace(tmp, dest)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FetchError(name, url, f"cannot copy {part} to {dest}: {e}") from e


class _BadArchive(Exception):
    pass


def _extract(src: Source, url: str, archive: Path, out: Path) -> None:
    """Extract into ``out``; an unreadable or unsafe archive deletes the download."""
    try:
        if src.archive == "zip":
            _extract_zip(archive, out)
        else:
            _extract_tar(archive, out, "r:gz" if src.archive == "tar.gz" else "r:")
    except (_BadArchive, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        _discard_partial(archive)
        raise FetchError(src.name, url, f"bad {src.archive} archive: {e}; download deleted") from e


def _check_member(name: str, out: Path) -> None:
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if (
        not posix
        or path.is_absolute()
        or re.match(r"^[A-Za-z]:", posix)
        or ".." in path.parts
        or not (out / path).resolve().is_relative_to(out.resolve())
    ):
        raise _BadArchive(f"unsafe member {name!r} (path traversal)")


def _extract_zip(archive: Path, out: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info.filename, out)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _BadArchive(f"unsafe member {info.filename!r} (symbolic link)")
        zf.extractall(out)


def _extract_tar(archive: Path, out: Path, mode: str) -> None:
    with tarfile.open(archive, mode) as tf:
        for member in tf:
            _check_member(member.name, out)
            if not (member.isfile() or member.isdir()):
                raise _BadArchive(f"unsafe member {member.name!r} (links and devices refused)")
            tf.extract(member, out, filter="data")
