"""Batch augmentations on float [0,1] NCHW tensors, seeded by a torch.Generator.

Shared by real images (fallback loader) and exemplar tensors (which are pixels, not files), so both
get the same, reproducible treatment on the device they live on. Flip and pad-crop draw their random
numbers with the generator on its own device (`device_generator` gives one on the batch's device)
and never read a device value on the host: on a GPU they queue kernels and never wait for them.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Horizontal flips change the meaning of characters (b/d, p/q): the glyph preset never flips.
FLIP = {"glyphs": False, "cifar": True, "imagenet": True}
PAD = {"glyphs": 2, "cifar": 4, "imagenet": 0}


def device_generator(g: torch.Generator, device: torch.device) -> torch.Generator:
    """`g` itself on the CPU; on another device a generator there, seeded by one draw of `g` (so runs on
    CPU keep their exact draws, and a GPU batch's augmentation never waits for a host draw)."""
    device = torch.device(device)
    if device.type == "cpu":
        return g
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return torch.Generator(device=device).manual_seed(seed)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each sample with probability 1/2 (`g` on x's device)."""
    flip = torch.rand(x.shape[0], generator=g, device=g.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_pad_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad` and crop back at a random offset per sample (translation; `g` on x's device)."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device)
    rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])            # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])            # (n, w)
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]   # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def random_resized_crop(x: torch.Tensor, size: int, g: torch.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Per-sample random-resized-crop (Inception style) to size x size."""
    n, _, h, w = x.shape
    out = torch.empty((n, x.shape[1], size, size), dtype=x.dtype)
    area = h * w
    for i in range(n):
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(*scale, generator=g))
            logr = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
            ar = math.exp(float(logr))
            cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                break
        else:
            ch = cw = min(h, w)
            top, left = (h - ch) // 2, (w - cw) // 2
        crop = x[i: i + 1, :, top: top + ch, left: left + cw]
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top: top + size, left: left + size]


def model_view(x: torch.Tensor, size: int) -> torch.Tensor:
    """A train image as the model sees it without augmentation: imagenet-preset train images are stored
    at 256/224 of the input side (room for random-resized-crop), so they are centre-cropped to `size`
    (the eval view). Exemplars, herding features and imprinted weights use this view, so exemplars have
    the model's input size and mix with real batches. No-op when the side already is `size`."""
    return x if x.shape[-1] == size else center_crop(x, size)


def augment_real(x: torch.Tensor, preset: str, size: int, g: torch.Generator) -> torch.Tensor:
    """Training augmentation of a real batch (float [0,1])."""
    if preset == "imagenet":
        x = random_resized_crop(x, size, g)
    else:
        if x.shape[-1] != size:
            x = center_crop(x, size)
        x = random_pad_crop(x, PAD[preset], g)
    return random_flip(x, g) if FLIP[preset] else x


def augment_exemplars(x: torch.Tensor, preset: str, g: torch.Generator) -> torch.Tensor:
    """Light augmentation for exemplar tensors: pad-crop (and flip where the preset allows)."""
    x = random_pad_crop(x, PAD[preset] or max(1, x.shape[-1] // 16), g)
    return random_flip(x, g) if FLIP[preset] else x


@dataclass(frozen=True)
class AsStored:
    """Real training images shown as the exemplar memory stores them (`exemplars.real_as_stored`): each, with
    probability `share`, replaced by `round_trip(image)` (the memory codec's store and decode) after its
    augmentation, so that the form exemplars are stored in (a lower resolution, a lossy code) is no cue to a class
    being old (runs use it from phase 1 on, where there are old classes). The draws come from a generator of their
    own (BatchPlan.stored_generator), on the CPU, so the augmentation's draws are the same with and without it."""
    share: float
    round_trip: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        pick = (torch.rand(len(x), generator=g) < self.share).to(x.device, non_blocking=True)
        return torch.where(pick[:, None, None, None], self.round_trip(x), x)
