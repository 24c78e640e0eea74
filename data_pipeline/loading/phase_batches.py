"""Training batches of one phase for one rank: real data D_i (decoded in memory) mixed with exemplar
tensors E, following the epoch plan of batch_plan.py.

By default exemplars are ordinary samples of the union D_i ∪ E (the paper's Eq. 5): one permutation
of the union per epoch, seeded by (seed, epoch), cut into global batches; rank r takes every
world-th sample of each global batch. So every sample is seen exactly once per epoch across ranks,
every rank runs the same number of steps (unequal steps hang data-parallel training), and a 1-rank
and a 2-rank run see the same global batches. `exemplar_share` fixes the exemplars' share of each
batch instead (batch_plan.py). The DALI loader (dali_batches.py) follows the same plan.
"""
from __future__ import annotations

from typing import Iterator

import torch

from data_pipeline.loading.augment import augment_exemplars, augment_real
from data_pipeline.loading.batch_plan import (
    epoch_generator,
    epoch_plan,
    steps_per_epoch,
)


class PhaseBatches:
    def __init__(self, real_images: torch.Tensor | None, real_labels: torch.Tensor | None,
                 ex_images: torch.Tensor | None, ex_labels: torch.Tensor | None, global_batch: int,
                 rank: int, world: int, seed: int, preset: str, image_size: int, augment: bool = True,
                 exemplar_share: float | None = None):
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
        self.exemplar_share = exemplar_share

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_real, self.n_ex, self.global_batch, self.world, self.exemplar_share)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = epoch_plan(self.n_real, self.n_ex, self.global_batch, self.rank, self.world, self.seed, epoch,
                          self.exemplar_share)
        g = epoch_generator(self.seed, epoch, stream=1 + self.rank)
        for real_idx, ex_idx in plan:
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
