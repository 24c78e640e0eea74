"""The exemplar memory: pixel tensors per class label, and the budget policy.

Exemplars are stored as float16 pixels in [0,1] at model input size (the paper's exemplars are
parameters, so they are tensors, not files), in priority order per class. `quota` implements the two
memory modes: a fixed number per class, or a fixed total shared by all seen classes (old classes are
trimmed as new ones arrive).
"""
from __future__ import annotations

import uuid
from typing import Mapping

import torch

STORE_DTYPE = torch.float16


def quota(per_class: int, budget: int | None, num_seen: int) -> int:
    """Exemplars per class for `num_seen` classes: budget // num_seen in fixed-total mode."""
    if budget is not None:
        return budget // max(1, num_seen)
    return per_class


def stack_bank(bank: Mapping[int, torch.Tensor], labels, dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(images (N,C,H,W) in `dtype`, labels int64) of the given classes of a {label: images} bank, in the
    order of `labels` (classes not in the bank are skipped); (None, None) when that is no image."""
    labels = [l for l in labels if l in bank]
    if not labels or not any(len(bank[l]) for l in labels):
        return None, None
    xs = [bank[l].to(dtype) for l in labels]
    ys = [torch.full((len(bank[l]),), l, dtype=torch.int64) for l in labels]
    return torch.cat(xs), torch.cat(ys)


class ExemplarMemory:
    """`version` changes with every change of the bank (unique across processes), so a checkpoint
    writer can tell that the memory it saved earlier in the phase is still current."""

    def __init__(self):
        self.bank: dict[int, torch.Tensor] = {}
        self._changed()

    def _changed(self) -> None:
        self.version = uuid.uuid4().hex[:16]

    def __len__(self) -> int:
        return sum(len(v) for v in self.bank.values())

    def labels(self) -> list[int]:
        return sorted(self.bank)

    def set(self, label: int, images: torch.Tensor) -> None:
        stored = images.detach().to("cpu", STORE_DTYPE).contiguous()
        # stored tensors are never changed in place (a sealed phase's memory is told apart from them by value),
        # so none may share the caller's storage
        self.bank[int(label)] = stored.clone() if stored.data_ptr() == images.data_ptr() else stored
        self._changed()

    def get(self, label: int) -> torch.Tensor:
        return self.bank[int(label)]

    def trim(self, m: int) -> None:
        for label in list(self.bank):
            self.bank[label] = self.bank[label][:m].clone()
        self._changed()

    def tensors(self, labels=None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(images (N,C,H,W) in `dtype`, labels int64) of the given (default: all) classes. STORE_DTYPE
        gives the stored values at half the bytes of float32 (what the loaders keep on the device)."""
        return stack_bank(self.bank, self.labels() if labels is None else labels, dtype)

    def state_dict(self) -> dict:
        return {"bank": {int(k): v for k, v in self.bank.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.bank = {int(k): v.to(STORE_DTYPE) for k, v in sd["bank"].items()}
        self._changed()
