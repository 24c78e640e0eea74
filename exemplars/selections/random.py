"""A random subset of each class (the paper's initialisation of mnemonics, Algorithm 1 step 10)."""
from __future__ import annotations

import torch

from core import seeds
from exemplars.selections.base import Selection, pick_per_class, register


def random_order(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[: min(m, n)]


def pick_random(images: torch.Tensor, labels: torch.Tensor, group: list[int], m: int, ctx) -> dict[int, torch.Tensor]:
    return pick_per_class(images, labels, group, lambda label, cls: random_order(
        len(cls), m, seeds.generator("exemplars", ctx.seed, ctx.phase, label, 0)))


@register
class Random(Selection):
    name = "random"
    takes_lazy_images = True        # indexes its images and decodes what it takes

    def select(self, model, images, labels, group, m, ctx):
        return pick_random(images, labels, group, m, ctx)
