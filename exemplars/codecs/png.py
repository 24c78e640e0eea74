"""`png`: 8-bit pixels at the model's side, costed as lossless PNG (torchvision's encoder, level 6): what the
exemplar would take as a file. The round trip loses only the quantisation to 8 bits (at most 1/510 a value)."""
from __future__ import annotations

import torch

from exemplars.codecs.base import EightBit, as_levels, quantise, register

LEVEL = 6


def png_bytes(x8: torch.Tensor) -> torch.Tensor:
    """int64 (n,): the PNG size of each uint8 image (n, C, H, W)."""
    # imported here: torchvision's import takes seconds (it loads its models and ops), and every mnemo process
    # imports the codecs to build its config, while only a run that stores PNG-costed exemplars encodes one
    from torchvision.io import encode_png
    return torch.tensor([len(encode_png(x, compression_level=LEVEL)) for x in x8], dtype=torch.int64)


@register
class Png(EightBit):
    name = "png"

    def store(self, images: torch.Tensor) -> torch.Tensor:
        return self.store_here(images.cpu())

    def store_here(self, images: torch.Tensor) -> torch.Tensor:
        return as_levels(quantise(images))

    def nbytes(self, stored: torch.Tensor) -> torch.Tensor:
        return png_bytes(quantise(stored))
