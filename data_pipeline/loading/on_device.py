"""Moving a stage's fixed data to the device once, so that a training step never copies from the host
what it could have had there already, and never indexes a device tensor with host indices (each such
index is a blocking host-to-device copy, a stream synchronisation on a GPU).

* `ExemplarBank`: the stage's exemplar tensors, kept in their stored dtype (float16: 6 GB for the
  20k exemplars of ImageNet-1k at 224 px) or in the memory's packed form (8-bit codecs: uint8 at the stored side,
  unpacked per batch where it is used) on the device the batches are assembled on, with their labels.
* `plan_on`: an epoch plan's index tensors on that device, in one copy per epoch.
On the CPU both are the identity: CPU runs are unchanged, bit for bit.

Host tensors reach a GPU through two pinned staging buffers of STAGE_BYTES each, made once per process and
reused by every stage (`staged_copy`). Pinning each stage's 3-6 GB bank instead would go through torch's caching
host allocator, which rounds each block up to a power of two and keeps it: up to ~12 GB of page-locked memory
per rank, ~96 GB per node, over a run.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

STAGE_BYTES = 64 << 20
_STAGING: dict[str, list[torch.Tensor]] = {}


def device_id(device: torch.device) -> int | None:
    """A torch device as DALI names it: the GPU's index, None for the CPU."""
    return (device.index or 0) if device.type == "cuda" else None


def _staging(pinned: bool) -> list[torch.Tensor]:
    key = "pinned" if pinned else "pageable"
    if key not in _STAGING:
        _STAGING[key] = [torch.empty(STAGE_BYTES, dtype=torch.uint8, pin_memory=pinned) for _ in range(2)]
    return _STAGING[key]


def staged_copy(t: torch.Tensor, device: torch.device, chunk: int = STAGE_BYTES) -> torch.Tensor:
    """Host tensor `t` on `device`, copied in chunks through the two reused staging buffers: while one chunk
    travels to the device (asynchronously on a GPU), the next is copied into the other buffer; a buffer is
    refilled only once its last copy has finished (an event on a GPU). `chunk` <= STAGE_BYTES."""
    device = torch.device(device)
    out = torch.empty(t.shape, dtype=t.dtype, device=device)
    if t.numel() == 0:
        return out
    src, dst = t.contiguous().view(-1).view(torch.uint8), out.view(-1).view(torch.uint8)
    gpu = device.type == "cuda"
    buffers, done = _staging(pinned=gpu), [None, None]
    for i, start in enumerate(range(0, len(src), chunk)):
        k, n = i % 2, min(chunk, len(src) - start)
        if done[k] is not None:
            done[k].synchronize()
        buffers[k][:n].copy_(src[start:start + n])
        dst[start:start + n].copy_(buffers[k][:n], non_blocking=gpu)
        if gpu:
            done[k] = torch.cuda.Event()
            done[k].record(torch.cuda.current_stream(device))
    return out


def _copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; a host tensor travels through the reused pinned buffers (staged_copy)."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return staged_copy(t, device)
    return t.to(device)


class ExemplarBank:
    """Exemplar images (stored dtype, or packed with `unpack` to pixels) and labels of one stage, on `device`."""

    def __init__(self, images: torch.Tensor | None, labels: torch.Tensor | None, device: torch.device,
                 unpack: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.device = torch.device(device)
        self.labels = _copy(labels if labels is not None else torch.empty(0, dtype=torch.int64), self.device)
        self.images = _copy(images, self.device) if images is not None else None
        self.unpack = unpack

    @classmethod
    def of(cls, exemplars: tuple | None, device: torch.device) -> ExemplarBank:
        """The bank of a loader's `exemplars`: None, (images, labels) or (packed, labels, unpack)."""
        images, labels, *unpack = exemplars or (None, None)
        return cls(images, labels, device, *unpack)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 images and labels at `idx` (a tensor on the bank's device)."""
        x = self.images[idx]
        return (x if self.unpack is None else self.unpack(x)).float(), self.labels[idx]


def plan_on(plan: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The plan's (real, exemplar) index tensors on `device`: one copy for the whole epoch."""
    device = torch.device(device)
    if device.type == "cpu" or not plan:
        return plan
    sizes = [len(t) for step in plan for t in step]
    flat = _copy(torch.cat([t for step in plan for t in step]), device).split(sizes)
    return [(flat[2 * s], flat[2 * s + 1]) for s in range(len(plan))]
