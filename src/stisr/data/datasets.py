"""torch Datasets over the three on-disk formats, all yielding the same sample dict.

Sample: ``{"lr": Tensor(C, 16, 64), "hr": Tensor(C, 32, 128) (TextZoom only), "label": str,
"key": str}`` with C = 4 (RGBM) when ``mask=True`` else 3. ``key`` is the 9-digit record number
(``"000000012"``) for LMDBs and the gt.txt path for folders. Labels are raw: normalizing them
(``charset.normalize_label``) is the caller's choice.

Bad records (undecodable image, missing record, non-utf-8 label, unreadable file):
* ``on_error="raise"`` (default): the exception propagates, naming the LMDB path and key.
* ``on_error="skip"`` (training): the sample at the next index (wrapping around) that loads is
  returned instead, like the TextZoom loader's ``self[index + 1]``, so a given index always maps
  to the same sample and batches keep their size. If no record loads, the last error is raised.
* ``on_error="drop"`` (evaluation): ``None`` is returned and ``collate_kept`` leaves it out, so a
  bad record is never replaced by (and counted as) another one.
Distinct bad indices are counted in ``.skipped`` (and listed in ``.bad_keys``); with DataLoader
workers each worker keeps its own count.

Labels outside a recognizer's alphabet (``label_charset``): characters outside it are removed by
the recognizer's own loss (lower-casing first for a lower-case alphabet, the papers' ``str_filt``);
a sample left with no character at all would train towards an empty word, so it is dropped when
the dataset is opened, counted in ``.dropped_labels`` (its keys) and logged, as PARSeq's loader
does. ``.filtered_labels`` counts the kept labels that lose characters.

Empty sets: ``open_dataset`` raises :class:`EmptyDatasetError` naming the folder, unless
``allow_empty=True`` (evaluation, where e.g. no benchmark image is small enough at a scale).
A missing folder raises :class:`DatasetNotFoundError` saying which command produces it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from stisr.charset import Charset
from stisr.data.folder_io import GT_FILE, read_gt_folder
from stisr.data.images import ImageDecodeError, decode_image
from stisr.data.lmdb_io import LmdbFormatError, LmdbReader, is_lmdb_dir
from stisr.data.missing import how_to_make
from stisr.data.sample_cache import SampleCache
from stisr.data.transforms import to_tensor

__all__ = [
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "FolderDataset",
    "SampleDataset",
    "StrLmdbDataset",
    "TextZoomDataset",
    "collate",
    "collate_kept",
    "open_dataset",
]

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip", "drop"]
Sample = dict[str, Any]
# What counts as a bad record; anything else (a bug, KeyboardInterrupt) always propagates.
BAD_RECORD_ERRORS: tuple[type[BaseException], ...] = (ImageDecodeError, LmdbFormatError, OSError)


class DatasetNotFoundError(FileNotFoundError):
    """A train or test folder is missing; the message names it and the command that makes it."""


class EmptyDatasetError(ValueError):
    """A dataset folder holds no usable sample; the message names the folder."""


class SampleDataset(Dataset):
    """Shared size/mask/filter/error handling; subclasses implement ``_raw_len`` and ``_load``."""

    def __init__(
        self,
        *,
        mask: bool = True,
        lr_size: tuple[int, int] = (64, 16),
        hr_size: tuple[int, int] = (128, 32),
        max_label_len: int | None = None,
        label_charset: str | None = None,
        on_error: OnError = "raise",
        cache_mb: float = 0,
    ) -> None:
        if on_error not in ("raise", "skip", "drop"):
            raise ValueError(f"on_error must be 'raise', 'skip' or 'drop', got {on_error!r}")
        for name, size in (("lr_size", lr_size), ("hr_size", hr_size)):
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"{name} must be a positive (width, height), got {size!r}")
        if max_label_len is not None and max_label_len < 0:
            raise ValueError(f"max_label_len must be >= 0, got {max_label_len}")
        self.mask = mask
        self.lr_size = (int(lr_size[0]), int(lr_size[1]))
        self.hr_size = (int(hr_size[0]), int(hr_size[1]))
        self.max_label_len = max_label_len
        self.charset = Charset(label_charset) if label_charset is not None else None
        self.on_error = on_error
        self.bad_keys: set[str] = set()
        self.dropped_labels: list[str] = []  # keys of samples with no character of the charset
        self.filtered_labels = 0  # kept labels that lose characters outside the charset
        self._bad_index: set[int] = set()
        self._indices: list[int] | None = None  # raw indices kept by the label filters
        self._cache = SampleCache(int(cache_mb * 2**20)) if cache_mb > 0 else None

    # -- subclass hooks -----------------------------------------------------------------------
    def _raw_len(self) -> int:
        raise NotImplementedError

    def _raw_label(self, raw: int) -> str:
        raise NotImplementedError

    def _raw_key(self, raw: int) -> str:
        raise NotImplementedError

    def _load(self, raw: int) -> Sample:
        raise NotImplementedError

    # -- shared logic -------------------------------------------------------------------------
    def _apply_label_filter(self) -> None:
        """Drop records whose raw label is longer than ``max_label_len`` or keeps no character
        of ``label_charset`` (labels are read once, at open)."""
        if self.max_label_len is None and self.charset is None:
            return
        kept: list[int] = []
        for raw in range(self._raw_len()):
            try:
                label = self._raw_label(raw)
            except BAD_RECORD_ERRORS:
                if self.on_error == "raise":
                    raise
                kept.append(raw)  # reported (and skipped) when loaded
                continue
            if self.max_label_len is not None and len(label) > self.max_label_len:
                continue
            if self.charset is not None:
                usable = self.charset.filter(label)
                if not usable:
                    self.dropped_labels.append(self._raw_key(raw))
                    continue
                self.filtered_labels += len(usable) < len(label)
            kept.append(raw)
        self._indices = kept
        if self.dropped_labels:
            log.warning(
                "%r: dropped %d of %d samples whose label has no character of %r (first: %s)",
                self, len(self.dropped_labels), self._raw_len(), self.charset.chars,
                self.dropped_labels[0],
            )  # fmt: skip

    @property
    def skipped(self) -> int:
        """Number of distinct bad records skipped so far (``on_error="skip"``)."""
        return len(self._bad_index)

    def __len__(self) -> int:
        return self._raw_len() if self._indices is None else len(self._indices)

    def _raw(self, index: int) -> int:
        return index if self._indices is None else self._indices[index]

    def __getitem__(self, index: int) -> Sample | None:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {self!r} ({n} samples)")
        if self.on_error == "raise":
            return self._fetch(self._raw(index))
        if self.on_error == "drop":
            raw = self._raw(index)
            try:
                return self._fetch(raw)
            except BAD_RECORD_ERRORS as exc:
                self._bad_index.add(index)
                self.bad_keys.add(self._raw_key(raw))
                log.warning("dropping bad record: %s", exc)
                return None
        last: BaseException | None = None
        for step in range(n):
            pos = (index + step) % n
            if pos in self._bad_index:
                continue
            raw = self._raw(pos)
            try:
                return self._fetch(raw)
            except BAD_RECORD_ERRORS as exc:
                last = exc
                self._bad_index.add(pos)
                self.bad_keys.add(self._raw_key(raw))
                log.warning("skipping bad record: %s", exc)
        if last is None:
            raise LmdbFormatError(str(self), None, "every record is bad")
        raise last

    def _fetch(self, raw: int) -> Sample:
        """`_load`, through the in-memory cache when the dataset was opened with one."""
        if self._cache is None:
            return self._load(raw)
        sample = self._cache.get(raw)
        if sample is None:
            sample = self._load(raw)
            self._cache.put(raw, sample)
        return sample

    def _tensor(self, img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        return to_tensor(img, size, self.mask)


class _LmdbDataset(SampleDataset):
    expected_format: str = ""

    def __init__(self, root: Path | str, **kw: Any) -> None:
        super().__init__(**kw)
        self.root = Path(root)
        self.reader = LmdbReader(self.root)
        fmt = self.reader.format
        if fmt is not None and fmt != self.expected_format:
            raise LmdbFormatError(
                self.root, None, f"is a {fmt!r} LMDB, expected {self.expected_format!r}"
            )
        len(self.reader)  # validates num-samples now rather than in a worker
        self._apply_label_filter()

    def _raw_len(self) -> int:
        return len(self.reader)

    def _raw_label(self, raw: int) -> str:
        return self.reader.label(raw)

    def _raw_key(self, raw: int) -> str:
        return f"{raw + 1:09d}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class TextZoomDataset(_LmdbDataset):
    """TextZoom-layout LMDB (``image_hr``/``image_lr``/``label``): samples have lr and hr."""

    expected_format = "textzoom"

    def _load(self, raw: int) -> Sample:
        label = self.reader.label(raw)
        hr = self.reader.image("hr", raw)
        lr = self.reader.image("lr", raw)
        return {
            "lr": self._tensor(lr, self.lr_size),
            "hr": self._tensor(hr, self.hr_size),
            "label": label,
            "key": self._raw_key(raw),
        }


class StrLmdbDataset(_LmdbDataset):
    """STR-benchmark LMDB (``image``/``label``): the single image is the STISR input ``lr``."""

    expected_format = "str"

    def _load(self, raw: int) -> Sample:
        label = self.reader.label(raw)
        img = self.reader.image("image", raw)
        return {"lr": self._tensor(img, self.lr_size), "label": label, "key": self._raw_key(raw)}


class FolderDataset(SampleDataset):
    """A ``gt.txt`` image folder (see folder_io): each image is the STISR input ``lr``."""

    def __init__(self, root: Path | str, **kw: Any) -> None:
        super().__init__(**kw)
        self.root = Path(root)
        self.items = read_gt_folder(self.root)
        self._keys = [p.relative_to(self.root.resolve()).as_posix() for p, _ in self.items]
        self._apply_label_filter()

    def _raw_len(self) -> int:
        return len(self.items)

    def _raw_label(self, raw: int) -> str:
        return self.items[raw][1]

    def _raw_key(self, raw: int) -> str:
        return self._keys[raw]

    def _load(self, raw: int) -> Sample:
        path, label = self.items[raw]
        img = decode_image(path.read_bytes(), where=str(path))
        return {"lr": self._tensor(img, self.lr_size), "label": label, "key": self._keys[raw]}

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r})"


def collate_kept(samples: Sequence[Sample | None]) -> dict[str, Any] | None:
    """``collate`` the samples that loaded (``on_error="drop"``); None when none did."""
    kept = [s for s in samples if s is not None]
    return collate(kept) if kept else None


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack ``lr``/``hr`` into batches, keep ``label``/``key`` as lists.

    ``hr`` is present only when every sample has one (STR and folder sets have none).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {
        "lr": torch.stack([s["lr"] for s in samples]),
        "label": [s["label"] for s in samples],
        "key": [s.get("key", "") for s in samples],
    }
    if all("hr" in s for s in samples):
        batch["hr"] = torch.stack([s["hr"] for s in samples])
    elif any("hr" in s for s in samples):
        raise ValueError("cannot collate a batch where only some samples have 'hr'")
    return batch


_BY_FORMAT: dict[str, Callable[..., SampleDataset]] = {
    "textzoom": TextZoomDataset,
    "str": StrLmdbDataset,
}


class _EmptyLmdbDataset(_LmdbDataset):
    """An LMDB written with no sample (``num-samples`` 0): a valid set of size 0."""

    def _load(self, raw: int) -> Sample:
        raise IndexError(f"{self.root} has no samples")


def open_dataset(root: Path | str, *, allow_empty: bool = False, **kw: Any) -> SampleDataset:
    """Pick the dataset class from what is on disk: an LMDB's keys, or a folder's gt.txt.

    A set with no sample left (none written, or all removed by the label filters) raises
    EmptyDatasetError unless ``allow_empty``; ``kw`` go to the dataset class.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetNotFoundError(f"dataset not found: {root}; {how_to_make(root)}")
    if is_lmdb_dir(root):
        with LmdbReader(root) as reader:
            fmt = reader.format
            if fmt is None and len(reader) > 0:
                raise LmdbFormatError(root, None, "no image_hr-/image_lr-/image- records")
        ds = _BY_FORMAT[fmt](root, **kw) if fmt is not None else _EmptyLmdbDataset(root, **kw)
    elif (root / GT_FILE).is_file():
        ds = FolderDataset(root, **kw)
    else:
        raise ValueError(
            f"{root}: neither an LMDB directory (data.mdb) nor a folder with {GT_FILE}; "
            f"{how_to_make(root)}"
        )
    if len(ds) == 0 and not allow_empty:
        raise EmptyDatasetError(f"dataset {root} has no samples{_why_empty(ds)}")
    return ds


def _why_empty(ds: SampleDataset) -> str:
    if ds._raw_len() == 0:
        return ""
    return f" left after the label filters (of {ds._raw_len()}; see max_label_len, label_charset)"
