"""`jpeg`: 8-bit pixels at the model's side as a JPEG file at `quality` decodes them (torchvision's libjpeg
encoder; colour images with 4:2:0 chroma, its default), costed as a JPEG file of the stored pixels.

The memory holds the decode of the exemplar's file, exactly. Its cost must be a function of the stored tensor alone
(nothing beside the bank is kept, sent between ranks or sealed), so `nbytes` encodes the stored pixels again at the
same quality: a second-generation file, whose size is within 1 % of the first's (measured on glyphs at 16 and 32 px
and on smooth colour images, quality 25-95: mean ratio 0.998-1.000, extremes 0.989 and 1.010; uniform noise, no
exemplar's content, to 0.965) and which decodes to within a generation's drift of the stored pixels (about a third
of the first round trip's error). Repeating the round trip until the pixels stop changing would make the two files
one, but at high quality the generations drift four times as far from the exemplar as one round trip (0.043 against
0.011 a value at quality 90), so it is not done.

The lever this codec is for is ImageNet's: photos at the training side (224 px) as JPEG against originals of
about 110 KB (Wang et al., *Memory Replay with Data Compression*, ICLR 2022). On glyphs (flat images, sharp strokes,
a few hundred bytes) it does not pay: at the bytes of a glyph's PNG its JPEG loses about 0.02 of each pixel
(docs/benchmarks.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from exemplars.codecs.base import EightBit, as_levels, quantise, register


@dataclass
class JpegSettings:
    quality: int = 75               # libjpeg's quality, 1-100 (75: its default and PIL's)

    def __post_init__(self):
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")


def _codec():
    # imported here, as png.py: torchvision's import takes seconds, and only a run that stores JPEG needs it
    from torchvision.io import decode_jpeg, encode_jpeg
    return encode_jpeg, decode_jpeg


def jpeg_bytes(x8: torch.Tensor, quality: int) -> torch.Tensor:
    """int64 (n,): the JPEG size at `quality` of each uint8 image (n, C, H, W)."""
    encode, _ = _codec()
    return torch.tensor([len(encode(x.contiguous(), quality=quality)) for x in x8], dtype=torch.int64)


@register
class Jpeg(EightBit):
    name = "jpeg"
    Settings = JpegSettings

    def store(self, images: torch.Tensor) -> torch.Tensor:
        x8 = quantise(images.cpu())
        if x8.shape[1] not in (1, 3):
            raise ValueError(f"jpeg stores images of 1 or 3 channels, got {x8.shape[1]}")
        if not len(x8):
            return as_levels(x8)
        encode, decode = _codec()
        return as_levels(torch.stack([decode(encode(x.contiguous(), quality=self.settings.quality)) for x in x8]))

    def nbytes(self, stored: torch.Tensor) -> torch.Tensor:
        return jpeg_bytes(quantise(stored), self.settings.quality)

    def describe(self) -> str:
        return f"jpeg q{self.settings.quality}"
