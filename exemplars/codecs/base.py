"""How an exemplar storage form plugs into the memory.

The memory (exemplars/memory.py) keeps each exemplar in its codec's stored form and decodes it where it is used:
`store` takes float pixels in [0, 1] at the model's input side and gives the stored tensor (float16; a form of
8-bit pixels keeps exact multiples of 1/255, which float16 holds exactly), `decode` gives float pixels at the
model's side back, and `nbytes` says what each stored exemplar costs, a function of the stored tensor alone (so
nothing beside the bank is kept, sent between ranks or sealed). A codec that counts bytes fills a byte budget: the
bytes of as many of the class's original training images as the budget names (`exemplars.per_class` or
`exemplars.budget`), as the shards store them. `raw` (the memory before codecs) counts images instead.

A codec is one module in this package that registers its class; its settings are its own `Settings` dataclass,
mounted at `exemplars.<name>` beside the selections' and adjustments' (one namespace of names). Like a selection,
it must not depend on the rank: every rank stores the same exemplars the same way.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch

from core.registry import Plugin, Registry

REGISTRY = Registry("exemplars.codec", "exemplars.codecs", skip=("base",))
register = REGISTRY.register
STORE_DTYPE = torch.float16


def quantise(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels of float `x` in [0, 1] (rounded to the nearest level)."""
    return x.detach().float().mul(255).round_().clamp_(0, 255).to(torch.uint8)


def as_levels(x8: torch.Tensor) -> torch.Tensor:
    """The stored tensor of uint8 pixels: their levels k / 255 in STORE_DTYPE (quantise(as_levels(q)) == q, and
    as_levels(quantise(s)) == s for such a stored `s`: float16 holds k / 255 within 1/8 of a level)."""
    return x8.to(torch.float32).div_(255).to(STORE_DTYPE)


class Codec(Plugin):
    """A codec's `Settings` are mounted at exemplars.<name>."""
    counts_bytes: ClassVar[bool] = True     # False: the memory counts exemplars, one per budget image
    # True: the stored form is pixels of its own (another side) that `decode` maps differentiably to the model's,
    # and `store(decode(s)) == s` for a stored `s`: an optimised exemplar is optimised as the stored tensor
    parametrises: ClassVar[bool] = False

    def store(self, images: torch.Tensor) -> torch.Tensor:
        """The stored form (STORE_DTYPE, on the CPU) of float pixels (n, C, S, S) in [0, 1] at the model's side."""
        raise NotImplementedError

    def decode(self, stored: torch.Tensor, side: int) -> torch.Tensor:
        """Float pixels (n, C, side, side) of a stored form (in `stored`'s dtype; the same tensor where the form is
        the pixels themselves); differentiable where the codec `parametrises`."""
        return stored

    def nbytes(self, stored: torch.Tensor) -> torch.Tensor:
        """int64 (n,): the bytes each stored exemplar costs."""
        raise NotImplementedError

    def packed(self, stored: torch.Tensor) -> torch.Tensor:
        """The form a loader keeps on the device for a stage (the stored tensor; 8-bit forms: uint8, half the bytes),
        unpacked per batch where it is used (`unpack`)."""
        return stored

    def unpack(self, packed: torch.Tensor, side: int) -> torch.Tensor:
        """Pixels (n, C, side, side) of a batch of packed exemplars, on their device: bit for bit what `decode` gives
        for the stored exemplars they pack."""
        return self.decode(packed, side)

    def store_here(self, images: torch.Tensor) -> torch.Tensor:
        """What `store` gives, on `images`' device. A codec whose store is tensor arithmetic computes it there, so a
        batch on a GPU never visits the host; the default stores on the CPU and moves the result back."""
        return self.store(images).to(images.device)

    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """Float pixels (n, C, S, S) in [0, 1] as the memory would give them back after storing them: `decode(store)`,
        on `images`' device and in their dtype (exemplars.real_as_stored shows real images so); the store runs
        there too where the codec computes it on any device (`store_here`)."""
        side = images.shape[-1]
        return self.decode(self.store_here(images), side).to(images.dtype)

    def describe(self) -> str:
        return self.name

    def check(self, side: int) -> None:
        """ValueError naming the setting when the codec cannot store exemplars of this side (checked at start)."""


class EightBit(Codec):
    """A codec whose stored values are 8-bit levels (`as_levels`): packed as those levels, one byte a value."""

    def packed(self, stored: torch.Tensor) -> torch.Tensor:
        return quantise(stored)

    def unpack(self, packed: torch.Tensor, side: int) -> torch.Tensor:
        return self.decode(as_levels(packed), side)


def codec_from_dict(exemplars: Mapping | None) -> Codec:
    """The codec a stored config's `exemplars` section (a plain dict) names: raw where it names none (a run from
    before codecs)."""
    section = exemplars or {}
    name = section.get("codec", "raw")
    cls = REGISTRY.get(name)
    kind = cls.settings_type()
    return cls(kind(**(section.get(name) or {})) if kind is not None else None)


def build_codec(exemplars) -> Codec:
    """The codec named by `exemplars.codec` (the exemplars config section), with its own settings; None: raw."""
    name = getattr(exemplars, "codec", "raw") if exemplars is not None else "raw"
    return REGISTRY.get(name)(getattr(exemplars, name, None))
