"""Decode the shards of chosen classes into one in-memory uint8 tensor (webdataset + PIL).

Used through phase_images.PhaseImages, which calls it per class (lazily) for the torch fallback
loader, exemplar selection and evaluation. The stored side is the model
input side for 32 px presets; for the imagenet preset the train images are kept at 256/224 of it so
random-resized-crop has room, and eval images are resize(256/224 S) + centre crop S (the standard),
with the arithmetic of the DALI pipeline (image_codec.resize_and_centre_crop), so both loaders see
the same pixels.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from core.errors import UserError
from data_pipeline.shards.image_codec import open_rgb, resize_and_centre_crop, resize_square
from data_pipeline.shards.manifest import Manifest


@dataclass
class DecodedSet:
    images: torch.Tensor        # uint8 (N, 3, S, S)
    class_ids: torch.Tensor     # int64 (N,), dataset class ids (manifest)

    def __len__(self) -> int:
        return len(self.class_ids)


def stored_side(preset: str, image_size: int, split: str) -> int:
    if preset == "imagenet" and split == "train":
        return round(image_size * 256 / 224)
    return image_size


def _to_square(img: Image.Image, preset: str, side: int, image_size: int, split: str) -> np.ndarray:
    if preset == "imagenet" and split != "train":
        img = resize_and_centre_crop(img, round(image_size * 256 / 224), image_size)
    elif img.size != (side, side):
        img = resize_square(img, side)
    return np.asarray(img)


def decode_image(data, preset: str, image_size: int, split: str, name: str = "") -> np.ndarray:
    """One encoded image as the stored uint8 HWC array of `split` (what read_classes holds per sample)."""
    img = open_rgb(bytes(data), name=name)
    return np.array(_to_square(img, preset, stored_side(preset, image_size, split), image_size, split))


def decoded_bytes(samples: int, side: int) -> int:
    """Memory of `samples` decoded uint8 images of 3 x side x side."""
    return samples * 3 * side * side


def check_holds(nbytes: int, split: str, cache_max_gb: float | None) -> None:
    """UserError when the torch loader would hold `nbytes` of decoded `split` images, over data.cache_max_gb."""
    if cache_max_gb is not None and nbytes > cache_max_gb * 2**30:
        raise UserError(f"the torch loader would hold {nbytes / 2**30:.1f} GiB of decoded {split} images in memory, "
                        f"over data.cache_max_gb={cache_max_gb}: raise it, or use data.loader=dali")


def read_classes(manifest: Manifest, split: str, class_ids, preset: str, image_size: int,
                 workers: int = 0, cache_max_gb: float | None = None) -> DecodedSet:
    """All samples of `class_ids` in `split`, decoded, in a deterministic order (class, key)."""
    class_ids = sorted(int(c) for c in class_ids)
    shards = manifest.shards(split, class_ids)
    side = stored_side(preset, image_size, split)
    n = sum(s.samples for s in shards)
    check_holds(decoded_bytes(n, side), split, cache_max_gb)
    images = np.empty((n, side, side, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    keys: list[tuple[int, str]] = []
    ext = manifest.encoding
    if not shards:
        return DecodedSet(torch.empty((0, 3, side, side), dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    urls = [str(manifest.path(s)) for s in shards]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None)
    i = 0
    for sample in ds:
        key = sample["__key__"]
        if ext not in sample or "lbl" not in sample:
            raise UserError(f"shard sample {sample.get('__url__', '?')}:{key} lacks its .{ext} or .lbl part: "
                            "the shards do not match the manifest; re-create them")
        if i >= n:
            raise UserError(f"the {split} shards of {manifest.root} hold more samples than manifest.json says: "
                            "re-create the shards")
        cid = struct.unpack("<i", sample["lbl"])[0]
        img = open_rgb(sample[ext], name=f"{sample.get('__url__', '')}:{key}")
        images[i] = _to_square(img, preset, side, image_size, split)
        labels[i] = cid
        keys.append((cid, key))
        i += 1
    if i != n:
        raise UserError(f"the {split} shards of {manifest.root} hold {i} samples but manifest.json says {n}: "
                        "re-create the shards")
    unexpected = set(labels.tolist()) - set(class_ids)
    if unexpected:
        raise UserError(f"shards of {manifest.root} contain classes {sorted(unexpected)[:5]} that the manifest "
                        "does not list for them: re-create the shards")
    order = sorted(range(n), key=lambda j: keys[j])
    images_t = torch.from_numpy(images[order]).permute(0, 3, 1, 2).contiguous()
    return DecodedSet(images_t, torch.from_numpy(labels[order]))
