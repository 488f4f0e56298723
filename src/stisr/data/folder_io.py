"""Image folders labelled by a ``gt.txt`` (``relative/path<TAB>label`` per line).

Some benchmarks (KD-LTR folders, user-provided crops) ship as plain files; this is their one
reader and writer. Labels may contain spaces, so the separator is the first TAB only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from stisr.atomic_io import replace_dir
from stisr.data.images import encode_png

__all__ = ["GT_FILE", "read_gt_folder", "write_gt_folder"]

GT_FILE = "gt.txt"


def read_gt_folder(root: Path) -> list[tuple[Path, str]]:
    """(absolute image path, raw label) per non-blank line of ``root/gt.txt``, in file order.

    Raises FileNotFoundError for a missing folder, gt.txt or image, and ValueError naming the
    file and 1-based line number for a line without a TAB, an empty path, or a path that leaves
    ``root``.
    """
    root = Path(root)
    gt = root / GT_FILE
    if not root.is_dir():
        raise FileNotFoundError(f"gt folder not found: {root}")
    if not gt.is_file():
        raise FileNotFoundError(f"no {GT_FILE} in {root}")
    try:
        text = gt.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{gt}: not utf-8 ({exc})") from exc
    base = root.resolve()
    out: list[tuple[Path, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rel, sep, label = line.partition("\t")
        rel = rel.strip()
        if not sep or not rel:
            raise ValueError(f"{gt}:{lineno}: expected 'relative/path<TAB>label', got {line!r}")
        path = (root / rel).resolve()
        if Path(rel).is_absolute() or not path.is_relative_to(base):
            raise ValueError(f"{gt}:{lineno}: image path {rel!r} is outside {root}")
        if not path.is_file():
            raise FileNotFoundError(f"{gt}:{lineno}: image not found: {path}")
        out.append((path, label))
    return out


def write_gt_folder(root: Path, samples: Iterable[tuple[Image.Image, str]]) -> int:
    """Write ``images/%09d.png`` + ``gt.txt`` atomically (temp sibling, then rename).

    An existing ``root`` is replaced only after every sample was written. Labels must not
    contain TAB or newline characters, which the format cannot represent.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    count = 0
    try:
        (tmp / "images").mkdir()
        lines: list[str] = []
        for count, (img, label) in enumerate(samples, start=1):
            if not isinstance(label, str) or any(c in label for c in "\t\r\n"):
                raise ValueError(f"{root}: label of sample {count} is not one-line text: {label!r}")
            rel = f"images/{count:09d}.png"
            (tmp / rel).write_bytes(encode_png(img))
            lines.append(f"{rel}\t{label}\n")
        (tmp / GT_FILE).write_text("".join(lines), encoding="utf-8")
        os.chmod(tmp, 0o755)
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count
