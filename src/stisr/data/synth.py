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
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stisr.data.degrade import camera

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

_RENDER_PX = 48  # font size of the high-resolution text mask


# --------------------------------------------------------------------------------------------
# Words


@functools.lru_cache(maxsize=1)
def word_list(n: int = 30000) -> tuple[str, ...]:
    """The ``n`` most frequent English words (wordfreq), letters and apostrophes only."""
    try:
        import wordfreq
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("synthetic data needs the 'wordfreq' package") from exc
    keep = re.compile(r"[a-z][a-z']*[a-z]|[a-z]")
    words = tuple(w for w in wordfreq.top_n_list("en", n) if keep.fullmatch(w) and len(w) <= 14)
    if not words:
        raise RuntimeError("wordfreq returned no usable English words")
    return words


_PUNCT_SUFFIX = ("!", ".", ",", ":", "?", "'s", "!!")
_JOINERS = ("-", "&", "'", ".", "/")


def _number(rng: np.random.Generator) -> str:
    kind = int(rng.integers(6))
    if kind == 0:
        return str(int(rng.integers(0, 10 ** int(rng.integers(1, 5)))))
    if kind == 1:
        return f"${int(rng.integers(1, 200))}.{int(rng.integers(0, 100)):02d}"
    if kind == 2:
        return str(int(rng.integers(1950, 2030)))
    if kind == 3:
        return f"{int(rng.integers(100, 1000))}-{int(rng.integers(1000, 10000))}"
    if kind == 4:
        return f"{int(rng.integers(1, 100))}%"
    return f"{int(rng.integers(1, 24))}:{int(rng.integers(0, 60)):02d}"


def _case(word: str, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.40:
        return word
    if r < 0.70:
        return word[:1].upper() + word[1:]
    if r < 0.97:
        return word.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in word)


def sample_text(rng: np.random.Generator) -> str:
    """A scene-text-like word: mostly dictionary words in mixed case, some numbers and
    punctuation. Always keeps at least one character of the evaluation alphabet."""
    words = word_list()
    r = rng.random()
    if r < 0.08:
        return _number(rng)
    # Half the words from the 2,000 most common (short, like signs), half from the long tail.
    top = 2000 if rng.random() < 0.5 else len(words)
    word = _case(words[int(rng.integers(min(top, len(words))))], rng)
    r = rng.random()
    if r < 0.05:
        word += _PUNCT_SUFFIX[int(rng.integers(len(_PUNCT_SUFFIX)))]
    elif r < 0.08:
        other = _case(words[int(rng.integers(500))], rng)
        word = word + _JOINERS[int(rng.integers(len(_JOINERS)))] + other
    elif r < 0.11:
        word = word + str(int(rng.integers(0, 100)))
    return word[:24]


# --------------------------------------------------------------------------------------------
# Fonts

# (file, characters it renders wrongly: the TeX fonts use their own glyphs for some ASCII)
_FONT_FILES: tuple[tuple[str, str], ...] = (
    ("DejaVuSans.ttf", ""),
    ("DejaVuSans-Bold.ttf", ""),
    ("DejaVuSans-Oblique.ttf", ""),
    ("DejaVuSans-BoldOblique.ttf", ""),
    ("DejaVuSerif.ttf", ""),
    ("DejaVuSerif-Bold.ttf", ""),
    ("DejaVuSerif-Italic.ttf", ""),
    ("DejaVuSerif-BoldItalic.ttf", ""),
    ("DejaVuSansMono.ttf", ""),
    ("DejaVuSansMono-Bold.ttf", ""),
    ("DejaVuSansMono-Oblique.ttf", ""),
    ("STIXGeneral.ttf", ""),
    ("STIXGeneralBol.ttf", ""),
    ("STIXGeneralItalic.ttf", ""),
    ("STIXGeneralBolIta.ttf", ""),
    ("cmr10.ttf", '$&<>_|{}\\"^~`'),
    ("cmss10.ttf", '$&<>_|{}\\"^~`'),
    ("cmb10.ttf", '$&<>_|{}\\"^~`'),
    ("cmti10.ttf", '$&<>_|{}\\"^~`'),
    ("cmtt10.ttf", "\"'`"),
)


