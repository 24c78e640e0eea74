"""The selection interface: how an exemplar selection plugs into the exemplar update.

A selection is one module in this package that registers its class; its hyperparameters are its own
`Settings` dataclass, mounted at `exemplars.<name>` in the config. The exemplar update
(exemplars/update.py) groups classes, spreads groups over ranks and calls `select` per group; it never names a
selection. Adjusting old exemplars (`exemplars.adjust_old`) is a plug-in of its own kind (exemplars/adjustments/).

Selections must not depend on the rank or on random augmentation at feature extraction: a group's
exemplars are a function of the model, the group's images and `SelectionContext` only, so every
number of processes gives the same memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from core.registry import Plugin, Registry
from exemplars.codecs.base import Codec
from exemplars.sharding import class_groups

REGISTRY = Registry("exemplars.selection", "exemplars.selections", skip=("base",))
register = REGISTRY.register


@dataclass(frozen=True)
class SelectionContext:
    """What a selection may know of the run: where it is, how to draw its random numbers, the data preset
    (its augmentation), the old classes' exemplars as they stood before this phase's exemplar level
    ({label: float16 pixels}, the same on every rank; set by the exemplar update, read-only), the model
    before this phase and, where the selection asked for one (`snapshot_epoch`), the phase's model as it was
    after that many epochs of its model-level training, and how the memory will store what it selects."""
    seed: int
    phase: int
    device: torch.device
    feature_batch_size: int = 256
    preset: str = "glyphs"
    old_exemplars: Mapping[int, torch.Tensor] = field(default_factory=dict)
    previous: nn.Module | None = None       # Θ_{i-1}, frozen (the strategy's teacher), when the run keeps one
    snapshot: nn.Module | None = None       # Θ_i early in its training (see Selection.snapshot_epoch), or None
    image_size: int = 32                    # the model's input side (data.image_size): what a selection is shown
    codec: Codec | None = None              # how the memory stores exemplars (exemplars/codecs/; None: raw)


class Selection(Plugin):
    """A selection's `Settings` are mounted at exemplars.<name>.

    `takes_lazy_images = True` says that `select` only indexes its `images` (ints, slices, masks, index
    tensors) and takes pixels through `.float()`, `.to()` or `.tensor()`: it is then given a LazyImages
    (data_pipeline/loading/phase_images.py) where the group is not decoded yet, which decodes just the
    samples taken. Otherwise `images` is always a uint8 tensor of the whole group."""
    takes_lazy_images = False

    def __init__(self, settings=None):
        super().__init__(settings)
        self.notes: list[dict] = []       # per optimised group: {"what", "classes", "before", "after"} (events)

    def select(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, group: list[int], m: int,
               ctx: SelectionContext) -> dict[int, torch.Tensor]:
        """E_i for one class group: per label of `group`, at most `m` exemplars as float pixels in [0, 1],
        best first. `images`: the group's real images (uint8, model input size; see takes_lazy_images),
        `labels` theirs."""
        raise NotImplementedError

    def groups(self, classes: list[int], group_size: int) -> list[list[int]]:
        """The class groups (in protocol order) that `select`, and an adjustment of old exemplars, work on:
        `exemplars.group_size` classes each, unless the selection groups its own way. Never by the world size."""
        return class_groups(classes, group_size)

    def snapshot_epoch(self) -> int:
        """Epochs of the phase's model-level training after which the run keeps a copy of the model for this
        selection (`SelectionContext.snapshot`); 0: it needs none (no copy is kept)."""
        return 0


def pick_per_class(images: torch.Tensor, labels: torch.Tensor, group: list[int], order_of) -> dict[int, torch.Tensor]:
    """Per label of `group`: its images at the indices `order_of(label, class_images)` (best first), as
    float pixels in [0, 1]."""
    out = {}
    for label in group:
        cls = images[labels == label]
        out[label] = cls[order_of(label, cls)].float().div_(255)
    return out
