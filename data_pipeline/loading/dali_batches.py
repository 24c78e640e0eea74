"""The DALI loader of a phase: real images straight from the phase's shards, decoded and augmented by
DALI, mixed with exemplar tensors, split over ranks by the shared epoch plan (batch_plan.py).

Same interface and semantics as PhaseBatches (the in-memory torch loader): `steps_per_epoch`, and
`epoch(e)` yielding (x, y) with every sample once per epoch across ranks, equal steps on every rank,
deterministic in (seed, epoch); real samples are indexed in the same (class id, key) order, so both
loaders put the same samples in the same batches. Only the shards of the phase's classes are read
(through their DALI index files). Exemplars (pixels in memory, not files) get the light augmentation
of augment.py (pad-crop, flip where the preset allows) on the device the batch lives on, where they
stay for the stage (on_device.py), and are cast to the batch's layout and dtype. The pipeline is
built once per stage; the real images' random crop, translation and flip are drawn on the host from
(seed, epoch, rank) (dali_draws.py), so a resumed stage sees the same epochs as an uninterrupted one.
nvidia.dali is imported lazily, through dali_pipeline.py only.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from core import seeds
from core.ranks import SINGLE, DistInfo
from data_pipeline.loading.augment import augment_exemplars, device_generator
from data_pipeline.loading.batch_plan import BatchPlan
from data_pipeline.loading.dali_draws import image_size_of, train_draws
from data_pipeline.loading.on_device import ExemplarBank, device_id, plan_on
from data_pipeline.loading.prefetch import prefetched
from data_pipeline.loading.settings import LoaderOutput
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.samples import SampleReader, phase_samples

MAX_READ_THREADS = 8                 # threads reading ahead of the pipeline (data.workers, at most this)


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
    """One stage's batches; the DALI pipeline is built at the first epoch and serves every epoch of the
    stage (`close()` releases it). Reads run ahead of the steps on `threads` threads."""
    loader = "dali"

    def __init__(self, manifest: Manifest, class_ids, plan: BatchPlan, out: LoaderOutput,
                 exemplars: tuple[torch.Tensor, torch.Tensor] | None = None, label_of: dict[int, int] | None = None,
                 split: str = "train", index: torch.Tensor | None = None):
        """`plan.dist.device`: where batches come out (a GPU decodes there, with nvJPEG); `exemplars`: (pixels,
        labels) kept there for the stage; `label_of`: incremental label of each class id (default: the ids);
        `index`: the stage's real samples, as positions in the classes' (class id, key) order (default: all).
        `out.as_stored` applies to the real images after DALI's augmentation."""
        from data_pipeline.loading.dali_pipeline import PipeSpec

        self.device = plan.dist.device
        self.samples = phase_samples(manifest, split, class_ids)
        self.reader = SampleReader(self.samples)                   # every shard of the phase stays open
        self.index = torch.arange(len(self.samples)) if index is None else torch.as_tensor(index, dtype=torch.int64)
        # incremental labels (or class ids) of the stage's real samples, by their position in the stage
        self.labels = _lut(label_of, self.samples.class_id)[self.index].to(self.device)
        self.ex = ExemplarBank.of(exemplars, self.device)
        self.n_real, self.n_ex = len(self.index), len(self.ex)
        self.as_stored = out.as_stored
        if self.n_real + self.n_ex < plan.dist.world:
            raise ValueError(f"phase has {self.n_real + self.n_ex} training samples for {plan.dist.world} ranks")
        self.batch_plan, self.preset = plan, out.preset
        self.spec = PipeSpec("train", out.preset, out.image_size, layout=out.layout, dtype=out.dtype,
                             threads=out.threads, device_id=device_id(self.device))
        self.read_threads = self.reader.threads(min(MAX_READ_THREADS, out.threads))
        # image sizes from the headers (random-resized-crop windows need them), read once per sample
        self.sizes = np.full((len(self.samples), 2), -1, dtype=np.int64) if out.preset == "imagenet" else None
        self._pipe = None
        self._feed: Iterator | None = None
        self.pipelines_built = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.batch_plan.steps(self.n_real, self.n_ex)

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def opened_shards(self) -> set[str]:
        return set(self.reader.opened)

    @property
    def max_batch(self) -> int:
        """The most real images a rank's step can hold (a global batch's tail may join the one before)."""
        world = self.batch_plan.dist.world
        return -(-(self.batch_plan.global_batch + world) // world)

    def plan(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.batch_plan.epoch(self.n_real, self.n_ex, epoch)

    def _read(self, idx: torch.Tensor) -> list[np.ndarray]:
        """The encoded images of the stage's real samples `idx` (and their sizes, read once)."""
        pos = self.index[idx].tolist()
        encoded = self.reader.read_many(pos)
        if self.sizes is not None:
            for i, data in zip(pos, encoded):
                if self.sizes[i, 0] < 0:
                    self.sizes[i] = image_size_of(data, f"{self.samples.paths[self.samples.shard[i]]}:"
                                                        f"{self.samples.keys[i]}")
        return encoded

    def _batches(self, real_steps: list[torch.Tensor], epoch: int) -> Iterator[tuple]:
        """The pipeline's input for each step with real images: (encoded, *draws), read ahead."""
        rng = np.random.default_rng(seeds.seed_of("dali_draws", self.batch_plan.seed, epoch, self.batch_plan.dist.rank))
        for idx, encoded in zip(real_steps, prefetched(self._read, real_steps, self.read_threads)):
            sizes = self.sizes[self.index[idx].numpy()] if self.sizes is not None else None
            yield (encoded, *train_draws(rng, self.preset, sizes, len(idx)))

    def _next_input(self):
        return next(self._feed)            # StopIteration ends the pipeline's epoch

    def _pipeline(self):
        from data_pipeline.loading.dali_pipeline import build_pipeline

        if self._pipe is None:
            self._pipe = build_pipeline(self._next_input, self.spec, self.max_batch)
            self.pipelines_built += 1
        return self._pipe

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from data_pipeline.loading.dali_pipeline import to_torch

        plan = self.plan(epoch)
        real_steps = [r for r, _ in plan if len(r)]
        self._feed = self._batches(real_steps, epoch)
        pipe = self._pipeline() if real_steps else None
        g = self.batch_plan.augment_generator(epoch)
        g_dev = device_generator(g, self.device)
        g_stored = self.batch_plan.stored_generator(epoch) if self.as_stored is not None else None
        finished = False
        try:
            for (real_idx, ex_idx), (real_dev, ex_dev) in zip(plan, plan_on(plan, self.device)):
                parts, labels = [], []
                if len(real_idx):
                    (out,) = pipe.run()
                    x = to_torch(out, self.spec)
                    parts.append(x if self.as_stored is None else self.stored_view(x, g_stored))
                    labels.append(self.labels[real_dev])
                if len(ex_idx):
                    x, y = self.ex.take(ex_dev)
                    parts.append(to_layout(augment_exemplars(x, self.preset, g_dev), self.spec.layout, self.spec.dtype))
                    labels.append(y)
                yield torch.cat(parts), torch.cat(labels)
            if pipe is not None:
                try:
                    pipe.run()             # the feed is spent: DALI ends its epoch ...
                except StopIteration:
                    pipe.reset()           # ... and the next one starts from the next feed
                    finished = True
            else:
                finished = True
        finally:
            self._feed.close()
            if not finished:               # left mid-epoch: the pipeline holds this epoch's prefetch
                self.close()

    def stored_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """`as_stored` on a batch in the pipeline's layout (NHWC: through logical NCHW)."""
        if self.spec.layout != "NHWC":
            return self.as_stored(x, g)
        return self.as_stored(x.permute(0, 3, 1, 2), g).permute(0, 2, 3, 1).contiguous()

    def close(self) -> None:
        """Release the pipeline (a later epoch builds a new one)."""
        self._pipe = None


def dali_eval_batches(manifest: Manifest, split: str, class_ids, batch_size: int, out: LoaderOutput,
                      dist: DistInfo = SINGLE, label_of: dict[int, int] | None = None,
                      indices: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Eval-transformed batches of the classes' samples at `indices` (positions in (class id, key)
    order; default: this rank's strided slice, rank::world), `batch_size` at a time, in that order, on
    `dist.device`. Only those samples are read and decoded."""
    from data_pipeline.loading.dali_pipeline import PipeSpec, decode_batches

    samples = phase_samples(manifest, split, class_ids)
    reader = SampleReader(samples)
    labels = _lut(label_of, samples.class_id)
    mine = torch.arange(len(samples))[dist.rank::dist.world] if indices is None else torch.as_tensor(indices)
    chunks = list(mine.split(batch_size))
    spec = PipeSpec("eval", out.preset, out.image_size, layout=out.layout, dtype=out.dtype, threads=out.threads,
                    device_id=device_id(dist.device))
    decoded = decode_batches(prefetched(lambda c: reader.read_many(c.tolist()), chunks,
                                        reader.threads(min(MAX_READ_THREADS, out.threads))), len(chunks),
                             spec, batch_size)
    for idx, x in zip(chunks, decoded):
        yield x, labels[idx]
    reader.close()
