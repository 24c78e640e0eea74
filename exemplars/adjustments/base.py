"""How an adjustment of old exemplars plugs into the exemplar update.

With `exemplars.adjust_old` the exemplar update (exemplars/update.py) spreads the old classes' exemplars over
ranks in class groups and asks the adjustment named by `exemplars.adjustment` for each group's adjusted
exemplars, whatever selection chose them (the paper's Table 2 adjusts random and herding exemplars too). An
adjustment is one module in this package that registers its class; its settings are its own `Settings`
dataclass mounted at `exemplars.<name>` (beside the selections', so the two share one namespace of names). It is
built from the whole `exemplars` section, because an adjustment may reuse an objective's settings (the paper's
Eq. 10 reuses the unrolled objective's inner loop); `keys_read` names every key it reads, for the resume guard.

Like a selection, an adjustment must not depend on the rank: a group's result is a function of the model, the
group's exemplars and the SelectionContext only.
"""
from __future__ import annotations

import torch
from torch import nn

from core.registry import Plugin, Registry
from exemplars.selections.base import SelectionContext

REGISTRY = Registry("exemplars.adjustment", "exemplars.adjustments", skip=("base",))
register = REGISTRY.register


class Adjustment(Plugin):
    """An adjustment's `Settings` are mounted at exemplars.<name>."""

    def __init__(self, settings=None, exemplars=None):
        """`exemplars`: the whole exemplars config section (None: every setting at its default)."""
        super().__init__(settings)
        self.exemplars = exemplars
        self.notes: list[dict] = []       # per adjusted group: {"what", "classes", "before", "after"} (events)

    def adjust(self, model: nn.Module, exemplars: dict[int, torch.Tensor], group: list[int],
               ctx: SelectionContext) -> dict[int, torch.Tensor]:
        """The adjusted exemplars of one group of old classes (float pixels in [0, 1], the same counts)."""
        raise NotImplementedError

    @classmethod
    def keys_read(cls, exemplars) -> list[str]:
        """The dotted config keys (sections or single keys, from the top) this adjustment reads with the exemplars
        section `exemplars`, for the resume guard."""
        return [f"exemplars.{cls.name}"]


def build_adjustment(exemplars) -> Adjustment:
    """The adjustment named by `exemplars.adjustment` (the exemplars config section), with its settings."""
    cls = REGISTRY.get(exemplars.adjustment)
    return cls(getattr(exemplars, cls.name, None), exemplars)
