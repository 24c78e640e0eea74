"""The real images of a set of classes, decoded lazily, one class at a time.

Shards hold one class each (manifest.py), and `read_classes` returns samples ordered by (class, key),
so the per-sample class ids of a set follow from the manifest's counts without decoding anything.
Images are decoded only for the classes a caller touches:

* `classes(ids)`: the images of a few classes (exemplar selection and evaluation walk a phase in
  class groups with it, so an ImageNet-1k phase of 640k images never has to sit in memory at once);
* `images`: all of them (the in-memory torch loader; refused above `data.cache_max_gb`, as before);
* `x[mask]` / `x[index]`: the selected samples, decoding only the classes they belong to.

Decoded classes are kept in a per-split cache shared by every set of that split (a class's test
images are decoded once for the whole run) while the set being read fits under `cache_max_gb`;
once a set is larger than that, nothing is kept and the cache is dropped (streaming mode).
"""
from __future__ import annotations

import torch

from core.errors import UserError
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.reader import decoded_bytes, read_classes, stored_side


class ClassCache:
    """Decoded uint8 images per class id, for one split of one shard set."""

    def __init__(self) -> None:
        self.images: dict[int, torch.Tensor] = {}


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
        out: list[list[int]] = []
        size = 0
        for c in self.ids:
            b = self.counts[c] * per_image
            if out and size + b <= max_bytes:
                out[-1].append(c)
                size += b
            else:
                out.append([c])
                size = b
        return out

    def span(self, ids) -> torch.Tensor:
        """Sample indices (into this set) of class ids `ids`, in order."""
        return torch.cat([torch.arange(*self.offsets[int(c)]) for c in sorted(ids)]) if len(ids) else \
            torch.empty(0, dtype=torch.int64)

    @property
    def images(self) -> torch.Tensor:
        """Everything decoded (the in-memory loader); refused above data.cache_max_gb."""
        if not self.fits:
            raise UserError(f"the torch loader would hold {self.nbytes / 2**30:.1f} GiB of decoded {self.split} "
                            f"images in memory, over data.cache_max_gb={self.cache_max_gb}: raise it, or use "
                            "data.loader=dali")
        if self._all is None:
            self._all = self.classes(self.ids)
            for c, (a, b) in self.offsets.items():    # cache entries become views: no second copy
                self.cache.images[c] = self._all[a:b]
        return self._all

    def __getitem__(self, index) -> torch.Tensor:
        """Samples by boolean mask or index tensor, decoding only the classes they fall in."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        touched = torch.unique(self.class_ids[index]).tolist()
        local = self.span(touched)                           # the touched classes' samples, in order
        pos = torch.full((len(self),), -1, dtype=torch.int64)
        pos[local] = torch.arange(len(local))
        return self.classes(touched)[pos[index]]

