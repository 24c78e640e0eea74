"""The real images of a set of classes, decoded lazily, one class at a time.

Shards hold one class each (manifest.py), and `read_classes` returns samples ordered by (class, key),
so the per-sample class ids of a set follow from the manifest's counts without decoding anything.
Images are decoded only for the classes a caller touches:

* `classes(ids)`: the images of a few classes (exemplar selection and evaluation walk a phase in
  class groups with it, so an ImageNet-1k phase of 640k images never has to sit in memory at once);
* `images`: all of them (the in-memory torch loader; refused above `data.cache_max_gb`, as before);
* `x[mask]` / `x[index]`: the selected samples, decoding only the classes they belong to;
* `samples(index)`: only the selected samples (random access through the shards' index files, decoded
  on `workers` threads);
* `part(ids, rank, world)`: a rank's share of each class (every world-th sample), decoded alone
  (evaluation: no rank decodes another rank's images);
* `lazy(ids)`: the classes' images as a LazyImages, decoded sample by sample when a consumer takes
  them (exemplar selection: a random subset and a few real batches need only those images);
* `select(index)`: chosen samples as a LazyImages, nothing decoded (a stage that trains on part of the
  phase, BiC's held-out split: the DALI loader streams them from the shards, `in_memory` decodes them).

Decoded classes are kept in a per-split cache shared by every set of that split (a class's test
images are decoded once for the whole run) while the set being read fits under `cache_max_gb`;
once a set is larger than that, nothing is kept and the cache is dropped (streaming mode).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from core.runs import bounded_runs
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.reader import check_holds, decode_image, decoded_bytes, read_classes, stored_side
from data_pipeline.shards.samples import SampleReader, phase_samples


def positions(index) -> torch.Tensor:
    """Sample positions of `index`: a boolean mask's true places, or the positions themselves."""
    index = torch.as_tensor(index)
    return torch.nonzero(index).flatten() if index.dtype == torch.bool else index


class ClassCache:
    """Decoded uint8 images per class id (and per (class id, rank, world) for a rank's part), for one
    split of one shard set."""

    def __init__(self) -> None:
        self.images: dict[int | tuple[int, int, int], torch.Tensor] = {}


class _SampleDecoder:
    """Chosen samples of a set, read through the index files (one pread each) and decoded on threads."""

    def __init__(self, manifest: Manifest, split: str, ids: list[int], preset: str, image_size: int, threads: int):
        self.table = phase_samples(manifest, split, ids)          # the set's (class, key) order
        self.reader = SampleReader(self.table)
        self.split, self.preset, self.image_size = split, preset, image_size
        self.threads = self.reader.threads(threads)
        self._pool: ThreadPoolExecutor | None = None

    def _one(self, i: int) -> torch.Tensor:
        t = self.table
        data = self.reader.read(i)
        return torch.from_numpy(decode_image(data, self.preset, self.image_size, self.split,
                                             f"{t.paths[t.shard[i]]}:{t.keys[i]}")).permute(2, 0, 1)

    def decode(self, index: list[int], shape) -> torch.Tensor:
        out = torch.empty((len(index), *shape), dtype=torch.uint8)
        if self.threads > 1 and len(index) > 1:
            if self._pool is None:                     # kept for the set's life: requests are often small
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mnemo-decode")
            images = self._pool.map(self._one, index)
        else:
            images = map(self._one, index)
        for k, img in enumerate(images):
            out[k] = img
        return out


