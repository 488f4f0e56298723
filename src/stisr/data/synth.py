"""Deterministic synthetic data shaped like TextZoom and the STR benchmarks (the `embedded` source).

Nothing is downloaded: words come from ``wordfreq``, fonts from the TTFs matplotlib ships, and the
LR side from the ``camera`` pipeline of :mod:`stisr.data.degrade`. Every random choice of sample
``i`` of split ``s`` is drawn from ``default_rng([seed, crc32(s), i])``, so a seed fixes every
byte of every LMDB value, and a split's samples do not depend on the sizes of the other splits.

Difficulty (easy < medium < hard) comes from both sides, as in TextZoom, where the HR images of the
hard subset are themselves harder to read: rendering (contrast, clutter, distortion, fonts, HR
blur) and the LR camera ``strength``. The ranges in ``TEXTZOOM_PROFILES`` were calibrated with
``benchmarks/calibrate_embedded.py`` against TSRN Table 1 (ASTER LR 62.4/42.7/31.6 %, HR
94.2/87.7/76.2 %), using PP-OCRv4 as an independent judge; it measured LR 58.0/43.3/30.7 % and
HR 97.3/90.0/78.0 % (150 pairs per subset, seed 20201; LR bicubic-upsampled to 128x32).

Modules: :mod:`stisr.data.synth_words` (what the text says), :mod:`stisr.data.synth_render` (fonts
and drawing, ``Style``), and this one (the calibrated split profiles, per-sample seeding, LMDBs).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from stisr.data.degrade import camera
from stisr.data.synth_render import Style, font_paths, render_text, sample_range
from stisr.data.synth_words import sample_text, word_list

__all__ = [
    "HR_SIZE",
    "LR_SIZE",
    "STR_STYLES",
    "TEXTZOOM_PROFILES",
    "TEXTZOOM_SPLITS",
    "Style",
    "font_paths",
    "iter_str_set",
    "iter_textzoom",
    "make_str_sets",
    "make_textzoom",
    "render_text",
    "sample_text",
    "word_list",
]

logger = logging.getLogger("stisr.data.synth")

HR_SIZE = (128, 32)  # (width, height) as TextZoom distributes HR crops
LR_SIZE = (64, 16)
TEXTZOOM_SPLITS = ("train", "easy", "medium", "hard")
_TEST_SUBSETS = ("easy", "medium", "hard")
_TEST_WEIGHTS = np.array([1619, 1411, 1343], dtype=np.float64) / 4373.0  # TextZoom test sizes


TEXTZOOM_PROFILES: dict[str, Style] = {
    "easy": Style(
        rotation=1.5,
        shear=0.1,
        perspective=0.04,
        contrast=(0.35, 0.9),
        clutter=0.15,
        texture=0.25,
        margin=(0.04, 0.3),
        hr_strength=(0.0, 0.5),
        lr_strength=(0.45, 0.8),
    ),
    "medium": Style(
        rotation=2.5,
        shear=0.15,
        perspective=0.07,
        curve=0.1,
        curve_prob=0.1,
        contrast=(0.25, 0.8),
        clutter=0.3,
        texture=0.35,
        margin=(0.0, 0.3),
        hr_strength=(0.4, 0.9),
        lr_strength=(0.55, 0.88),
    ),
    "hard": Style(
        rotation=3.5,
        shear=0.2,
        perspective=0.1,
        curve=0.15,
        curve_prob=0.15,
        contrast=(0.22, 0.75),
        clutter=0.4,
        texture=0.4,
        margin=(-0.03, 0.3),
        hr_strength=(0.7, 1.0),
        lr_strength=(0.65, 0.95),
    ),
}

STR_STYLES: dict[str, Style] = {
    # Focused, horizontal scene text (ICDAR 2013).
    "ic13": Style(rotation=2, height=(14, 80), hr_strength=(0.0, 0.3), margin=(0.05, 0.25)),
    # Incidental text: small, blurred, rotated, perspective (ICDAR 2015).
    "ic15": Style(
        rotation=12,
        perspective=0.2,
        contrast=(0.2, 0.8),
        clutter=0.5,
        texture=0.5,
        height=(8, 40),
        hr_strength=(0.2, 0.7),
        margin=(0.0, 0.3),
    ),
    # Clean cropped words, varied fonts (IIIT 5K-words). Heights down to 13 pixels: about 1 in 10
    # crops is below 16x64, so LEMMA's LR version of every benchmark has images (Table 5).
    "iiit5k": Style(rotation=2, height=(13, 80), hr_strength=(0.0, 0.2), clutter=0.1),
    # Street View: blurred, noisy, low resolution.
    "svt": Style(
        rotation=4, height=(10, 48), contrast=(0.25, 0.8), clutter=0.4, hr_strength=(0.2, 0.6)
    ),
    # Street View with strong perspective.
    "svtp": Style(rotation=8, perspective=0.35, height=(10, 48), hr_strength=(0.2, 0.6)),
    # Curved text.
    "cute80": Style(rotation=5, curve=0.6, curve_prob=1.0, height=(13, 80), hr_strength=(0.0, 0.3)),
}
_TRAIN_STR = ("train", "val")


# --------------------------------------------------------------------------------------------
# Splits


def _split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def _textzoom_pair(style: Style, rng: np.random.Generator) -> tuple[Image.Image, Image.Image, str]:
    text = sample_text(rng)
    scene = render_text(text, rng, style, size=HR_SIZE)
    hr = camera(
        scene, rng, strength=sample_range(rng, style.hr_strength), scale=1.0, misalign=False
    )
    lr = camera(scene, rng, strength=sample_range(rng, style.lr_strength), scale=0.5)
    if lr.size != LR_SIZE:  # pragma: no cover - camera(scale=0.5) of 128x32 is 64x16
        lr = lr.resize(LR_SIZE, Image.BICUBIC)
    return hr, lr, text


def iter_textzoom(
    split: str, n: int, seed: int, profiles: Mapping[str, Style] | None = None
) -> Iterator[tuple[Image.Image, Image.Image, str]]:
    """Yield ``n`` (hr 128x32, lr 64x16, label) pairs of ``split`` (train/easy/medium/hard).

    Train pairs draw their subset profile per sample in TextZoom's test proportions.
    ``profiles`` overrides ``TEXTZOOM_PROFILES`` (calibration experiments).
    """
    if split not in TEXTZOOM_SPLITS:
        raise KeyError(f"unknown TextZoom split {split!r}; valid: {', '.join(TEXTZOOM_SPLITS)}")
    table = dict(TEXTZOOM_PROFILES if profiles is None else profiles)
    for i in range(n):
        rng = _split_rng(seed, f"textzoom/{split}", i)
        subset = split if split != "train" else _TEST_SUBSETS[rng.choice(3, p=_TEST_WEIGHTS)]
        yield _textzoom_pair(table[subset], rng)


def _check_sizes(sizes: Mapping[str, int], valid: tuple[str, ...], what: str) -> None:
    for key, n in sizes.items():
        if key not in valid:
            raise KeyError(f"{what}: unknown split {key!r} in sizes; valid: {', '.join(valid)}")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"{what}: sizes[{key!r}] must be a non-negative int, got {n!r}")


def _progress(it, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", leave=False, disable=None)


def make_textzoom(out_dir: Path, sizes: Mapping[str, int], seed: int) -> dict[str, int]:
    """Write TextZoom-layout LMDBs ``train``, ``test/easy``, ``test/medium``, ``test/hard``
    under ``out_dir`` (only the splits named in ``sizes``); returns the count per split."""
    from stisr.data.lmdb_io import write_textzoom_lmdb

    _check_sizes(sizes, TEXTZOOM_SPLITS, "make_textzoom")
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for split in TEXTZOOM_SPLITS:
        if split not in sizes:
            continue
        n = int(sizes[split])
        path = out_dir / "train" if split == "train" else out_dir / "test" / split
        samples = _progress(iter_textzoom(split, n, seed), n, f"textzoom/{split}")
        counts[split] = write_textzoom_lmdb(path, samples)
        logger.info("wrote %d TextZoom-style pairs (%s) to %s", counts[split], split, path)
    return counts


def _str_sample(name: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    if name in _TRAIN_STR:
        names = sorted(STR_STYLES)
        style = STR_STYLES[names[int(rng.integers(len(names)))]]
    else:
        style = STR_STYLES[name]
    text = sample_text(rng)
    scene = render_text(text, rng, style)
    img = camera(
        scene, rng, strength=sample_range(rng, style.hr_strength), scale=1.0, misalign=False
    )
    return img, text


def iter_str_set(name: str, n: int, seed: int) -> Iterator[tuple[Image.Image, str]]:
    """Yield ``n`` (variable-size word crop, label) samples in the style of benchmark ``name``
    (``train``/``val`` mix all styles)."""
    valid = (*sorted(STR_STYLES), *_TRAIN_STR)
    if name not in valid:
        raise KeyError(f"unknown STR set {name!r}; valid: {', '.join(valid)}")
    for i in range(n):
        yield _str_sample(name, _split_rng(seed, f"str/{name}", i))


def make_str_sets(out_dir: Path, sizes: Mapping[str, int], seed: int) -> dict[str, int]:
    """Write one STR-layout LMDB ``out_dir/<name>`` per key of ``sizes`` (ic13, ic15, iiit5k,
    svt, svtp, cute80, train, val); returns the count per set."""
    from stisr.data.lmdb_io import write_str_lmdb

    _check_sizes(sizes, (*sorted(STR_STYLES), *_TRAIN_STR), "make_str_sets")
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for name in sorted(sizes):
        n = int(sizes[name])
        path = out_dir / name
        counts[name] = write_str_lmdb(path, _progress(iter_str_set(name, n, seed), n, name))
        logger.info("wrote %d STR-style word images (%s) to %s", counts[name], name, path)
    return counts
