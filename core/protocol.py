"""The class-incremental protocol: class order, base classes, equal increments.

The class order is NumPy's `RandomState(class_order_seed).permutation(num_classes_in_data)` (seed
1993, as LUCIR/iCaRL/mnemonics use). With `num_classes=K` only the first K classes of that order are
used: ImageNet-Subset is the first 100 classes of the seed-1993 permutation of ImageNet-1k.
Labels used by the model are positions in the order ("incremental labels"), so the classifier grows
by appending columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import UserError


@dataclass(frozen=True)
class PhasePlan:
    order: tuple[int, ...]                 # dataset class ids in the order they arrive
    phase_sizes: tuple[int, ...]           # classes added in each phase (phase 0 = base)

    @property
    def num_phases(self) -> int:
        return len(self.phase_sizes)

    def new_labels(self, phase: int) -> list[int]:
        start = sum(self.phase_sizes[:phase])
        return list(range(start, start + self.phase_sizes[phase]))

    def seen_labels(self, phase: int) -> list[int]:
        return list(range(sum(self.phase_sizes[: phase + 1])))

    def old_labels(self, phase: int) -> list[int]:
        return list(range(sum(self.phase_sizes[:phase])))

    def class_ids(self, labels) -> list[int]:
        return [self.order[label] for label in labels]

    def label_of(self) -> dict[int, int]:
        return {cid: label for label, cid in enumerate(self.order)}

    def labels_of(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Incremental labels of a tensor of dataset class ids (-1 for a class outside the protocol)."""
        lut = torch.full((max(self.order) + 1,), -1, dtype=torch.int64)
        lut[torch.tensor(self.order)] = torch.arange(len(self.order))
        return lut[class_ids]


def make_plan(num_classes_in_data: int, base_classes: int, phases: int, seed: int = 1993,
              num_classes: int | None = None) -> PhasePlan:
    order = np.random.RandomState(seed).permutation(num_classes_in_data).tolist()
    total = num_classes_in_data if num_classes is None else num_classes
    if total > num_classes_in_data:
        raise UserError(f"protocol.num_classes={total} but the data has only {num_classes_in_data} classes")
    if not 0 < base_classes <= total:
        raise UserError(f"protocol.base_classes={base_classes} must be between 1 and the {total} classes used")
    rest = total - base_classes
    if phases == 0:
        if rest:
            raise UserError(f"protocol.phases=0 leaves {rest} classes unused: set protocol.num_classes="
                            f"{base_classes} or add phases")
        return PhasePlan(tuple(order[:total]), (base_classes,))
    if rest % phases:
        raise UserError(f"protocol: the {rest} classes after protocol.base_classes={base_classes} do not split "
                        f"into protocol.phases={phases} equal increments (choose phases dividing {rest})")
    return PhasePlan(tuple(order[:total]), (base_classes,) + (rest // phases,) * phases)
