"""Optimised exemplars: pixel tensors that descend an exemplar objective (`exemplars.selection=optimised`).

The exemplar level of mnemonics (Liu et al., CVPR 2020) opened to every objective: per class group (of
`exemplars.group_size` classes), initialise (a random subset, Algorithm 1 step 10, or herding's picks, as the authors'
released code starts), then let the pixels descend the objective named by `exemplars.optimised.objective`
(a plug-in of exemplars/objectives/: the paper's `unrolled` Eq. 8-9, the authors' released one-level
`prototype`, feature or gradient `matching`) on the group's real batches. The descent is the same for every
objective: the keys of `exemplars.optimised` itself (epochs, outer steps per epoch, β1 and its halving,
momentum, augmentation, real batch size); an objective's own keys are `exemplars.optimised.<objective>`.
Old exemplars are adjusted by an adjustment plug-in (exemplars/adjustments/), whatever the selection.
The paper's method in the paper's form is `exemplars.selection=mnemonics` (selections/mnemonics.py); until it
was, that name ran this selection (trainer/config/migrate.py carries stored configs over).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, make_dataclass

import torch

from core import seeds
from core.errors import check_choice
from exemplars.objectives.base import REGISTRY as OBJECTIVES
from exemplars.objectives.base import GroupTask, OldClasses, Trace, group_augment, stack_group, unstack_group
from exemplars.pixel_descent import Schedule, descend_stored
from exemplars.selections.base import Selection, register
from exemplars.selections.herding import herd
from exemplars.selections.random import pick_random

# The paper's exemplar-level values (Section 5.1) on this selection, with the objective `unrolled`: a random
# initial subset, plain SGD on unaugmented pixels, 50 epochs of one outer step, β1 0.01 (in [0, 1] pixel units)
# halved every 10. Not the paper's form (an epoch a pass over D_i, rates on normalised pixels, one Θ' a phase:
# selections/mnemonics.py). These were the defaults of the keys below before the recommended objective became
# the default, so a stored config that lacks one of them was written when it had this value
# (trainer.config.stored_defaults).
PAPER = {"objective": "unrolled", "lr": 0.01, "init": "random", "momentum": 0.0, "augment": False, "epochs": 50,
         "steps_per_epoch": 1, "lr_halve_every": 10}


@dataclass
class OptimisedShared:
    """The keys of `exemplars.optimised` that every objective shares. The defaults are the recommended objective
    (`prototype`, chosen on the glyph validation split with its cost bounded: docs/results.md) and its validated
    outer loop; `PAPER` holds the paper's."""
    objective: str = "prototype"         # a registered objective (exemplars/objectives/)
    init: str = "herding"                # initial exemplars: "random" (the paper) or "herding" (the authors' code)
    # Outer epochs of the pixel descent (paper: 50); an epoch is `steps_per_epoch` outer steps on that epoch's
    # real batches, 0 = until the epoch's batches run out (a full pass over the real data)
    epochs: int = 10
    steps_per_epoch: int = 5
    lr: float = 0.5                      # β1, the pixel rate (the paper's Eq. 9: 0.01; the recommended one's: 0.5)
    lr_halve_every: int = 4              # β1 halved every so many epochs (paper: 10)
    momentum: float = 0.9                # heavy-ball momentum of the pixel steps (0 = plain SGD, the paper)
    augment: bool = True                 # the model-level exemplar augmentation on exemplars and real batches
    val_batch_size: int = 128            # real images per batch
    val_batches: int = 1                 # real batches per outer step

    def __post_init__(self) -> None:
        check_choice("optimised: objective", self.objective, OBJECTIVES.known())
        check_choice("optimised: init", self.init, ("random", "herding"))
        if self.epochs < 0 or self.steps_per_epoch < 0:
            raise ValueError("optimised: epochs and steps_per_epoch must be >= 0")
        if min(self.lr_halve_every, self.val_batch_size, self.val_batches) < 1:
            raise ValueError("optimised: lr_halve_every, val_batch_size and val_batches must be >= 1")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"optimised: momentum must be in [0, 1), got {self.momentum}")

    def schedule(self) -> Schedule:
        """The outer loop of the new exemplars' pixel descent (Eq. 9)."""
        return Schedule(self.epochs, self.steps_per_epoch, self.val_batches, self.lr, self.lr_halve_every,
                        self.momentum)

    def rate_scale(self, model) -> tuple[float, ...] | None:
        """The per-channel factors of this section's rates (`Schedule.rate_scale`): None, they are in [0, 1] pixel
        units."""
        return None


