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

from data_pipeline.loading.augment import (
    augment_exemplars,
    augment_real,
    device_generator,
)
from data_pipeline.loading.batch_plan import (
    epoch_generator,
    epoch_plan,
    steps_per_epoch,
)
from data_pipeline.loading.on_device import ExemplarBank, plan_on


class PhaseBatches:
    def __init__(self, real_images: torch.Tensor | None, real_labels: torch.Tensor | None,
                 ex_images: torch.Tensor | None, ex_labels: torch.Tensor | None, global_batch: int,
                 rank: int, world: int, seed: int, preset: str, image_size: int, augment: bool = True,
                 exemplar_share: float | None = None, device: torch.device = torch.device("cpu")):
        empty = torch.empty(0, dtype=torch.int64)
        self.device = torch.device(device)
        self.real_images = real_images                        # decoded on the host: augmented there
        self.real_labels = (real_labels if real_labels is not None else empty).to(self.device)
        self.ex = ExemplarBank(ex_images, ex_labels, self.device)
        self.n_real, self.n_ex = len(self.real_labels), len(self.ex)
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

    def close(self) -> None:
        """Nothing to release (the DALI loader's counterpart releases its pipeline)."""

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = epoch_plan(self.n_real, self.n_ex, self.global_batch, self.rank, self.world, self.seed, epoch,
                          self.exemplar_share)
        g = epoch_generator(self.seed, epoch, stream=1 + self.rank)
        g_dev = device_generator(g, self.device)              # g itself on the CPU
        for (real_idx, ex_idx), (real_dev, ex_dev) in zip(plan, plan_on(plan, self.device)):
            parts, labels = [], []
            if len(real_idx):
                x = self.real_images[real_idx].float().div_(255)
                x = augment_real(x, self.preset, self.image_size, g) if self.augment else x
                parts.append(x.to(self.device, non_blocking=True))
                labels.append(self.real_labels[real_dev])
            if len(ex_idx):
                x, y = self.ex.take(ex_dev)
                parts.append(augment_exemplars(x, self.preset, g_dev) if self.augment else x)
                labels.append(y)
            yield torch.cat(parts), torch.cat(labels)
