"""Glyph and word rendering for the embedded synthetic data: text + style -> an RGB scene crop.

Split from :mod:`stisr.data.synth` so that the drawing (fonts from matplotlib's mpl-data, text
mask, warp, ink crop, colours, background, clutter) lives apart from the calibrated split
profiles and the LMDB writing. The order of the random draws is part of the embedded data's
bytes: do not reorder them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["Style", "font_paths", "render_text", "sample_range"]

logger = logging.getLogger("stisr.data.synth")  # the generator's logger, as before the split

_RENDER_PX = 48  # font size of the high-resolution text mask


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


def sample_range(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """Uniform in ``[lo, hi)``; ``lo`` itself (no draw) when the range is empty."""
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def _text_mask(text: str, font_path: Path | None, rng: np.random.Generator, style: Style):
    """White-on-black text mask at ``_RENDER_PX`` with letter spacing, on a padded canvas."""
    font = _font(font_path, _RENDER_PX)
    spacing = sample_range(rng, style.spacing) * _RENDER_PX
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
    m = [sample_range(rng, style.margin) * line_h * f for f in (1.0, 0.6, 1.0, 0.6)]
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

    contrast = sample_range(rng, style.contrast)
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
