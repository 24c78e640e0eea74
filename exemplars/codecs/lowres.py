"""`lowres`: 8-bit pixels at 1/factor of the model's side (the area average of each factor x factor block), decoded
by bilinear upsampling to the model's side where they are used; costed as PNG (`encoding: png`) or as the bare
pixels (`encoding: pixels`, C·(S/factor)² bytes). The same bytes hold about factor² more exemplars than `pixels`
at full side, each with the detail finer than a block lost (docs/benchmarks.md measures both on glyphs)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from exemplars.codecs.base import Codec, as_levels, quantise, register
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


@register
class Lowres(Codec):
    name = "lowres"
    Settings = LowresSettings

    def store(self, images: torch.Tensor) -> torch.Tensor:
        f = self.settings.factor
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"exemplars.lowres.factor {f} does not divide the image side {images.shape[-1]}")
        low = F.avg_pool2d(images.detach().cpu().float(), f) if f > 1 else images.detach().cpu().float()
        return as_levels(quantise(low))

    def decode(self, stored: torch.Tensor, side: int) -> torch.Tensor:
        if stored.shape[-1] == side or not len(stored):
            return stored
        up = F.interpolate(stored.float(), size=(side, side), mode="bilinear", align_corners=False)
        return up.clamp_(0, 1).to(stored.dtype)

    def nbytes(self, stored: torch.Tensor) -> torch.Tensor:
        if self.settings.encoding == "png":
            return png_bytes(quantise(stored))
        return torch.full((len(stored),), stored[0].numel() if len(stored) else 0, dtype=torch.int64)

    def describe(self) -> str:
        return f"lowres x1/{self.settings.factor} ({self.settings.encoding})"
