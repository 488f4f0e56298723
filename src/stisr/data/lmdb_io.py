"""Read and write LMDBs in the official TextZoom and STR-benchmark layouts.

Layouts (keys 1-based, values bytes):
* ``textzoom``: ``image_hr-%09d``, ``image_lr-%09d``, ``label-%09d``, ``num-samples``.
* ``str``: ``image-%09d``, ``label-%09d``, ``num-samples``.

Readers never write: they open with ``readonly=True, lock=False`` so a DVC-tracked folder stays
byte-identical (no ``lock.mdb``). Writers are atomic (temp sibling directory, then rename) and
leave only ``data.mdb`` behind, whose content depends on the samples alone.

Every read failure is an :class:`LmdbFormatError` naming the folder and key, including a file
that is not an LMDB and a truncated ``data.mdb`` (refused at open: LMDB would SIGBUS on it).
LMDB keeps no page checksums, so bytes flipped inside a structurally valid file can still crash
the reader; the sha256 pins of ``fetch`` and DVC's hashes are the check for that.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lmdb
from PIL import Image

from stisr.atomic_io import replace_dir
from stisr.data.images import decode_image, encode_png

__all__ = [
    "LmdbFormatError",
    "LmdbReader",
    "is_lmdb_dir",
    "write_str_lmdb",
    "write_textzoom_lmdb",
]

NUM_SAMPLES_KEY = "num-samples"
_INITIAL_MAP_SIZE = 64 << 20
_MAX_MAP_SIZE = 1 << 40
_BATCH = 512  # records per write transaction; a MapFullError retries one batch only
_INT_RE = re.compile(rb"\s*\d+\s*")
_KINDS = {"hr": "image_hr", "lr": "image_lr", "image_hr": "image_hr", "image_lr": "image_lr"}
_KINDS.update({"image": "image", "label": "label"})


class LmdbFormatError(ValueError):
    """The LMDB at ``path`` is missing or has a malformed record ``key``."""

    def __init__(self, path: Path | str, key: str | None, reason: str) -> None:
        self.path = str(path)
        self.key = key
        where = f"{path}:{key}" if key else str(path)
        super().__init__(f"bad LMDB record {where}: {reason}")


def record_key(prefix: str, index: int) -> str:
    """Key of 1-based record ``index`` (``image_hr-000000001``)."""
    return f"{prefix}-{index:09d}"


def is_lmdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


# --------------------------------------------------------------------------------------------
# Writing


def _write_lmdb(path: Path, records: Iterator[list[tuple[bytes, bytes]]]) -> int:
    """Write groups of (key, value) records atomically; each group is one sample."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    count = 0
    try:
        map_size = _INITIAL_MAP_SIZE
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True, meminit=True, sync=False)
        try:
            batch: list[tuple[bytes, bytes]] = []

            def flush() -> None:
                nonlocal map_size
                while True:
                    try:
                        with env.begin(write=True) as txn:
                            for key, value in batch:
                                txn.put(key, value)
                        return
                    except lmdb.MapFullError:
                        if map_size >= _MAX_MAP_SIZE:
                            raise
                        map_size *= 2
                        env.set_mapsize(map_size)

            for group in records:
                batch.extend(group)
                count += 1
                if count % _BATCH == 0:
                    flush()
                    batch = []
            batch.append((NUM_SAMPLES_KEY.encode(), str(count).encode("ascii")))
            flush()
            env.sync(True)
        finally:
            env.close()
        lock = tmp / "lock.mdb"
        if lock.exists():
            lock.unlink()  # holds pids/reader slots: never part of the dataset
        os.chmod(tmp, 0o755)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def write_textzoom_lmdb(path: Path, samples: Iterable[tuple[Image.Image, Image.Image, str]]) -> int:
    """Write (hr, lr, label) samples in the TextZoom layout (PNG values); returns the count."""

    def records() -> Iterator[list[tuple[bytes, bytes]]]:
        for i, (hr, lr, label) in enumerate(samples, start=1):
            yield [
                (record_key("image_hr", i).encode(), encode_png(hr)),
                (record_key("image_lr", i).encode(), encode_png(lr)),
                (record_key("label", i).encode(), _label_bytes(label, path, i)),
            ]

    return _write_lmdb(path, records())


def write_str_lmdb(path: Path, samples: Iterable[tuple[Image.Image, str]]) -> int:
    """Write (image, label) samples in the STR-benchmark layout (PNG values); returns the count."""

    def records() -> Iterator[list[tuple[bytes, bytes]]]:
        for i, (img, label) in enumerate(samples, start=1):
            yield [
                (record_key("image", i).encode(), encode_png(img)),
                (record_key("label", i).encode(), _label_bytes(label, path, i)),
            ]

    return _write_lmdb(path, records())


def _label_bytes(label: str, path: Path, index: int) -> bytes:
    if not isinstance(label, str):
        raise TypeError(f"{path}: label of sample {index} must be str, got {type(label).__name__}")
    return label.encode("utf-8")


# --------------------------------------------------------------------------------------------
# Reading


# py-lmdb refuses to open the same files twice in one process, and its guard survives fork(), so
# a DataLoader worker cannot reopen what its parent opened. Readers therefore share one refcounted
# environment per data file (keyed by device and inode, so a rewritten LMDB is a new entry), and a
# forked child reuses the inherited one: read-only and lock-free, it only maps the file and reads
# meta pages, as the TextZoom loaders do in their workers. A child never closes an inherited env.
_ENVS: dict[tuple[int, int], list[Any]] = {}  # key -> [env, refcount, pid that opened it]