def descent_section(exemplars) -> str:
    """The section of `exemplars` (the config section) whose Θ' settings a pixel descent reads, Eq. 10's included:
    the configured selection's where it has an inner loop of its own (`unrolled`), else `optimised`."""
    name = getattr(exemplars, "selection", "optimised")
    return name if hasattr(getattr(exemplars, name, None), "unrolled") else "optimised"


SHARED_KEYS = tuple(OptimisedShared.__dataclass_fields__)
_TYPES: dict[tuple, type] = {}


def optimised_settings_type() -> type:
    """The `exemplars.optimised` section for the objectives registered now: the shared keys, and one section per
    objective with settings (exemplars.optimised.<objective>). Built once per set of objectives."""
    objectives = OBJECTIVES.classes()
    key = tuple(objectives.items())
    if key not in _TYPES:
        _TYPES[key] = make_dataclass("OptimisedSettings", [
            (name, cls.Settings, field(default_factory=cls.Settings))
            for name, cls in objectives.items() if cls.Settings is not None], bases=(OptimisedShared,))
    cls = _TYPES[key]
    cls.__module__ = __name__                    # configs pickle (submitit sends them to jobs)
    setattr(sys.modules[__name__], "OptimisedSettings", cls)
    return cls


def paper_settings(**overrides):
    """The `exemplars.optimised` section with the paper's shared keys (`PAPER`) and `overrides` (an objective's
    section as its settings object, e.g. unrolled=UnrolledSettings(inner_steps=5))."""
    return optimised_settings_type()(**{**PAPER, **overrides})


@register
class Optimised(Selection):
    name = "optimised"
    takes_lazy_images = True        # indexes its images and decodes what it takes
    before_keys = PAPER

    @classmethod
    def settings_type(cls) -> type:
        return optimised_settings_type()

    @classmethod
    def section_keys(cls, settings) -> list[str]:
        return [*SHARED_KEYS, settings.objective]

    def __init__(self, settings=None):
        super().__init__(settings)
        name = self.settings.objective
        self.objective = OBJECTIVES.get(name)(getattr(self.settings, name, None))
        self.old = OldClasses()

    def select(self, model, images, labels, group, m, ctx):
        s = self.settings
        # herding's decodes stay cached: the real batches below read the same images
        init = (lambda *args: herd(*args, keep=True)) if s.init == "herding" else \
            (lambda model, *rest: pick_random(*rest))
        out = init(model, images, labels, group, m, ctx)
        if m <= 0:
            return out
        x0, y = stack_group(out, group, ctx.device)
        task = GroupTask(model, x0, y, images, labels, group, ctx, s,
                         seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 1),
                         group_augment(ctx, group[0], 3, s.augment), self.old)
        trace = Trace("select", group, ctx.phase, self.notes)
        loss_of, real = self.objective.loss(task)
        x = descend_stored(x0, loss_of, real, self.schedule(model), trace, codec=ctx.codec)
        trace.report(x0, x, self.objective.probe(task, x))
        return unstack_group(x, out, group)

    def schedule(self, model) -> Schedule:
        """The outer loop of the pixel descent, its rates in the section's units for `model`."""
        return dataclasses.replace(self.settings.schedule(), rate_scale=self.settings.rate_scale(model))

    def snapshot_epoch(self) -> int:
        return self.objective.snapshot_epoch()
