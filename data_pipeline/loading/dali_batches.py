"""The DALI loader of a phase: real images straight from the phase's shards, decoded and augmented by
DALI, mixed with exemplar tensors, split over ranks by the shared epoch plan (batch_plan.py).

Same interface and semantics as PhaseBatches (the in-memory torch loader): `steps_per_epoch`, and
`epoch(e)` yielding (x, y) with every sample once per epoch across ranks, equal steps on every rank,
deterministic in (seed, epoch); real samples are indexed in the same (class id, key) order, so both
loaders put the same samples in the same batches. Only the shards of the phase's classes are read
(through their DALI index files). Exemplars (pixels in memory, not files) get the light augmentation
of augment.py (pad-crop, flip where the preset allows) on the device the batch lives on, and are cast
to the batch's layout and dtype. nvidia.dali is imported lazily, through dali_pipeline.py only.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from data_pipeline.loading.augment import augment_exemplars
from data_pipeline.loading.batch_plan import (
    epoch_generator,
    epoch_plan,
    steps_per_epoch,
)
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.samples import SampleReader, phase_samples

DALI_STREAM = 7_000_000              # generator stream of the DALI pipeline seeds


def to_layout(x: torch.Tensor, layout: str, dtype: torch.dtype) -> torch.Tensor:
    """NCHW float tensor -> the loader's output layout/dtype."""
    x = x.to(dtype)
    if layout == "NHWC":
        return x.permute(0, 2, 3, 1).contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _lut(label_of: dict[int, int] | None, class_ids: np.ndarray) -> torch.Tensor:
    ids = torch.from_numpy(class_ids)
    if label_of is None:
        return ids.clone()
    lut = torch.full((max(label_of) + 1,), -1, dtype=torch.int64)
    for cid, label in label_of.items():
        lut[cid] = label
    return lut[ids]


class DaliPhaseBatches:
    def __init__(self, manifest: Manifest, class_ids, ex_images: torch.Tensor | None, ex_labels: torch.Tensor | None,
                 global_batch: int, rank: int, world: int, seed: int, preset: str, image_size: int,
                 label_of: dict[int, int] | None = None, exemplar_share: float | None = None, threads: int = 2,
                 device_id: int | None = None, layout: str = "NCHW", dtype: torch.dtype = torch.float32,
                 split: str = "train"):
        from data_pipeline.loading.dali_pipeline import PipeSpec

        self.samples = phase_samples(manifest, split, class_ids)
        self.reader = SampleReader(self.samples)
        self.labels = _lut(label_of, self.samples.class_id)        # incremental labels (or class ids)
        self.ex_images = ex_images
        self.ex_labels = ex_labels if ex_labels is not None else torch.empty(0, dtype=torch.int64)
        self.n_real, self.n_ex = len(self.samples), len(self.ex_labels)
        if self.n_real + self.n_ex < world:
            raise ValueError(f"phase has {self.n_real + self.n_ex} training samples for {world} ranks")
        self.global_batch, self.rank, self.world, self.seed = global_batch, rank, world, seed
        self.preset, self.exemplar_share = preset, exemplar_share
        self.spec = PipeSpec("train", preset, image_size, layout=layout, dtype=dtype, threads=threads,
                             device_id=device_id)
        self.device = torch.device("cpu") if device_id is None else torch.device("cuda", device_id)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_real, self.n_ex, self.global_batch, self.world, self.exemplar_share)

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def opened_shards(self) -> set[str]:
        return set(self.reader.opened)

    def plan(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return epoch_plan(self.n_real, self.n_ex, self.global_batch, self.rank, self.world, self.seed, epoch,
                          self.exemplar_share)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from data_pipeline.loading.dali_pipeline import decode_batches

        plan = self.plan(epoch)
        real_steps = [r for r, _ in plan if len(r)]
        max_batch = max((len(r) for r in real_steps), default=1)
        encoded = (self.reader.read_many(r.tolist()) for r in real_steps)
        dali_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=epoch_generator(self.seed, epoch,
                                                                                    DALI_STREAM + self.rank)))
        decoded = decode_batches(encoded, len(real_steps), self.spec, max_batch, dali_seed)
        g = epoch_generator(self.seed, epoch, stream=1 + self.rank)
        for real_idx, ex_idx in plan:
            parts, labels = [], []
            if len(real_idx):
                parts.append(next(decoded))
                labels.append(self.labels[real_idx])
            if len(ex_idx):
                x = self.ex_images[ex_idx].to(self.device).float()
                parts.append(to_layout(augment_exemplars(x, self.preset, g), self.spec.layout, self.spec.dtype))
                labels.append(self.ex_labels[ex_idx])
            yield torch.cat(parts), torch.cat(labels)
        decoded.close()


def dali_eval_batches(manifest: Manifest, split: str, class_ids, batch_size: int, preset: str, image_size: int,
                      rank: int = 0, world: int = 1, label_of: dict[int, int] | None = None, threads: int = 2,
                      device_id: int | None = None, layout: str = "NCHW", dtype: torch.dtype = torch.float32
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Eval-transformed batches of this rank's strided slice (rank::world) of the classes' samples,
    in (class id, key) order."""
    from data_pipeline.loading.dali_pipeline import PipeSpec, decode_batches

    samples = phase_samples(manifest, split, class_ids)
    reader = SampleReader(samples)
    labels = _lut(label_of, samples.class_id)
    mine = torch.arange(len(samples))[rank::world]
    chunks = list(mine.split(batch_size))
    spec = PipeSpec("eval", preset, image_size, layout=layout, dtype=dtype, threads=threads, device_id=device_id)
    decoded = decode_batches((reader.read_many(c.tolist()) for c in chunks), len(chunks), spec, batch_size, 0)
    for idx, x in zip(chunks, decoded):
        yield x, labels[idx]
    reader.close()
