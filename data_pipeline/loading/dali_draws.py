"""The random parameters of the DALI train pipeline, drawn on the host from the epoch's seed.

DALI's own random operators keep a state inside the pipeline that advances with every batch, so a
pipeline built once per stage would draw differently after a resume than without one. So the pipeline
draws nothing: the crop windows, translations and flips come in with the encoded images, drawn here
from a numpy generator seeded by (seed, epoch, rank) in step order. An epoch's augmentation is then a
pure function of (seed, epoch, rank), whatever ran before it, and the pipeline lives as long as the stage.

* imagenet preset: Inception-style random-resized-crop windows (area 0.08-1 of the image, aspect
  3/4-4/3, ten attempts, else the central square: augment.random_resized_crop's rule), in pixels of
  the encoded image, whose size is read from its header (`image_size_of`), once per sample per stage.
* 32 px presets: a translation of -pad..pad pixels per axis (augment.PAD) for the zero-padded crop.
* flips: 0/1 per sample where the preset flips (augment.FLIP), else 0.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from core.errors import UserError
from data_pipeline.loading.augment import FLIP, PAD

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10


def image_size_of(data: np.ndarray, name: str = "") -> tuple[int, int]:
    """(width, height) from an encoded image's header (PIL reads the header only)."""
    try:
        with Image.open(io.BytesIO(data.tobytes())) as img:
            return img.size
    except Exception as e:
        raise UserError(f"cannot read the image header of shard sample {name}: {e}; re-create the shards") from None


def crop_windows(rng: np.random.Generator, width: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: anchor (x, y) and shape (w, h) of a random-resized-crop window, float32 (n, 2) each."""
    n = len(width)
    w_img, h_img = width.astype(np.float64)[:, None], height.astype(np.float64)[:, None]
    target = w_img * h_img * rng.uniform(*SCALE, (n, ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1]), (n, ATTEMPTS)))
    cw, ch = np.rint(np.sqrt(target * aspect)), np.rint(np.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w_img) & (ch > 0) & (ch <= h_img)
    hit, first = ok.any(1), ok.argmax(1)               # the first attempt that fits, if any
    rows = np.arange(n)
    side = np.minimum(width, height).astype(np.float64)
    cw = np.where(hit, cw[rows, first], side)
    ch = np.where(hit, ch[rows, first], side)
    u = rng.random((n, 2))
    left = np.where(hit, np.floor(u[:, 0] * (width - cw + 1)), (width - side) // 2)
    top = np.where(hit, np.floor(u[:, 1] * (height - ch + 1)), (height - side) // 2)
    return (np.stack([left, top], 1).astype(np.float32), np.stack([cw, ch], 1).astype(np.float32))


def shifts(rng: np.random.Generator, n: int, pad: int) -> np.ndarray:
    """Per image: the (x, y) anchor of the S x S crop of the zero-padded image, -pad..pad, float32 (n, 2)."""
    return rng.integers(-pad, pad + 1, (n, 2)).astype(np.float32)


def flips(rng: np.random.Generator, n: int, preset: str) -> np.ndarray:
    return (rng.random(n) < 0.5).astype(np.int32) if FLIP[preset] else np.zeros(n, np.int32)


def train_draws(rng: np.random.Generator, preset: str, sizes: np.ndarray | None, n: int) -> tuple[np.ndarray, ...]:
    """The per-image inputs of one train batch besides the encoded images: (anchor, shape, flip) for the
    imagenet preset (`sizes`: (n, 2) width, height), (shift, flip) for the others."""
    if preset == "imagenet":
        anchor, shape = crop_windows(rng, sizes[:, 0], sizes[:, 1])
        return anchor, shape, flips(rng, n, preset)
    return shifts(rng, n, PAD[preset]), flips(rng, n, preset)
