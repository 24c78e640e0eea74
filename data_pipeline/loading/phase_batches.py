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
from data_pipeline.loading.batch_plan import BatchPlan
from data_pipeline.loading.on_device import ExemplarBank, plan_on
from data_pipeline.loading.settings import LoaderOutput

Pair = tuple[torch.Tensor, torch.Tensor]


class PhaseBatches:
    """`real`: (uint8 images decoded on the host, labels) or None; `exemplars`: (pixels, labels) or None, kept on
    the plan's device for the stage. Batches come out float32 in [0, 1] (NCHW), on that device; `out` gives the preset's
    augmentation and the side."""
    loader = "torch"                 # which loader made a stage's batches (its "stage" event says)

    def __init__(self, real: Pair | None, exemplars: Pair | None, plan: BatchPlan, out: LoaderOutput,
                 augment: bool = True):
        empty = torch.empty(0, dtype=torch.int64)
        self.device = plan.dist.device
        self.real_images, real_labels = real if real is not None else (None, empty)   # augmented on the host
        self.real_labels = real_labels.to(self.device)
        self.ex = ExemplarBank.of(exemplars, self.device)
        self.n_real, self.n_ex = len(self.real_labels), len(self.ex)
        self.total = self.n_real + self.n_ex
        if self.total < plan.dist.world:
            raise ValueError(f"phase has {self.total} training samples for {plan.dist.world} ranks")
        self.plan, self.out, self.augment, self.as_stored = plan, out, augment, out.as_stored

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps(self.n_real, self.n_ex)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def close(self) -> None:
        """Nothing to release (the DALI loader's counterpart releases its pipeline)."""

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.plan.epoch(self.n_real, self.n_ex, epoch)
        g = self.plan.augment_generator(epoch)
        g_dev = device_generator(g, self.device)              # g itself on the CPU
        g_stored = self.plan.stored_generator(epoch) if self.as_stored is not None else None
        preset = self.out.preset
        for (real_idx, ex_idx), (real_dev, ex_dev) in zip(plan, plan_on(plan, self.device)):
            parts, labels = [], []
            if len(real_idx):
                x = self.real_images[real_idx].float().div_(255)
                x = augment_real(x, preset, self.out.image_size, g) if self.augment else x
                x = self.as_stored(x, g_stored) if self.as_stored is not None else x
                parts.append(x.to(self.device, non_blocking=True))
                labels.append(self.real_labels[real_dev])
            if len(ex_idx):
                x, y = self.ex.take(ex_dev)
                parts.append(augment_exemplars(x, preset, g_dev) if self.augment else x)
                labels.append(y)
            yield torch.cat(parts), torch.cat(labels)
