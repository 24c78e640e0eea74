"""Mnemonics training's exemplar level in the paper's form (Liu et al., CVPR 2020, Section 4 and 5.1):
`exemplars.selection=mnemonics`.

E_i starts as a random subset of each new class (Algorithm 1, step 10) and its pixels descend Eq. 9, the
bilevel objective `unrolled` (exemplars/objectives/unrolled.py): a temporary model Θ' starts at Θ_i, is trained on
E_i for T steps at α2 (Eq. 8), and the cross-entropy of Θ' on D_i is back-propagated to the pixels. In the
paper's form:
- Θ' is trained on all the phase's new classes at once (`group_size: 0`); a positive group size splits them
  into groups of that many, to spread the work over ranks (each group then has a Θ' of its own);
- an epoch is a pass over D_i (`steps_per_epoch: 0`), 50 epochs, β1 = 0.01 halved every 10, plain SGD on
  unaugmented pixels;
- rates are the paper's pixel units (`units: paper`): the authors' released code optimises normalised tensors,
  x_n = (x - μ)/σ (it turns them back into images with the data's mean and std), so a step of β on them moves the
  [0, 1] pixels the memory keeps by β·σ²·∂L/∂x;
- with `exemplars.adjust_old` and the `folds` adjustment, Eq. 10 adjusts all the old classes' exemplars jointly
  (the same groups), on the inner loop of this section and in its units.

The descent itself is the `optimised` selection's (selections/optimised.py), which runs any objective with
any initialisation, momentum and augmentation per group of `exemplars.group_size` classes: the one-level
objective of the authors' released code is `exemplars.selection=optimised exemplars.optimised.objective=prototype`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from exemplars.objectives.unrolled import UnrolledSettings
from exemplars.pixel_descent import Schedule, paper_units
from exemplars.selections.base import register
from exemplars.selections.optimised import Optimised
from exemplars.sharding import class_groups

UNITS = ("paper", "pixels")


@dataclass
class MnemonicsSettings:
    epochs: int = 50                # outer epochs of Eq. 9
    steps_per_epoch: int = 0        # outer steps per epoch; 0 = a pass over D_i (the paper)
    lr: float = 0.01                # β1, halved every `lr_halve_every` epochs
    lr_halve_every: int = 10
    units: str = "paper"            # "paper": rates on normalised pixels; "pixels": on the [0, 1] pixels kept
    group_size: int = 0             # 0 = all the phase's classes at once; k > 0: groups of k (to spread over ranks)
    val_batch_size: int = 128       # images of D_i per outer step's batch
    val_batches: int = 1            # batches per outer step
    unrolled: UnrolledSettings = field(default_factory=UnrolledSettings)   # Θ': T, α2, checkpointing (Eq. 8)
    # the paper's form, not settings (the `optimised` selection varies them)
    objective: ClassVar[str] = "unrolled"
    init: ClassVar[str] = "random"
    momentum: ClassVar[float] = 0.0
    augment: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise ValueError(f"mnemonics: units must be one of {', '.join(UNITS)}, got {self.units!r}")
        if min(self.epochs, self.steps_per_epoch, self.group_size) < 0:
            raise ValueError("mnemonics: epochs, steps_per_epoch and group_size must be >= 0")
        if min(self.lr_halve_every, self.val_batch_size, self.val_batches) < 1:
            raise ValueError("mnemonics: lr_halve_every, val_batch_size and val_batches must be >= 1")

    def schedule(self) -> Schedule:
        """Eq. 9's outer loop, its rate as given (`Optimised.schedule` adds `rate_scale`)."""
        return Schedule(self.epochs, self.steps_per_epoch, self.val_batches, self.lr, self.lr_halve_every)

    def rate_scale(self, model) -> tuple[float, ...] | None:
        """The per-channel factors that put this section's rates (β1, and β2 of Eq. 10) in its `units`."""
        return paper_units(model) if self.units == "paper" else None


@register
class Mnemonics(Optimised):
    name = "mnemonics"
    Settings = MnemonicsSettings
    before_keys: ClassVar[dict] = {}

    @classmethod
    def settings_type(cls) -> type:
        return MnemonicsSettings

    @classmethod
    def section_keys(cls, settings) -> list[str]:
        return [""]

    def groups(self, classes: list[int], group_size: int) -> list[list[int]]:
        return class_groups(classes, self.settings.group_size or max(len(classes), 1))