class PhaseImages:
    def __init__(self, manifest: Manifest, split: str, class_ids, preset: str, image_size: int,
                 workers: int = 0, cache_max_gb: float | None = None, cache: ClassCache | None = None):
        self.manifest, self.split, self.preset, self.image_size = manifest, split, preset, image_size
        self.workers, self.cache_max_gb = workers, cache_max_gb
        self.ids = sorted(int(c) for c in class_ids)
        self.counts = dict.fromkeys(self.ids, 0)
        for shard in manifest.shards(split, self.ids):       # one pass over the manifest's shard list
            self.counts[shard.class_id] += shard.samples
        counts = [self.counts[c] for c in self.ids]
        self.class_ids = torch.repeat_interleave(torch.tensor(self.ids, dtype=torch.int64),
                                                 torch.tensor(counts, dtype=torch.int64))
        starts = torch.tensor([0] + counts).cumsum(0).tolist()
        self.offsets = {c: (starts[i], starts[i + 1]) for i, c in enumerate(self.ids)}
        side = stored_side(preset, image_size, split)
        self.shape = (3, side, side)
        self.nbytes = decoded_bytes(len(self.class_ids), side)          # the whole set, decoded
        self.fits = cache_max_gb is None or self.nbytes <= cache_max_gb * 2**30
        self.cache = cache if cache is not None else ClassCache()
        if not self.fits:
            self.cache.images.clear()          # streaming from here on: hold one request at a time
        self._all: torch.Tensor | None = None
        self._decoder: _SampleDecoder | None = None

    def __len__(self) -> int:
        return len(self.class_ids)

    def _decode(self, ids: list[int]) -> dict[int, torch.Tensor]:
        missing = [c for c in ids if c not in self.cache.images]
        out = {c: self.cache.images[c] for c in ids if c in self.cache.images}
        if missing:
            d = read_classes(self.manifest, self.split, missing, self.preset, self.image_size, self.workers, None)
            for c in missing:
                a, b = torch.searchsorted(d.class_ids, torch.tensor([c, c + 1])).tolist()
                out[c] = d.images[a:b]
                if self.fits:
                    self.cache.images[c] = out[c]
        return out

    def classes(self, ids) -> torch.Tensor:
        """uint8 (n, 3, S, S): the images of class ids `ids` in this set's order (by class, then key)."""
        ids = sorted(int(c) for c in ids)
        unknown = [c for c in ids if c not in self.offsets]
        if unknown:
            raise KeyError(f"classes {unknown[:5]} are not in this {self.split} set")
        got = self._decode(ids)
        return torch.cat([got[c] for c in ids]) if ids else torch.empty((0, *self.shape), dtype=torch.uint8)

    def chunks(self, max_bytes: int) -> list[list[int]]:
        """Consecutive runs of this set's class ids, each at most `max_bytes` decoded (at least one class)."""
        per_image = 3 * self.shape[1] * self.shape[2]
        return bounded_runs(self.ids, lambda c: self.counts[c] * per_image, max_bytes)

    def samples(self, index) -> torch.Tensor:
        """uint8 (n, 3, S, S): the samples at `index` (positions in this set), decoding only those, except
        where their class is decoded already."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        out = torch.empty((len(index), *self.shape), dtype=torch.uint8)
        cls = self.class_ids[index]
        todo = torch.ones(len(index), dtype=torch.bool)
        for c in torch.unique(cls).tolist():
            if c in self.cache.images:
                here = cls == c
                out[here] = self.cache.images[c][index[here] - self.offsets[c][0]]
                todo &= ~here
        if todo.any():
            if self._decoder is None:
                self._decoder = _SampleDecoder(self.manifest, self.split, self.ids, self.preset, self.image_size,
                                               self.workers)
            out[todo] = self._decoder.decode(index[todo].tolist(), self.shape)
        return out

    def part_span(self, ids, rank: int, world: int) -> torch.Tensor:
        """Sample indices of rank `rank`'s part of classes `ids`: every world-th sample of each class."""
        return torch.cat([torch.arange(a + rank, b, world) for a, b in (self.offsets[int(c)] for c in sorted(ids))]) \
            if len(ids) else torch.empty(0, dtype=torch.int64)

    def part(self, ids, rank: int, world: int) -> torch.Tensor:
        """uint8 images of `part_span(ids, rank, world)`; with world > 1 only that part is decoded (and
        kept, per class, while the set fits data.cache_max_gb)."""
        if world == 1:
            return self.classes(ids)
        out = []
        for c in sorted(int(c) for c in ids):
            key = (c, rank, world)
            got = self.cache.images.get(key)
            if got is None:
                got = self.samples(self.part_span([c], rank, world))
                if self.fits:
                    self.cache.images[key] = got
            out.append(got)
        return torch.cat(out) if out else torch.empty((0, *self.shape), dtype=torch.uint8)

    def lazy(self, ids) -> torch.Tensor | LazyImages:
        """The images of classes `ids`: a tensor when they are decoded already, else a LazyImages that
        decodes each sample the first time a consumer takes it."""
        ids = sorted(int(c) for c in ids)
        if all(c in self.cache.images for c in ids):
            return self.classes(ids)
        return LazyImages(self, self.span(ids))

    def check_holds(self, nbytes: int) -> None:
        """UserError when the torch loader would hold `nbytes` of this set's images decoded, over data.cache_max_gb."""
        check_holds(nbytes, self.split, self.cache_max_gb)

    def select(self, index) -> LazyImages:
        """The samples at `index` (a mask, or positions in this set) as a LazyImages: nothing is decoded."""
        return LazyImages(self, positions(index).to(torch.int64).reshape(-1))

    def span(self, ids) -> torch.Tensor:
        """Sample indices (into this set) of class ids `ids`, in order."""
        return self.part_span(ids, 0, 1)

    @property
    def images(self) -> torch.Tensor:
        """Everything decoded (the in-memory loader); refused above data.cache_max_gb."""
        self.check_holds(self.nbytes)
        if self._all is None:
            self._all = self.classes(self.ids)
            for c, (a, b) in self.offsets.items():    # cache entries become views: no second copy
                self.cache.images[c] = self._all[a:b]
        return self._all

    def __getitem__(self, index) -> torch.Tensor:
        """Samples by boolean mask or index tensor, decoding only the classes they fall in."""
        index = positions(index)
        touched = torch.unique(self.class_ids[index]).tolist()
        local = self.span(touched)                           # the touched classes' samples, in order
        pos = torch.full((len(self),), -1, dtype=torch.int64)
        pos[local] = torch.arange(len(local))
        return self.classes(touched)[pos[index]]



