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


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size`, then centre-crop a size x size square."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


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
