"""The `folds` adjustment: the paper's Eq. 10, old exemplars adjusted by k-fold cross-validation.

Each old class's exemplars are dealt into `k` folds (the paper: k = 2, E^A and E^B); every fold is optimised
as the exemplar set of the unrolled objective (Eq. 8-9, exemplars/objectives/unrolled.py) with the other folds
as its real data, at rate β2 (`lr`). The inner loop, the real batch size and any key left to inherit come from the
section of the selection that descends pixels (`exemplars.mnemonics` with the paper's method, whose units the rate
is then in; `exemplars.optimised` otherwise, also under herding or random). Every fold is
validated against the *unadjusted* complement (Eq. 10a and 10b both read the pre-adjustment E^A / E^B), so
the result does not depend on the fold order. Where the memory stores exemplars at a lower resolution
(exemplars.codec=lowres), a fold's stored pixels descend through the decode, as the new exemplars' do.
`anchor` > 0 adds (anchor/2)·||E - E_stored||², a pull towards the stored pixels (0 = the paper's Eq. 10). The
outer loop is its own (`epochs`, `steps_per_epoch`, `lr_halve_every`; None = the same as the new exemplars' keys
in that section), and so are the momentum and augmentation (the paper's plain SGD on unaugmented folds by
default). Settings: `exemplars.folds`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from core import seeds
from exemplars.adjustments.base import Adjustment, register
from exemplars.objectives.base import Trace, group_augment, stack_group, unstack_group
from exemplars.objectives.unrolled import Unrolled
from exemplars.pixel_descent import Schedule, descend_stored, tensor_batches
from exemplars.selections.optimised import descent_section, optimised_settings_type

# Eq. 10 on the new exemplars' outer loop (`exemplars.optimised` epochs, steps_per_epoch, lr_halve_every): what
# a stored config that lacks these keys ran, being written before Eq. 10 had an outer loop of its own.
INHERIT = {"epochs": None, "steps_per_epoch": None, "lr_halve_every": None}


@dataclass
class FoldSettings:
    k: int = 2                           # folds each class's exemplars are split into (2 = the paper's A/B)
    lr: float = 0.01                     # β2, the adjustment's pixel rate (the paper: 0.01)
    anchor: float = 0.0                  # weight of the pull towards the stored pixels (0 = the paper's Eq. 10)
    momentum: float = 0.0                # heavy-ball momentum of the pixel steps (0 = plain SGD, the paper)
    augment: bool = False                # the model-level exemplar augmentation on the folds (the paper: no)
    epochs: Optional[int] = 50           # outer epochs (the paper's 50; None: the section's epochs)
    steps_per_epoch: Optional[int] = 1   # outer steps per epoch (None: the section's)
    lr_halve_every: Optional[int] = 10   # β2 halved every so many epochs (None: the section's)

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"folds: k must be >= 2, got {self.k}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"folds: momentum must be in [0, 1), got {self.momentum}")
        if self.anchor < 0:
            raise ValueError(f"folds: anchor must be >= 0, got {self.anchor}")
        for key in INHERIT:
            value, least = getattr(self, key), 1 if key == "lr_halve_every" else 0
            if value is not None and (not isinstance(value, int) or value < least):
                raise ValueError(f"folds: {key} must be an integer >= {least} or null, got {value!r}")


def fold_ids(labels: Tensor, folds: int, generator: torch.Generator) -> Tensor:
    """Fold index per exemplar: each class's exemplars are permuted with the generator and dealt
    round-robin into `folds` folds (sizes within a class differ by at most one)."""
    labels = labels.cpu()
    ids = torch.empty_like(labels)
    for c in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        where = torch.nonzero(labels == c).flatten()
        perm = where[torch.randperm(len(where), generator=generator)]
        ids[perm] = torch.arange(len(perm)) % folds
    return ids


@register
class Folds(Adjustment):
    name = "folds"
    Settings = FoldSettings
    before_keys = INHERIT

    def __init__(self, settings=None, exemplars=None):
        super().__init__(settings, exemplars)
        # the inner loop, real batches, inherited keys and rate units: the pixel-descending selection's section
        self.section = getattr(exemplars, descent_section(exemplars)) if exemplars is not None else \
            optimised_settings_type()()
        self.inner = Unrolled(self.section.unrolled)

    @classmethod
    def keys_read(cls, exemplars) -> list[str]:
        name = descent_section(exemplars)
        own, src = getattr(exemplars, cls.name), f"exemplars.{name}"
        return [f"exemplars.{cls.name}", f"{src}.unrolled", f"{src}.val_batch_size", f"{src}.val_batches",
                *([f"{src}.units"] if hasattr(getattr(exemplars, name), "units") else []),
                *(f"{src}.{k}" for k in INHERIT if getattr(own, k) is None)]

    def schedule(self, model) -> Schedule:
        """Eq. 10's outer loop, its rate in the section's units for `model`."""
        s, m = self.settings, self.section

        def own(key: str):
            return getattr(m, key) if getattr(s, key) is None else getattr(s, key)
        return Schedule(own("epochs"), own("steps_per_epoch"), m.val_batches, s.lr, own("lr_halve_every"),
                        s.momentum, s.anchor, m.rate_scale(model))

    def adjust_tensors(self, model: nn.Module, exemplars: Tensor, labels: Tensor,
                       generator: torch.Generator | None = None, progress=None, augment=None, codec=None) -> Tensor:
        """Eq. 10 on one set of old exemplars (pixels in [0, 1]) with their labels; returns the adjusted exemplars
        in the original order (same shape, dtype, device). `generator` deals the folds and shuffles their batches
        (default: seeded with 0); `progress` gets {"fold", "epoch", "step", "loss", "lr"} after every outer step;
        `augment`, if given, augments every fold and its real batches differentiably; `codec`, the memory's: where
        it stores pixels of its own (lower resolution), a fold's stored tensor is what descends (`descend_stored`),
        so the adjusted exemplar is one the memory keeps as it was optimised."""
        s = self.settings
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        ids = fold_ids(labels, s.k, generator).to(exemplars.device)
        labels = labels.to(exemplars.device)
        classes = self.inner.meta_classes(labels)     # the whole group's: a fold may miss a class
        out = exemplars.detach().clone()
        for f in range(s.k):
            inside, outside = ids == f, ids != f
            if not inside.any() or not outside.any():
                continue
            real = tensor_batches(exemplars[outside].detach(), labels[outside], self.section.val_batch_size,
                                  generator)
            loss_of = self.inner.loss_of(model, labels[inside].long(), generator, classes, augment)
            x = descend_stored(exemplars[inside], loss_of, real, self.schedule(model), progress, {"fold": f}, codec)
            out[inside] = x.to(exemplars.dtype)
        return out

    def adjust(self, model, exemplars, group, ctx):
        x0, y = stack_group(exemplars, group, ctx.device)
        g = seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 2)
        trace = Trace("adjust", group, ctx.phase, self.notes)
        x = self.adjust_tensors(model, x0, y, g, trace, group_augment(ctx, group[0], 5, self.settings.augment),
                                ctx.codec)
        trace.report(x0, x)
        return unstack_group(x, exemplars, group)
