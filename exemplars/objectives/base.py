"""How an exemplar objective plugs into pixel optimisation: what the exemplar pixels of one class group minimise.

An objective is one module in this package that registers its class; its hyperparameters are its own
`Settings` dataclass, mounted at `exemplars.optimised.<name>` in the config. The optimised selection
(exemplars/selections/optimised.py; the paper's mnemonics runs it with `unrolled`) initialises a group's
exemplars, builds its `GroupTask` and asks the objective configured in `exemplars.optimised.objective` for
`loss(task)`: a function `loss_of(x, real)` of the pixels and one outer step's real batches, and the real
batches of each epoch. The descent on the pixels
(epochs, rate, momentum, augmentation, real batch size: the keys of `exemplars.optimised` itself) is the same
for every objective (pixel_descent.py), so an objective says only what is minimised.

Also here, because the selection and the adjustment of old exemplars (exemplars/adjustments/) share them: the
group's differentiable augmentation with its own random draws, the stacking of a group's exemplars into one
tensor and back, and `Trace`, the progress of one group's optimisation.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from core import faults, seeds
from core.registry import Plugin, Registry
from data_pipeline.loading.augment import augment_exemplars, device_generator
from exemplars.features import class_means
from exemplars.memory import STORE_DTYPE, stack_bank
from exemplars.pixel_descent import LossOf, ValBatches, pooled_batches, tensor_batches
from exemplars.selections.base import SelectionContext

REGISTRY = Registry("exemplars.optimised.objective", "exemplars.objectives", skip=("base",))
register = REGISTRY.register
log = logging.getLogger(__name__)
Augment = Callable[[Tensor], Tensor]


class OldClasses:
    """The old classes as every class group of a phase sees them: their class means under the phase's model (the
    NME prototypes of the old exemplars) and their exemplars stacked into one (images, labels) pair in the
    stored float16. Each is computed once per phase and reused by the phase's other groups."""

    def __init__(self):
        self._cached: dict[str, tuple] = {}      # name -> (key, value)

    def _once(self, name: str, key: tuple, compute):
        hit = self._cached.get(name)
        if hit is None or hit[0] != key:
            hit = self._cached[name] = (key, compute())
        return hit[1]

    def means(self, model: nn.Module, ctx: SelectionContext) -> tuple[Tensor | None, list[int]]:
        old = sorted(ctx.old_exemplars)
        means = self._once("means", (ctx.phase, id(model), tuple(old)), lambda: class_means(
            model, ctx.old_exemplars, old, ctx.device, False, ctx.feature_batch_size) if old else None)
        return means, old

    def stack(self, ctx: SelectionContext) -> tuple[Tensor, Tensor]:
        old = sorted(ctx.old_exemplars)
        return self._once("stack", (ctx.phase, id(ctx.old_exemplars), tuple(old)),
                          lambda: stack_bank(ctx.old_exemplars, old, STORE_DTYPE))


@dataclass
class GroupTask:
    """One class group's pixel problem, as the optimised selection (or the paper's mnemonics) hands it over."""
    model: nn.Module                  # Θ_i, eval mode; objectives never change it
    x0: Tensor                        # the initial exemplars: float pixels in [0, 1] on ctx.device
    y: Tensor                         # their labels (int64, on ctx.device)
    images: object                    # the group's real images (uint8, or a LazyImages decoding what is taken)
    labels: Tensor                    # and their labels
    group: list[int]                  # the group's classes, in protocol order
    ctx: SelectionContext
    settings: object                  # the selection's section (the shared descent keys)
    generator: torch.Generator        # the real batches' shuffles and the objective's own CPU draws
    augment: Augment | None           # the exemplar augmentation, differentiable (None: augment=false)
    old: OldClasses

    def real_batches(self, with_old: bool) -> ValBatches:
        """`epoch -> batches` of the group's real images, pooled with the old classes' exemplars `with_old`."""
        size = self.settings.val_batch_size
        if not with_old or not self.ctx.old_exemplars:
            return tensor_batches(self.images, self.labels, size, self.generator)
        return pooled_batches([(self.images, self.labels), self.old.stack(self.ctx)], size, self.generator)


class Objective(Plugin):
    """An objective's `Settings` are mounted at exemplars.optimised.<name>."""

    def loss(self, task: GroupTask) -> tuple[LossOf, ValBatches]:
        """What the group's pixels minimise, `loss_of(x, real)`, and the real batches of each epoch."""
        raise NotImplementedError

    def snapshot_epoch(self) -> int:
        """Epochs of the phase's model-level training after which the run keeps the model for this objective
        (`SelectionContext.snapshot`); 0: none."""
        return 0

    def probe(self, task: GroupTask, x: Tensor) -> tuple[float, float] | None:
        """The objective on one fixed real batch with the initial and with the final exemplars `x` (a
        diagnostic the log and events.jsonl show), or None where the objective has no fixed value to compare."""
        return None


def group_augment(ctx: SelectionContext, label: int, stream: int, on: bool) -> Augment | None:
    """The model-level exemplar augmentation (pad-crop, flip where the preset flips) as a differentiable function
    with its own draws (the `exemplars` random stream `stream` of the group's first class), or None unless `on`."""
    if not on:
        return None
    g = device_generator(seeds.generator("exemplars", ctx.seed, ctx.phase, label, stream), ctx.device)
    return lambda x: augment_exemplars(x, ctx.preset, g)


def stack_group(exemplars: dict[int, Tensor], group: list[int], device) -> tuple[Tensor, Tensor]:
    """A group's {label: exemplars} as one float32 (images, labels) pair on `device`."""
    x, y = stack_bank(exemplars, group)
    return x.to(device), y.to(device)


def unstack_group(x: Tensor, exemplars: dict[int, Tensor], group: list[int]) -> dict[int, Tensor]:
    """`stack_group` undone: the rows of `x` back into {label: exemplars} (on the CPU)."""
    return dict(zip(group, x.cpu().split([len(exemplars[label]) for label in group])))


class Trace:
    """Progress of one class group's pixel optimisation: objective first/last, outer steps, pixel change."""

    def __init__(self, what: str, group: list[int], phase: int, notes: list[dict]):
        self.what, self.group, self.phase, self.losses, self.notes = what, group, phase, [], notes
        self.t0 = time.perf_counter()

    def __call__(self, rec: dict) -> None:
        self.losses.append(rec["loss"])
        faults.maybe_fail("mnemonics", self.phase, len(self.losses))    # crash tests: after outer step k

    def report(self, before: Tensor, after: Tensor, fixed: tuple[float, float] | None = None) -> None:
        """`fixed`: the objective on one fixed real batch with the initial and the final exemplars."""
        if not self.losses:
            return
        first, last = fixed if fixed is not None else (self.losses[0], self.losses[-1])
        self.notes.append({"what": self.what, "classes": [int(c) for c in self.group], "before": float(first),
                           "after": float(last)})
        delta = (after.float() - before.float().to(after.device)).abs().mul_(255)
        log.info("phase %d exemplar %s classes %s: meta-loss %.4f -> %.4f over %d outer steps%s, pixel change "
                 "mean %.3f max %.1f (of 255), %.1fs", self.phase, self.what, self.group[0] if len(self.group) == 1
                 else f"{self.group[0]}-{self.group[-1]}", self.losses[0], self.losses[-1], len(self.losses),
                 "" if fixed is None else f" (on one fixed real batch: {fixed[0]:.4f} -> {fixed[1]:.4f})",
                 delta.mean().item(), delta.max().item(), time.perf_counter() - self.t0)
