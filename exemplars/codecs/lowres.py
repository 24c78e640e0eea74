"""`lowres`: 8-bit pixels at 1/factor of the model's side, decoded by bilinear upsampling to the model's side where
they are used; costed as PNG (`encoding: png`) or as the bare pixels (`encoding: pixels`, C·(S/factor)² bytes). The
same bytes hold about factor² more exemplars than `pixels` at full side, each with the detail finer than a block
lost (docs/benchmarks.md measures both on glyphs).

Storing is the least-squares inverse of the decode (bilinear upsampling is linear and separable, U per axis:
low = A·x·Aᵀ with A = pinv(U)), clamped to [0, 1] and rounded to 8 bits: the low-resolution image whose upsampling
is closest to the exemplar (closer than the block average), and storing a decoded exemplar gives back what was
stored. So an exemplar optimised as low-resolution pixels seen through the decode (`parametrises`: the mnemonics
selection then descends the stored tensor) is kept as exactly those pixels, up to the rounding."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from exemplars.codecs.base import EightBit, as_levels, quantise, register
from exemplars.codecs.png import png_bytes

ENCODINGS = ("png", "pixels")


@dataclass
class LowresSettings:
    factor: int = 2                 # the stored side is the model's side / factor (a divisor of it)
    encoding: str = "png"           # png | pixels: how a stored exemplar's bytes are counted

    def __post_init__(self):
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")


@functools.lru_cache(maxsize=None)
def inverse(side: int, low: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """A (low, side): the least-squares inverse of 1-D linear upsampling from `low` to `side` (align_corners=False,
    as `upsample`), float64, computed on the CPU and kept on `device` (one copy a device)."""
    if device.type != "cpu":
        return inverse(side, low).to(device)
    basis = torch.eye(low, dtype=torch.float64)[:, None, :]
    up = F.interpolate(basis, size=side, mode="linear", align_corners=False)[:, 0, :].T        # (side, low)
    return torch.linalg.pinv(up)


def upsample(low: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear upsampling (differentiable) of float images (n, C, h, w) to side x side."""
    return F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


@register
class Lowres(EightBit):
    name = "lowres"
    Settings = LowresSettings
    parametrises = True

    def store(self, images: torch.Tensor) -> torch.Tensor:
        return self.store_here(images.detach().cpu())

    def store_here(self, images: torch.Tensor) -> torch.Tensor:
        """The store in float64 on `images`' device (on a GPU two small matrix products a batch; its sums may
        round a pixel at a level's boundary to the other level than the CPU's)."""
        side = images.shape[-1]
        if images.shape[-2] != side:
            raise ValueError(f"lowres stores square images, got {images.shape[-2]}x{side}")
        self.check(side)
        a = inverse(side, side // self.settings.factor, images.device)
        low = torch.einsum("ij,ncjk,lk->ncil", a, images.detach().double(), a)
        return as_levels(quantise(low))

    def decode(self, stored: torch.Tensor, side: int) -> torch.Tensor:
        if stored.shape[-1] == side or not len(stored):
            return stored
        return upsample(stored.float(), side).clamp(0, 1).to(stored.dtype)

    def nbytes(self, stored: torch.Tensor) -> torch.Tensor:
        if self.settings.encoding == "png":
            return png_bytes(quantise(stored))
        return torch.full((len(stored),), stored[0].numel() if len(stored) else 0, dtype=torch.int64)

    def check(self, side: int) -> None:
        if side % self.settings.factor:
            raise ValueError(f"factor {self.settings.factor} does not divide data.image_size {side}")

    def describe(self) -> str:
        return f"lowres x1/{self.settings.factor} ({self.settings.encoding})"