@functools.lru_cache(maxsize=1)
def font_paths() -> tuple[tuple[Path, frozenset[str]], ...]:
    """(TTF path, characters to avoid) for every font found in matplotlib's mpl-data.

    Without matplotlib the tuple is empty and PIL's built-in font is used (other pixels: the
    data then differs from data generated where matplotlib is installed).
    """
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        logger.warning("matplotlib not found: synthetic text uses PIL's built-in font only")
        return ()
    root = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"
    found = tuple(
        (root / name, frozenset(bad)) for name, bad in _FONT_FILES if (root / name).is_file()
    )
    if not found:
        logger.warning("no TTF fonts under %s: using PIL's built-in font", root)
    return found


@functools.lru_cache(maxsize=64)
def _font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(str(path), size)


def _pick_font(text: str, rng: np.random.Generator) -> Path | None:
    fonts = font_paths()
    if not fonts:
        return None
    i = int(rng.integers(len(fonts)))
    path, bad = fonts[i]
    if bad and any(c in bad for c in text):
        return fonts[0][0]
    return path


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Style:
    """Rendering and degradation ranges of one split; each value is sampled per word."""

    rotation: float = 2.0  # max |degrees|
    shear: float = 0.15  # max |x shear|
    perspective: float = 0.05  # max corner jitter, fraction of the text height
    curve: float = 0.0  # max arc amplitude, fraction of the text height
    curve_prob: float = 0.0
    contrast: tuple[float, float] = (0.35, 0.9)  # luminance difference text vs background
    clutter: float = 0.2  # probability of distracting edges/strokes in the background
    texture: float = 0.3  # amplitude scale of background texture
    margin: tuple[float, float] = (0.05, 0.35)  # crop margins, fraction of the text height
    spacing: tuple[float, float] = (-0.03, 0.15)  # extra letter spacing, fraction of font size
    hr_strength: tuple[float, float] = (0.0, 0.1)  # camera strength of the HR capture
    lr_strength: tuple[float, float] = (0.3, 0.5)  # camera strength of the LR capture
    height: tuple[float, float] = (32.0, 32.0)  # STR crop height range (pixels, log-uniform)


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
    # Clean cropped words, varied fonts (IIIT 5K-words).
    "iiit5k": Style(rotation=2, height=(20, 80), hr_strength=(0.0, 0.2), clutter=0.1),
    # Street View: blurred, noisy, low resolution.
    "svt": Style(
        rotation=4, height=(10, 48), contrast=(0.25, 0.8), clutter=0.4, hr_strength=(0.2, 0.6)
    ),
    # Street View with strong perspective.
    "svtp": Style(rotation=8, perspective=0.35, height=(10, 48), hr_strength=(0.2, 0.6)),
    # Curved text.
    "cute80": Style(rotation=5, curve=0.6, curve_prob=1.0, height=(20, 80), hr_strength=(0.0, 0.3)),
}
_TRAIN_STR = ("train", "val")


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def _text_mask(text: str, font_path: Path | None, rng: np.random.Generator, style: Style):
    """White-on-black text mask at ``_RENDER_PX`` with letter spacing, on a padded canvas."""
    font = _font(font_path, _RENDER_PX)
    spacing = _uniform(rng, style.spacing) * _RENDER_PX
    advances = [font.getlength(c) for c in text]
    width = int(math.ceil(sum(advances) + spacing * max(0, len(text) - 1))) + 1
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (_RENDER_PX, 0)
    pad = _RENDER_PX
    canvas = Image.new("L", (max(1, width) + 2 * pad, ascent + descent + 2 * pad), 0)
    draw = ImageDraw.Draw(canvas)
    x = float(pad)
    for c, adv in zip(text, advances, strict=True):
        draw.text((x, pad), c, fill=255, font=font)
        x += adv + spacing
    box = (pad, pad, pad + max(1, width), pad + ascent + descent)
    return np.asarray(canvas, dtype=np.uint8), box, ascent + descent


