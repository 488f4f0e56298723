"""A resumable, checksummed, atomic downloader for the entries of the source registry.

Why this shape: the original repositories link their data through Google Drive, Dropbox and
release pages with no checksums, and users lose hours to half-written folders and silently
corrupt downloads. Here nothing is ever half-written at ``<root>/<dest>``:

* bytes go to ``<partial_dir>/<name>.part`` (plus a ``.part.json`` note of the URL), and an
  interrupted transfer resumes there with an HTTP Range request on the next run (``stisr fetch``
  stages in ``.downloads/`` at the repository root, so nothing partial is ever under ``data/``;
  the library default is ``<root>/.partial``); the transfer itself is :mod:`stisr.data.transfer`;
* the file is checked against the registry's size / sha256 / md5, or, when the registry has no
  sha256, against the one pinned in ``<root>/checksums.json`` by an earlier download; a first
  download pins its sha256 and size there, so every later download is verified;
* archives are extracted into a temporary sibling of the destination (members that would land
  outside it are rejected) and renamed into place in one step.

A checksum mismatch deletes the partial file; other failures keep it so the rerun resumes.
Every failure raises :class:`FetchError` naming the source, the URL and the reason. The registry
itself (``sources.yaml``) is :mod:`stisr.data.source_registry`, which imports none of this.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from stisr.atomic_io import atomic_path, atomic_write_text, replace_dir
from stisr.data.source_registry import PARTIAL_DIR, PIN_FILE_NAME, Source, load_sources
from stisr.data.transfer import CHUNK_BYTES, FetchError, discard_partial, download, read_meta

__all__ = ["FetchError", "fetch", "read_pins"]

log = logging.getLogger("stisr.data.fetch")


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
    started = read_meta(part).get("url")
    urls = tuple(sorted(urls, key=lambda u: u != started))

    errors: list[FetchError] = []
    for i, url in enumerate(urls):
        try:
            download(src, url, part, expected_size, progress)
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
            atomic_write_text(pin_path, json.dumps(pins, indent=2, sort_keys=True) + "\n")
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
        discard_partial(part)
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
        discard_partial(part)
        return
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    except OSError as e:
        raise FetchError(src.name, url, f"cannot create a directory in {dest.parent}: {e}") from e
    try:
        _extract(src, url, part, tmp)
        replace_dir(tmp, dest)
    except FetchError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(src.name, url, f"extracting into {dest} failed: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    discard_partial(part)


def _move_file(name: str, url: str, part: Path, dest: Path) -> None:
    try:
        # The verified .part file is itself the staged copy: renaming it is the atomic step.
        os.replace(part, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise FetchError(name, url, f"cannot move {part} to {dest}: {e}") from e
    try:  # another filesystem: copy beside dest, then rename
        with atomic_path(dest) as tmp:
            shutil.copyfile(part, tmp)
    except OSError as e:
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
        discard_partial(archive)
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
