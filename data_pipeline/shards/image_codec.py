"""Image bytes <-> arrays, and the resize policies converters use (PIL only)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from core.errors import UserError


def open_rgb(data: bytes | str, name: str = "") -> Image.Image:
    """Decode any PIL-readable image (greyscale, palette, RGBA, ...) to RGB; clear error if broken."""
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        img.load()
    except Exception as e:  # PIL raises many types for truncated/unreadable files
        raise UserError(f"cannot read image {name or data!s}: {e}") from None
    return img.convert("RGB")


def resize_and_centre_crop(img: Image.Image, short: int, crop: int) -> Image.Image:
    """Resize the short side to `short` (bicubic), then centre-crop crop x crop.

    The arithmetic of DALI's `resize(resize_shorter=short, interp_type=INTERP_CUBIC, antialias=True)` +
    `crop(crop_pos=0.5)` (data_pipeline/loading/dali_pipeline.py), so both loaders see the same pixels:
    the long side is rounded to nearest, and a crop margin m is split at (m + 1) // 2 (half up; DALI's
    rounding), not m // 2, which on odd margins shifts the crop by one pixel."""
    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - crop + 1) // 2, (nh - crop + 1) // 2
    return img.crop((left, top, left + crop, top + crop))


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size`, then centre-crop a size x size square."""
    return resize_and_centre_crop(img, size, size)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if min(w, h) <= size:
        return img
    scale = size / min(w, h)
    return img.resize((round(w * scale), round(h * scale)), Image.BICUBIC)


def encode(img: Image.Image | np.ndarray, encoding: str = "png", quality: int = 95) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    if encoding == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif encoding == "jpg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unknown encoding {encoding}")
    return buf.getvalue()