def _warp(mask: np.ndarray, box, line_h: int, rng: np.random.Generator, style: Style):
    """Rotation, shear, perspective and (sometimes) an arc, applied to the mask."""
    h, w = mask.shape
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    src = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    jitter = rng.uniform(-1, 1, size=(4, 2)) * style.perspective * line_h
    dst = (src + jitter).astype(np.float32)
    persp = cv2.getPerspectiveTransform(src, dst)
    angle = math.radians(rng.uniform(-1, 1) * style.rotation)
    shear = rng.uniform(-1, 1) * style.shear
    c, s = math.cos(angle), math.sin(angle)
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], np.float64)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
    shr = np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    m = back @ rot @ shr @ to_origin @ persp
    out = cv2.warpPerspective(mask, m, (w, h), flags=cv2.INTER_LINEAR)
    if style.curve > 0 and rng.random() < style.curve_prob:
        amp = rng.uniform(-1, 1) * style.curve * line_h * max(1.0, (x1 - x0) / (4 * line_h))
        xs = np.arange(w, dtype=np.float32)
        t = np.clip((xs - x0) / max(1.0, x1 - x0), 0, 1)
        dy = (amp * np.sin(np.pi * t)).astype(np.float32)
        map_x = np.broadcast_to(xs, (h, w)).astype(np.float32)
        map_y = (np.arange(h, dtype=np.float32)[:, None] + dy[None, :]).astype(np.float32)
        out = cv2.remap(out, map_x, map_y, interpolation=cv2.INTER_LINEAR)
    return out


def _ink_crop(mask: np.ndarray, line_h: int, rng: np.random.Generator, style: Style):
    rows = np.flatnonzero(mask.max(axis=1) > 40)
    cols = np.flatnonzero(mask.max(axis=0) > 40)
    if len(rows) == 0 or len(cols) == 0:
        return mask
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = [_uniform(rng, style.margin) * line_h * f for f in (1.0, 0.6, 1.0, 0.6)]
    h, w = mask.shape
    left, top = int(round(x0 - m[0])), int(round(y0 - m[1]))
    right, bottom = int(round(x1 + m[2])), int(round(y1 + m[3]))
    padded = cv2.copyMakeBorder(mask, h, h, w, w, cv2.BORDER_CONSTANT, value=0)
    return padded[top + h : bottom + h, left + w : right + w]


def _colour(lum: float, rng: np.random.Generator, saturation: float) -> np.ndarray:
    """An RGB colour (0..1) of roughly luminance ``lum``."""
    tint = rng.uniform(-1, 1, 3) * saturation
    rgb = lum + tint - tint @ np.array([0.299, 0.587, 0.114])
    return np.clip(rgb, 0, 1).astype(np.float32)


def _smooth_noise(h: int, w: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    gh, gw = max(2, cells), max(2, int(cells * w / max(h, 1)))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(h: int, w: int, base: np.ndarray, rng: np.random.Generator, style: Style):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(a) * xx / max(w, 1) + np.sin(a) * yy / max(h, 1)) - 0.5
    bg = base[None, None, :] + (ramp * rng.uniform(0, 0.25))[..., None]
    amp = rng.uniform(0, style.texture)
    if amp > 0:
        low = _smooth_noise(h, w, rng, int(rng.integers(2, 6)))[..., None] * 0.12 * amp
        fine = rng.standard_normal((h, w, 1)).astype(np.float32) * 0.04 * amp
        bg = bg + low + fine
    return np.clip(bg, 0, 1).astype(np.float32)


