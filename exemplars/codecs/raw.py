"""`raw`: float16 pixels at the model's side, counted in exemplars (one per budget image, whatever it costs): the
memory as it was before codecs, bit for bit."""
from __future__ import annotations

import torch

from exemplars.codecs.base import STORE_DTYPE, Codec, register


@register
class Raw(Codec):
    name = "raw"
    counts_bytes = False

    def store(self, images: torch.Tensor) -> torch.Tensor:
        return images.detach().to("cpu", STORE_DTYPE)

    def nbytes(self, stored: torch.Tensor) -> torch.Tensor:
        per = stored[0].numel() * stored.element_size() if len(stored) else 0
        return torch.full((len(stored),), per, dtype=torch.int64)
