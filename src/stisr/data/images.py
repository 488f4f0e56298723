"""Image bytes <-> PIL images, normalized to 8-bit RGB.

Official LMDBs hold PNG/JPEG bytes in many modes (grey, palette, 16-bit, CMYK). Every consumer
wants plain RGB, so the mode handling lives here once, and every failure is reported as one
exception type that names the record it came from.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

__all__ = ["MAX_PIXELS", "ImageDecodeError", "decode_image", "encode_png"]

# Text crops are tiny; a header claiming more than this is corrupt (or a decompression bomb).
MAX_PIXELS = 1 << 26

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageDecodeError(ValueError):
    """Raised when bytes cannot be turned into an RGB image; ``where`` names the record."""

    def __init__(self, where: str, reason: str = "") -> None:
        self.where = where
        self.reason = reason
        msg = f"cannot decode image at {where}"
        super().__init__(f"{msg}: {reason}" if reason else msg)


def encode_png(img: Image.Image) -> bytes:
    """Lossless, metadata-free PNG bytes, so identical pixels give identical files."""
    buf = io.BytesIO()
    try:
        img.save(buf, format="PNG")
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot encode image of mode {img.mode!r} as PNG: {exc}") from exc
    return buf.getvalue()


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_uint8_grey(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float greys: the 16-bit range is mapped onto 0..255."""
    arr = np.asarray(img)
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        out = np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255)
    else:  # "F": assumed to be on the 0..255 scale, like PIL's own F<->L conversions
        out = np.clip(np.rint(np.nan_to_num(arr.astype(np.float64))), 0, 255)
    return Image.fromarray(out.astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return _composite_on_white(img)
    if mode == "P":
        if "transparency" in img.info:
            return _composite_on_white(img)
        return img.convert("RGB")
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _to_uint8_grey(img).convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(img, transform)
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, HSV, RGBX, ...


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode encoded image bytes to a fully loaded RGB image.

    Any failure (unknown format, truncated data, absurd size, unconvertible mode) raises
    :class:`ImageDecodeError` naming ``where`` (e.g. ``"data/x/train1:image_hr-000000012"``).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageDecodeError(where, f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError(where, "empty value")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)))
            width, height = img.size
            if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
                raise ImageDecodeError(where, f"implausible size {width}x{height}")
            img.load()
            return to_rgb(img)
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        raise ImageDecodeError(where, f"{type(exc).__name__}: {exc}") from exc
