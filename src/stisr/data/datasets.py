"""torch Datasets over the three on-disk formats, all yielding the same sample dict.

Sample: ``{"lr": Tensor(C, 16, 64), "hr": Tensor(C, 32, 128) (TextZoom only), "label": str,
"key": str}`` with C = 4 (RGBM) when ``mask=True`` else 3. ``key`` is the 9-digit record number
(``"000000012"``) for LMDBs and the gt.txt path for folders. Labels are raw: normalizing them
(``charset.normalize_label``) is the caller's choice.

Bad records (undecodable image, missing record, non-utf-8 label, unreadable file):
* ``on_error="raise"`` (default): the exception propagates, naming the LMDB path and key.
* ``on_error="skip"``: the sample at the next index (wrapping around) that loads is returned
  instead, like the TextZoom loader's ``self[index + 1]``, so a given index always maps to the
  same sample. Distinct bad indices are counted in ``.skipped`` (and listed in ``.bad_keys``);
  with DataLoader workers each worker keeps its own count. If no record loads, the last
  error is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from stisr.data.folder_io import GT_FILE, read_gt_folder
from stisr.data.images import ImageDecodeError, decode_image
from stisr.data.lmdb_io import LmdbFormatError, LmdbReader, is_lmdb_dir
from stisr.data.transforms import to_tensor

__all__ = [
    "FolderDataset",
    "SampleDataset",
    "StrLmdbDataset",
    "TextZoomDataset",
    "collate",
    "open_dataset",
]

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
Sample = dict[str, Any]
# What counts as a bad record; anything else (a bug, KeyboardInterrupt) always propagates.
BAD_RECORD_ERRORS: tuple[type[BaseException], ...] = (ImageDecodeError, LmdbFormatError, OSError)


class SampleDataset(Dataset):
    """Shared size/mask/filter/error handling; subclasses implement ``_raw_len`` and ``_load``."""

    def __init__(
        self,
        *,
        mask: bool = True,
        lr_size: tuple[int, int] = (64, 16),
        hr_size: tuple[int, int] = (128, 32),
        max_label_len: int | None = None,
        on_error: OnError = "raise",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        for name, size in (("lr_size", lr_size), ("hr_size", hr_size)):
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"{name} must be a positive (width, height), got {size!r}")
        if max_label_len is not None and max_label_len < 0:
            raise ValueError(f"max_label_len must be >= 0, got {max_label_len}")
        self.mask = mask
        self.lr_size = (int(lr_size[0]), int(lr_size[1]))
        self.hr_size = (int(hr_size[0]), int(hr_size[1]))
        self.max_label_len = max_label_len
        self.on_error = on_error
        self.bad_keys: set[str] = set()
        self._bad_index: set[int] = set()
        self._indices: list[int] | None = None  # raw indices kept by the label-length filter

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
        """Drop records whose raw label is longer than ``max_label_len`` (labels read once)."""
        if self.max_label_len is None:
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
            if len(label) <= self.max_label_len:
                kept.append(raw)
        self._indices = kept

    @property
    def skipped(self) -> int:
        """Number of distinct bad records skipped so far (``on_error="skip"``)."""
        return len(self._bad_index)

    def __len__(self) -> int:
        return self._raw_len() if self._indices is None else len(self._indices)

    def _raw(self, index: int) -> int:
        return index if self._indices is None else self._indices[index]

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {self!r} ({n} samples)")
        if self.on_error == "raise":
            return self._load(self._raw(index))
        last: BaseException | None = None
        for step in range(n):
            pos = (index + step) % n
            if pos in self._bad_index:
                continue
            raw = self._raw(pos)
            try:
                return self._load(raw)
            except BAD_RECORD_ERRORS as exc:
                last = exc
                self._bad_index.add(pos)
                self.bad_keys.add(self._raw_key(raw))
                log.warning("skipping bad record: %s", exc)
        if last is None:
            raise LmdbFormatError(str(self), None, "every record is bad")
        raise last

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


def open_dataset(root: Path | str, **kw: Any) -> SampleDataset:
    """Pick the dataset class from what is on disk: an LMDB's keys, or a folder's gt.txt."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset not found: {root}")
    if is_lmdb_dir(root):
        with LmdbReader(root) as reader:
            fmt = reader.format
        if fmt is None:
            raise LmdbFormatError(root, None, "no image_hr-/image_lr-/image- records to detect")
        return _BY_FORMAT[fmt](root, **kw)
    if (root / GT_FILE).is_file():
        return FolderDataset(root, **kw)
    raise ValueError(f"{root}: neither an LMDB directory (data.mdb) nor a folder with {GT_FILE}")
