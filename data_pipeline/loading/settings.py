"""The `data` config section: where the shards are and how the loaders decode and augment them; and
`LoaderOutput`, what a loader hands the model."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

DATA_PRESETS = ("glyphs", "cifar", "imagenet")
LOADERS = ("torch", "dali", "auto")


@dataclass
class DataSettings:
    shards: str = "data/glyphs"          # directory holding manifest.json
    preset: str = "glyphs"               # augmentation/eval transforms: glyphs | cifar | imagenet
    image_size: int = 32                 # model input side in pixels
    loader: str = "torch"                # torch | dali | auto
    cache_max_gb: float = 8.0            # the torch loader keeps a phase's decoded images in memory
    workers: int = 2                     # decode threads/processes
    exemplar_share: Optional[float] = None   # exemplars' share of each batch; null: as samples of D ∪ E


@dataclass(frozen=True)
class LoaderOutput:
    """What a loader hands the model: the preset's transforms (augment.py) at side `image_size`, in `layout`
    (NCHW, NHWC, or channels_last: logical NCHW over NHWC memory) and `dtype`, made on `threads` threads; real
    training images shown as the exemplar memory stores them where `as_stored` says (augment.AsStored)."""
    preset: str
    image_size: int
    layout: str = "NCHW"
    dtype: torch.dtype = torch.float32
    threads: int = 2
    as_stored: Callable | None = None
