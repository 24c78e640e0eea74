"""Training batches of one phase for one rank: real data D_i mixed with exemplar tensors E.

Exemplars are treated as ordinary samples of the union D_i ∪ E (the paper's Eq. 5): one permutation
of the union per epoch, seeded by (seed, epoch), cut into global batches; rank r takes every
world-th sample of each global batch. So every sample is seen exactly once per epoch across ranks,
every rank runs the same number of steps (unequal steps hang data-parallel training), and a 1-rank
and a 2-rank run see the same global batches.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from data_pipeline.augment import augment_exemplars, augment_real


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 9_176 + stream) % (2**63))
    return g


def rank_slices(total: int, global_batch: int, rank: int, world: int, perm: torch.Tensor) -> list[torch.Tensor]:
    """This rank's share of each global batch of `perm` (a tail smaller than `world` joins the previous batch)."""
    steps = max(1, math.ceil(total / global_batch))
    bounds = [min(total, s * global_batch) for s in range(steps + 1)]
    if steps > 1 and bounds[-1] - bounds[-2] < world:
        bounds.pop(-2)
    return [perm[bounds[s]: bounds[s + 1]][rank::world] for s in range(len(bounds) - 1)]


class PhaseBatches:
    def __init__(self, real_images: torch.Tensor | None, real_labels: torch.Tensor | None,
                 ex_images: torch.Tensor | None, ex_labels: torch.Tensor | None, global_batch: int,
                 rank: int, world: int, seed: int, preset: str, image_size: int, augment: bool = True):
        empty = torch.empty(0, dtype=torch.int64)
        self.real_images = real_images
        self.real_labels = real_labels if real_labels is not None else empty
        self.ex_images = ex_images
        self.ex_labels = ex_labels if ex_labels is not None else empty
        self.n_real, self.n_ex = len(self.real_labels), len(self.ex_labels)
        self.total = self.n_real + self.n_ex
        if self.total < world:
            raise ValueError(f"phase has {self.total} training samples for {world} ranks")
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.seed, self.preset, self.image_size, self.augment = seed, preset, image_size, augment

    @property
    def steps_per_epoch(self) -> int:
        return len(rank_slices(self.total, self.global_batch, 0, self.world, torch.arange(self.total)))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(self.total, generator=epoch_generator(self.seed, epoch))
        g = epoch_generator(self.seed, epoch, stream=1 + self.rank)
        for idx in rank_slices(self.total, self.global_batch, self.rank, self.world, perm):
            real_idx = idx[idx < self.n_real]
            ex_idx = idx[idx >= self.n_real] - self.n_real
            parts, labels = [], []
            if len(real_idx):
                x = self.real_images[real_idx].float().div_(255)
                parts.append(augment_real(x, self.preset, self.image_size, g) if self.augment else x)
                labels.append(self.real_labels[real_idx])
            if len(ex_idx):
                x = self.ex_images[ex_idx].float()
                parts.append(augment_exemplars(x, self.preset, g) if self.augment else x)
                labels.append(self.ex_labels[ex_idx])
            yield torch.cat(parts), torch.cat(labels)