def _clutter(img: np.ndarray, rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """Edges of neighbouring signs, frames and stray strokes, as in tight real crops."""
    h, w = img.shape[:2]
    canvas = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(3))
        t = max(1, int(round(rng.uniform(0.02, 0.08) * h)))
        if kind == 0:  # horizontal border near the top or bottom
            y = (
                int(rng.uniform(0, 0.15) * h)
                if rng.random() < 0.5
                else int(rng.uniform(0.85, 1) * h)
            )
            cv2.line(canvas, (0, y), (w - 1, y + int(rng.integers(-2, 3))), 1.0, t)
        elif kind == 1:  # vertical edge near the left or right
            x = (
                int(rng.uniform(0, 0.08) * w)
                if rng.random() < 0.5
                else int(rng.uniform(0.92, 1) * w)
            )
            cv2.line(canvas, (x, 0), (x + int(rng.integers(-3, 4)), h - 1), 1.0, t)
        else:  # a stray stroke
            p = (int(rng.integers(w)), int(rng.integers(h)))
            q = (p[0] + int(rng.integers(-w // 4, w // 4 + 1)), p[1] + int(rng.integers(-h, h + 1)))
            cv2.line(canvas, p, q, 1.0, t)
    alpha = canvas[..., None] * rng.uniform(0.3, 0.9)
    return img * (1 - alpha) + colour[None, None, :] * alpha


def render_text(
    text: str,
    rng: np.random.Generator,
    style: Style,
    size: tuple[int, int] | None = None,
    font_path: Path | None = None,
) -> Image.Image:
    """Render ``text`` as a scene-text crop; ``size`` (w, h) fixes the output (TextZoom's
    stretch to 128x32), else the height is drawn from ``style.height`` and the width follows."""
    if not text:
        raise ValueError("render_text: empty text")
    if font_path is None:
        font_path = _pick_font(text, rng)
    mask, box, line_h = _text_mask(text, font_path, rng, style)
    mask = _warp(mask, box, line_h, rng, style)
    crop = _ink_crop(mask, line_h, rng, style)
    if size is None:
        out_h = int(round(math.exp(rng.uniform(*np.log(style.height)))))
        aspect = crop.shape[1] / max(1, crop.shape[0]) * rng.uniform(0.85, 1.15)
        size = (max(4, int(round(out_h * aspect))), max(4, out_h))
    w, h = size
    alpha = cv2.resize(crop.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
    alpha = np.clip(alpha, 0, 1)[..., None]

    contrast = _uniform(rng, style.contrast)
    dark_text = rng.random() < 0.7
    lo = rng.uniform(0.05, max(0.06, 0.95 - contrast))
    fg_lum, bg_lum = (lo, lo + contrast) if dark_text else (lo + contrast, lo)
    bg = _background(h, w, _colour(bg_lum, rng, rng.uniform(0, 0.3)), rng, style)
    fg = _colour(fg_lum, rng, rng.uniform(0, 0.3))[None, None, :]
    if rng.random() < 0.15:  # drop shadow / outline in the background colour's opposite
        shift = (int(rng.integers(-2, 3)), int(rng.integers(0, 3)))
        shadow = np.roll(alpha, shift, axis=(0, 1)) * rng.uniform(0.3, 0.8)
        bg = bg * (1 - shadow) + _colour(fg_lum * 0.5, rng, 0.0)[None, None, :] * shadow
    img = bg * (1 - alpha) + fg * alpha
    if rng.random() < style.clutter:
        img = _clutter(img, rng, _colour(fg_lum, rng, 0.2))
    return Image.fromarray(np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), mode="RGB")


# --------------------------------------------------------------------------------------------
# Splits


def _split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def _textzoom_pair(style: Style, rng: np.random.Generator) -> tuple[Image.Image, Image.Image, str]:
    text = sample_text(rng)
    scene = render_text(text, rng, style, size=HR_SIZE)
    hr = camera(scene, rng, strength=_uniform(rng, style.hr_strength), scale=1.0, misalign=False)
    lr = camera(scene, rng, strength=_uniform(rng, style.lr_strength), scale=0.5)
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
    img = camera(scene, rng, strength=_uniform(rng, style.hr_strength), scale=1.0, misalign=False)
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