class LazyImages:
    """Some samples of a PhaseImages, decoded when taken. Indexing (an int, a slice, a mask or an index
    tensor) gives another LazyImages over the chosen samples, decoding nothing; `float()`, `to()` and
    `tensor()` decode what is not decoded yet (kept for the views of one group) and return a uint8 (or
    float) tensor, like the tensor this stands in for. `view` applies to each decoded batch (the model's
    crop of stored train images: augment.model_view)."""

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, source: PhaseImages, index: torch.Tensor, view=None, decoded: dict | None = None):
        self.source, self.index, self.view = source, index, view
        self.decoded = decoded if decoded is not None else {}     # sample -> uint8 (3, S, S), shared by views

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        probe = self.source.shape if self.view is None else self.view(torch.empty((1, *self.source.shape),
                                                                                  dtype=torch.uint8)).shape[1:]
        return torch.Size((len(self), *probe))

    def with_view(self, view) -> LazyImages:
        return LazyImages(self.source, self.index, view, self.decoded)

    def __getitem__(self, key) -> LazyImages:
        if isinstance(key, int):
            key = slice(key, key + 1 if key != -1 else None)
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            key = torch.nonzero(key).flatten()
        return LazyImages(self.source, self.index[key].reshape(-1), self.view, self.decoded)

    def tensor(self, keep: bool = True) -> torch.Tensor:
        """The samples as one tensor. `keep=False` leaves what it decodes out of the shared cache: for a
        caller that reads every image once (herding), so the group is not held twice, cached and stacked."""
        todo = sorted({int(i) for i in self.index.tolist()} - set(self.decoded))
        fresh = dict(zip(todo, self.source.samples(todo))) if todo else {}
        if keep:
            self.decoded.update(fresh)
        have = fresh if not self.decoded else {**self.decoded, **fresh}
        x = torch.stack([have[int(i)] for i in self.index.tolist()]) if len(self) else \
            torch.empty((0, *self.source.shape), dtype=torch.uint8)
        return x if self.view is None else self.view(x)

    def float(self) -> torch.Tensor:
        return self.tensor().float()

    def to(self, *args, **kwargs) -> torch.Tensor:
        return self.tensor().to(*args, **kwargs)


def narrowed(images, index):
    """`images[index]` (a mask, or positions) as lazily as `images` is held: a PhaseImages gives a LazyImages of the
    samples (nothing decoded), a LazyImages another, a tensor its samples."""
    return images.select(index) if isinstance(images, PhaseImages) else images[index]


def in_memory(images) -> torch.Tensor:
    """A stage's real images decoded in host memory (the torch loader): a PhaseImages' `images`, or a LazyImages'
    samples (refused above data.cache_max_gb, as `images` is): while their set fits the cache, by whole classes,
    which stay cached for the phase's later stages (exemplar selection reads them again); beyond it, those samples
    alone. A tensor is itself."""
    if isinstance(images, PhaseImages):
        return images.images
    if not isinstance(images, LazyImages):
        return images
    source = images.source
    source.check_holds(decoded_bytes(len(images), source.shape[-1]))
    x = source[images.index] if source.fits else source.samples(images.index)
    return x if images.view is None else images.view(x)