def _acquire_env(path: Path) -> Any:
    try:
        st = os.stat(path / "data.mdb")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"LMDB not found: {path}") from exc
    key = (st.st_dev, st.st_ino)
    entry = _ENVS.get(key)
    if entry is None:
        try:
            env = lmdb.open(
                str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=True
            )
        except lmdb.Error as exc:
            raise LmdbFormatError(path, None, f"cannot open as LMDB: {exc}") from exc
        try:
            _check_not_truncated(env, path, st.st_size)
        except BaseException:
            env.close()
            raise
        entry = _ENVS[key] = [env, 0, os.getpid()]
    entry[1] += 1
    return entry[0]


def _check_not_truncated(env: Any, path: Path, file_size: int) -> None:
    """Refuse a data.mdb shorter than its header says (an interrupted copy or checkout).

    LMDB maps the file and trusts its header: reading a page past the end of a truncated file
    kills the process with SIGBUS instead of raising, so the size is checked once, here.
    """
    try:
        need = (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])
    except lmdb.Error as exc:
        raise LmdbFormatError(path, None, f"cannot read the LMDB header: {exc}") from exc
    if file_size < need:
        raise LmdbFormatError(
            path, None, f"data.mdb is truncated: {file_size} bytes, its header needs {need}"
        )


def _release_env(env: Any) -> None:
    for key, entry in list(_ENVS.items()):
        if entry[0] is env:
            entry[1] -= 1
            if entry[1] <= 0:
                del _ENVS[key]
                if entry[2] == os.getpid():
                    env.close()
            return


class LmdbReader:
    """Read-only access to one LMDB directory; safe to pickle into DataLoader workers.

    The environment is opened lazily and reopened after a fork/unpickle (LMDB handles must not
    cross processes). Index helpers (``label(i)``, ``image(kind, i)``) take 0-based ``i`` like
    ``len()``; the on-disk key is ``i + 1``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"LMDB not found: {self.path}")
        if not is_lmdb_dir(self.path):
            raise LmdbFormatError(self.path, None, "not an LMDB directory (no data.mdb)")
        self._env: Any = None
        self._pid: int | None = None
        self._len: int | None = None
        self._format: str | None | bool = False  # False = not detected yet

    # -- process-local environment --------------------------------------------------------
    def _open(self) -> Any:
        if self._env is None or self._pid != os.getpid():
            self._env = _acquire_env(self.path)
            self._pid = os.getpid()
        return self._env

    def close(self) -> None:
        if self._env is not None and self._pid == os.getpid():
            _release_env(self._env)
        self._env = None
        self._pid = None

    def __del__(self) -> None:
        try:  # noqa: SIM105 - no contextlib lookups during interpreter shutdown
            self.close()
        except Exception:  # interpreter shutdown: module globals may already be gone
            pass

    def __enter__(self) -> LmdbReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- raw access -------------------------------------------------------------------------
    def get_optional(self, key: str) -> bytes | None:
        try:
            with self._open().begin(write=False, buffers=False) as txn:
                value = txn.get(key.encode())
        except lmdb.Error as exc:
            raise LmdbFormatError(self.path, key, f"read failed: {exc}") from exc
        return None if value is None else bytes(value)

    def get(self, key: str) -> bytes:
        """Value of ``key``; a missing key is a format error naming path and key."""
        value = self.get_optional(key)
        if value is None:
            raise LmdbFormatError(self.path, key, "missing record")
        return value

    def has_prefix(self, prefix: str) -> bool:
        """Whether any key starts with ``prefix`` (one B-tree seek, not a scan)."""
        needle = prefix.encode()
        try:
            with self._open().begin(write=False) as txn, txn.cursor() as cur:
                return cur.set_range(needle) and bytes(cur.key()).startswith(needle)
        except lmdb.Error as exc:
            raise LmdbFormatError(self.path, prefix, f"read failed: {exc}") from exc

    # -- layout -----------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._len is None:
            raw = self.get(NUM_SAMPLES_KEY)
            if not _INT_RE.fullmatch(raw):
                raise LmdbFormatError(
                    self.path, NUM_SAMPLES_KEY, f"not a non-negative integer: {raw[:40]!r}"
                )
            n = int(raw)
            entries = self._entries()
            if n > entries:  # each sample needs >= 2 records: a bogus count, not a big set
                raise LmdbFormatError(
                    self.path, NUM_SAMPLES_KEY, f"{n} exceeds the {entries} records stored"
                )
            self._len = n
        return self._len

    def _entries(self) -> int:
        try:
            return int(self._open().stat()["entries"])
        except lmdb.Error as exc:
            raise LmdbFormatError(self.path, None, f"cannot stat: {exc}") from exc

    @property
    def format(self) -> str | None:
        """``"textzoom"``, ``"str"``, or None when the LMDB holds no image records at all."""
        if self._format is False:
            if self.has_prefix("image_hr-") or self.has_prefix("image_lr-"):
                self._format = "textzoom"
            elif self.has_prefix("image-"):
                self._format = "str"
            else:
                self._format = None
        return self._format  # type: ignore[return-value]

    def key(self, kind: str, i: int) -> str:
        """On-disk key of 0-based sample ``i``; ``kind`` is hr, lr, image or label."""
        prefix = _KINDS.get(kind)
        if prefix is None:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(_KINDS)}")
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {self.path} ({n} samples)")
        return record_key(prefix, i + 1)

    def label(self, i: int) -> str:
        key = self.key("label", i)
        raw = self.get(key)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LmdbFormatError(self.path, key, f"label is not utf-8: {exc}") from exc

    def image(self, kind: str, i: int) -> Image.Image:
        """Decoded RGB image; raises ImageDecodeError naming ``<path>:<key>``."""
        key = self.key(kind, i)
        return decode_image(self.get(key), where=f"{self.path}:{key}")

    def __repr__(self) -> str:
        return f"LmdbReader({str(self.path)!r})"
