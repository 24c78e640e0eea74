"""The exemplar memory: pixel tensors per class label, and the budget policy.

Exemplars are kept per class in priority order, in the stored form of the memory's codec (exemplars/codecs/:
`raw`, the default, is float16 pixels in [0,1] at the model's input size; the paper's exemplars are parameters,
so they are tensors, not files), and decoded to the model's side where they are used (`get`, `tensors`, `view`).
`quota` implements the two memory modes: a fixed number per class, or a fixed total shared by all seen classes
(old classes are trimmed as new ones arrive). A codec that counts bytes turns that number into bytes (`fit`):
each class keeps the longest prefix of its exemplars that costs no more than that many of its original images.
"""
from __future__ import annotations

import uuid
from typing import Mapping

import torch

from exemplars.codecs.base import STORE_DTYPE, Codec, codec_from_dict
from exemplars.codecs.raw import Raw

__all__ = ["STORE_DTYPE", "ExemplarMemory", "quota", "stack_bank"]


def quota(per_class: int, budget: int | None, num_seen: int) -> int:
    """Exemplars per class for `num_seen` classes: budget // num_seen in fixed-total mode."""
    if budget is not None:
        return budget // max(1, num_seen)
    return per_class


def stack_bank(bank: Mapping[int, torch.Tensor], labels, dtype: torch.dtype | None = torch.float32
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(images (N,C,H,W) in `dtype` (None: as the bank holds them), labels int64) of the given classes of a
    {label: images} bank, in the order of `labels` (classes not in the bank are skipped); (None, None) when that is
    no image."""
    labels = [l for l in labels if l in bank]
    if not labels or not any(len(bank[l]) for l in labels):
        return None, None
    xs = [bank[l] if dtype is None else bank[l].to(dtype) for l in labels]
    ys = [torch.full((len(bank[l]),), l, dtype=torch.int64) for l in labels]
    return torch.cat(xs), torch.cat(ys)


class ExemplarMemory:
    """`bank`: {label: stored exemplars} (the codec's form; raw: the pixels). `version` changes with every change of
    the bank (unique across processes), so a checkpoint writer can tell that the memory it saved earlier in the phase
    is still current. `side`: the model's input side, which a codec that stores another decodes to."""

    def __init__(self, codec: Codec | None = None, side: int | None = None):
        self.codec = codec if codec is not None else Raw()
        self.side = side
        self.bank: dict[int, torch.Tensor] = {}
        self._changed()

    def _changed(self) -> None:
        self.version = uuid.uuid4().hex[:16]

    def __len__(self) -> int:
        return sum(len(v) for v in self.bank.values())

    def labels(self) -> list[int]:
        return sorted(self.bank)

    def set(self, label: int, images: torch.Tensor) -> None:
        """Keep `images` (float pixels in [0, 1] at the model's side, best first) as the class's exemplars, in the
        codec's stored form."""
        stored = self.codec.store(images).contiguous()
        # stored tensors are never changed in place (a sealed phase's memory is told apart from them by value),
        # so none may share the caller's storage
        self.bank[int(label)] = stored.clone() if stored.data_ptr() == images.data_ptr() else stored
        self._changed()

    def get(self, label: int) -> torch.Tensor:
        """The class's exemplars as the model sees them (decoded; raw: the stored tensor itself)."""
        if self.codec.parametrises and self.side is None:
            raise ValueError(f"a memory stored by codec '{self.codec.name}' needs the model's side to decode")
        return self.codec.decode(self.bank[int(label)], self.side)

    def view(self, labels=None) -> dict[int, torch.Tensor]:
        """{label: decoded exemplars} of the given (default: all) classes."""
        return {l: self.get(l) for l in (self.labels() if labels is None else labels) if l in self.bank}

    def nbytes(self, label: int) -> torch.Tensor:
        """int64 (n,): what each stored exemplar of the class costs (the codec's count)."""
        return self.codec.nbytes(self.bank[int(label)])

    def trim(self, m: int) -> None:
        for label in list(self.bank):
            self.bank[label] = self.bank[label][:m].clone()
        self._changed()

    def fit(self, budgets: Mapping[int, float]) -> None:
        """Keep, per class of `budgets` ({label: bytes}), the longest prefix of its exemplars that costs no more."""
        for label, budget in budgets.items():
            if int(label) in self.bank:
                n = int((self.nbytes(label).cumsum(0) <= budget).sum())
                self.bank[int(label)] = self.bank[int(label)][:n].clone()
        self._changed()

    def tensors(self, labels=None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(images (N,C,H,W) in `dtype`, labels int64) of the given (default: all) classes, decoded. STORE_DTYPE
        gives the values at half the bytes of float32 (what the loaders keep on the device)."""
        labels = self.labels() if labels is None else labels
        return stack_bank(self.view(labels), labels, dtype)

    def packed(self, labels=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(exemplars (N,C,h,w) of the given (default: all) classes in the codec's packed form, labels int64): what
        a loader keeps on the device for a stage, `unpack`ed per batch to the pixels `tensors(labels, STORE_DTYPE)`
        gives (raw: those pixels; 8-bit forms: uint8 at the stored side, a quarter of `lowres` x1/2's pixels)."""
        labels = self.labels() if labels is None else labels
        return stack_bank({l: self.codec.packed(self.bank[l]) for l in labels if l in self.bank}, labels, None)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """Pixels (STORE_DTYPE, at the model's side) of a batch of `packed` exemplars, where they are."""
        return self.codec.unpack(packed, self.side)

    def state_dict(self) -> dict:
        return {"bank": {int(k): v for k, v in self.bank.items()}}

    @classmethod
    def of_run(cls, sd: dict, exemplars: Mapping | None, side: int | None) -> ExemplarMemory:
        """A sealed memory state read back as the run stored it: `exemplars` is its stored config's section (a
        plain dict), `side` its data.image_size (tools read banks through `view` to see the model's pixels)."""
        memory = cls(codec_from_dict(exemplars), side)
        memory.load_state_dict(sd)
        return memory

    def load_state_dict(self, sd: dict) -> None:
        self.bank = {int(k): v.to(STORE_DTYPE) for k, v in sd["bank"].items()}
        self._changed()
