"""Herding (iCaRL): greedily pick the samples whose running mean of features tracks the class mean."""
from __future__ import annotations

import torch

from exemplars.features import extract_features
from exemplars.selections.base import Selection, pick_per_class, register


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding on L2-normalised features, indices in priority order (best first); ties go to the
    lowest index, so it is deterministic."""
    f = torch.nn.functional.normalize(features.double(), dim=1)
    mu = f.mean(0)
    m = min(m, len(f))
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(f), dtype=torch.bool)
    for k in range(1, m + 1):
        # distance of the mean of (chosen + candidate) to the class mean
        dist = ((mu[None, :] - (running[None, :] + f) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))            # first minimum: deterministic tie-break
        chosen.append(i)
        available[i] = False
        running += f[i]
    return torch.tensor(chosen, dtype=torch.int64)


def herd(model, images: torch.Tensor, labels: torch.Tensor, group: list[int], m: int, ctx,
         keep: bool = False) -> dict[int, torch.Tensor]:
    """Herding's m exemplars per class of `group`. A LazyImages is decoded one class at a time and, unless
    `keep` (a caller that reads the group's images again, as mnemonics from herding does), left out of its
    cache: one class's images are held at a time, and the m picked per class are decoded again."""
    def order(label, cls):
        pixels = cls.tensor(keep=keep) if hasattr(cls, "tensor") else cls
        return herding_order(extract_features(model, pixels, ctx.device, ctx.feature_batch_size), m)
    return pick_per_class(images, labels, group, order)


@register
class Herding(Selection):
    name = "herding"
    takes_lazy_images = True        # indexes its images and decodes what it takes

    def select(self, model, images, labels, group, m, ctx):
        return herd(model, images, labels, group, m, ctx)
