"""A random subset of each class (the paper's initialisation of mnemonics, Algorithm 1 step 10)."""
from __future__ import annotations

import torch

from core import seeds
from exemplars.selections.base import Selection, register


def random_order(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[: min(m, n)]


def pick_random(images: torch.Tensor, labels: torch.Tensor, group: list[int], m: int, ctx) -> dict[int, torch.Tensor]:
    out = {}
    for label in group:
        cls = images[labels == label]
        order = random_order(len(cls), m, seeds.generator("exemplars", ctx.seed, ctx.phase, label, 0))
        out[label] = cls[order].float().div_(255)
    return out


@register
class Random(Selection):
    name = "random"

    def select(self, model, images, labels, group, m, ctx):
        return pick_random(images, labels, group, m, ctx)
