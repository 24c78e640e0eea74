"""Moving a stage's fixed data to the device once, so that a training step never copies from the host
what it could have had there already, and never indexes a device tensor with host indices (each such
index is a blocking host-to-device copy, a stream synchronisation on a GPU).

* `ExemplarBank`: the stage's exemplar tensors, kept in their stored dtype (float16: 6 GB for the
  20k exemplars of ImageNet-1k at 224 px) on the device the batches are assembled on, with their labels.
* `plan_on`: an epoch plan's index tensors on that device, in one copy per epoch.
On the CPU both are the identity: CPU runs are unchanged, bit for bit.
"""
from __future__ import annotations

import torch


def device_id(device: torch.device) -> int | None:
    """A torch device as DALI names it: the GPU's index, None for the CPU."""
    return (device.index or 0) if device.type == "cuda" else None


def _copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; a host tensor travels through pinned memory, without a stream synchronisation."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class ExemplarBank:
    """Exemplar images (stored dtype) and labels of one stage, on `device`."""

    def __init__(self, images: torch.Tensor | None, labels: torch.Tensor | None, device: torch.device):
        self.device = torch.device(device)
        self.labels = _copy(labels if labels is not None else torch.empty(0, dtype=torch.int64), self.device)
        self.images = _copy(images, self.device) if images is not None else None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 images and labels at `idx` (a tensor on the bank's device)."""
        return self.images[idx].float(), self.labels[idx]


def plan_on(plan: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The plan's (real, exemplar) index tensors on `device`: one copy for the whole epoch."""
    device = torch.device(device)
    if device.type == "cpu" or not plan:
        return plan
    sizes = [len(t) for step in plan for t in step]
    flat = _copy(torch.cat([t for step in plan for t in step]), device).split(sizes)
    return [(flat[2 * s], flat[2 * s + 1]) for s in range(len(plan))]
