"""Resumable transfer of one URL into a staging file ``<partial_dir>/<name>.part``.

Why a module of its own: this is the network half of :mod:`stisr.data.fetch` (HTTP Range /
If-Range resumption, Google Drive confirmation pages, the progress bar), kept apart from the
checking and installing so that each stays readable. Nothing here touches the destination.

Bytes go to ``<name>.part`` plus a ``.part.json`` note of the URL (and the server's ETag or
Last-Modified), and an interrupted transfer resumes there with a Range request on the next run;
a partial file from another URL, or one the server will not resume, is started over. Every
failure raises :class:`FetchError` naming the source, the URL and the reason.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from stisr.atomic_io import atomic_write_text
from stisr.data.source_registry import Source, gdrive_download_url

__all__ = ["FetchError", "discard_partial", "download", "read_meta"]

# The downloader's one logger (shared with stisr.data.fetch, so callers filter on one name).
log = logging.getLogger("stisr.data.fetch")

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "stisr-fetch/0.1 (python urllib)"
MAX_CONFIRM_PAGES = 3  # Google Drive "virus scan warning" pages followed before giving up
MAX_HTML_BYTES = 1 << 20


class FetchError(RuntimeError):
    """A source could not be fetched; carries the source name, the URL and the reason."""

    def __init__(self, source: str, url: str | None, reason: str) -> None:
        self.source = source
        self.url = url
        self.reason = reason
        where = f" (url: {url})" if url else ""
        super().__init__(f"fetch {source!r}: {reason}{where}")


def _resolve(url: str) -> str:
    if url.startswith("gdrive://"):
        return gdrive_download_url(url.removeprefix("gdrive://"))
    return url


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None) -> None:
        self.total = total


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def read_meta(part: Path) -> dict[str, Any]:
    try:
        meta = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _save_meta(name: str, url: str, part: Path, meta: dict[str, Any]) -> None:
    try:
        atomic_write_text(_meta_path(part), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise FetchError(name, url, f"cannot write {_meta_path(part)}: {e}") from e


def discard_partial(part: Path) -> None:
    for p in (part, _meta_path(part)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def download(src: Source, url: str, part: Path, expected_size: int | None, progress: bool) -> None:
    """Bring ``part`` to the complete file, resuming what an earlier run left there."""
    meta = read_meta(part)
    if part.exists() and meta.get("url") != url:
        log.info("%s: partial file came from another URL; starting over", src.name)
        discard_partial(part)
        meta = {}
    have = part.stat().st_size if part.exists() else 0
    if meta.get("complete") and meta.get("size") == have:
        log.info("%s: %s already downloaded", src.name, part)
        return
    if expected_size is not None and have > expected_size:
        discard_partial(part)
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
            discard_partial(part)
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
        discard_partial(part)
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
            discard_partial(part)
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
                discard_partial(part)
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
