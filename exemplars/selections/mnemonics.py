"""Mnemonics exemplars (Liu et al., CVPR 2020) as a selection: initialise (random subset or herding),
then optimise the pixels through the unrolled inner loop (Eq. 8-9); `adjust` is Eq. 10 for old
exemplars. The optimisation itself is exemplars/mnemonics.py (pure torch); this module feeds it a
group's real batches and generators and logs each group's progress. Settings: `exemplars.mnemonics`.
"""
from __future__ import annotations

import logging
import time

import torch

from core import faults, seeds
from data_pipeline.loading.augment import augment_exemplars, device_generator
from exemplars.features import class_means
from exemplars.memory import STORE_DTYPE, stack_bank
from exemplars.mnemonics import (
    MnemonicsSettings,
    adjust_exemplars,
    meta_loss_value,
    optimise_exemplars,
    schedule,
    tensor_batches,
)
from exemplars.objectives import MATCH_LOSSES
from exemplars.objectives.prototype import prototype_loss
from exemplars.pixel_descent import descend
from exemplars.selections.base import Selection, register
from exemplars.selections.herding import herd
from exemplars.selections.random import pick_random

log = logging.getLogger(__name__)


class _Trace:
    """Progress of one class group's pixel optimisation: meta-loss first/last, outer steps, pixel change."""

    def __init__(self, what: str, group: list[int], phase: int, notes: list[dict]):
        self.what, self.group, self.phase, self.losses, self.notes = what, group, phase, [], notes
        self.t0 = time.perf_counter()

    def __call__(self, rec: dict) -> None:
        self.losses.append(rec["loss"])
        faults.maybe_fail("mnemonics", self.phase, len(self.losses))    # crash tests: after outer step k

    def report(self, before: torch.Tensor, after: torch.Tensor, fixed: tuple[float, float] | None = None) -> None:
        """`fixed`: the meta-loss on one fixed real batch with the initial and the final exemplars."""
        if not self.losses:
            return
        first, last = fixed if fixed is not None else (self.losses[0], self.losses[-1])
        self.notes.append({"what": self.what, "classes": [int(c) for c in self.group], "before": float(first),
                           "after": float(last)})
        delta = (after.float() - before.float().to(after.device)).abs().mul_(255)
        log.info("phase %d mnemonics %s classes %s: meta-loss %.4f -> %.4f over %d outer steps%s, pixel change "
                 "mean %.3f max %.1f (of 255), %.1fs", self.phase, self.what, self.group[0] if len(self.group) == 1
                 else f"{self.group[0]}-{self.group[-1]}", self.losses[0], self.losses[-1], len(self.losses),
                 "" if fixed is None else f" (on one fixed real batch: {fixed[0]:.4f} -> {fixed[1]:.4f})",
                 delta.mean().item(), delta.max().item(), time.perf_counter() - self.t0)


def _stack(exemplars: dict[int, torch.Tensor], group: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = stack_bank(exemplars, group)
    return x.to(device), y.to(device)


def _unstack(x: torch.Tensor, exemplars: dict[int, torch.Tensor], group: list[int]) -> dict[int, torch.Tensor]:
    return dict(zip(group, x.cpu().split([len(exemplars[l]) for l in group])))


def pooled_batches(parts: list[tuple], batch_size: int, generator: torch.Generator):
    """`epoch -> batches` over several (images, labels) parts taken as one pool (uint8 images, a LazyImages
    or float pixels), reshuffled every epoch from the generator; every batch comes as float pixels."""
    sizes = [len(y) for _, y in parts]
    offsets = torch.tensor([0, *sizes]).cumsum(0)

    def batches(epoch: int):
        for idx in torch.randperm(int(offsets[-1]), generator=generator).split(batch_size):
            xs, ys = [], []
            for k, (x, y) in enumerate(parts):
                mine = idx[(idx >= offsets[k]) & (idx < offsets[k + 1])] - offsets[k]
                if len(mine):
                    xb = x[mine]
                    xs.append(xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float())
                    ys.append(y[mine])
            yield torch.cat(xs), torch.cat(ys)
    return batches


@register
class Mnemonics(Selection):
    name = "mnemonics"
    takes_lazy_images = True        # indexes its images and decodes what it takes
    Settings = MnemonicsSettings

    def __init__(self, settings=None):
        super().__init__(settings)
        self._cached: dict[str, tuple] = {}      # name -> (key, value): what every group of a phase shares

    def _augment(self, ctx, label: int, stream: int, on: bool | None = None):
        """The model-level exemplar augmentation as a differentiable function, with its own draws; `on`
        defaults to `augment` (the new exemplars' setting)."""
        if not (self.settings.augment if on is None else on):
            return None
        g = device_generator(seeds.generator("exemplars", ctx.seed, ctx.phase, label, stream), ctx.device)
        return lambda x: augment_exemplars(x, ctx.preset, g)

    def _once(self, name: str, key: tuple, compute):
        """`compute()` once per `key` (a phase's old classes): every class group of the phase reuses it."""
        hit = self._cached.get(name)
        if hit is None or hit[0] != key:
            hit = self._cached[name] = (key, compute())
        return hit[1]

    def old_means(self, model, ctx) -> tuple[torch.Tensor | None, list[int]]:
        """The old classes' class means under the phase's model (the NME prototypes of the old exemplars)."""
        old = sorted(ctx.old_exemplars)
        means = self._once("means", (ctx.phase, id(model), tuple(old)), lambda: class_means(
            model, ctx.old_exemplars, old, ctx.device, False, ctx.feature_batch_size) if old else None)
        return means, old

    def old_stack(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """The old exemplars as one (images, labels) pair in their stored float16, stacked once per phase: every
        class group of the phase pools the same old exemplars into its real batches."""
        old = sorted(ctx.old_exemplars)
        return self._once("stack", (ctx.phase, id(ctx.old_exemplars), tuple(old)),
                          lambda: stack_bank(ctx.old_exemplars, old, STORE_DTYPE))

    def real_batches(self, images, labels, ctx, with_old: bool, g):
        """`epoch -> batches` of the group's real images, and of the old exemplars `with_old`."""
        if not with_old or not ctx.old_exemplars:
            return tensor_batches(images, labels, self.settings.val_batch_size, g)
        return pooled_batches([(images, labels), self.old_stack(ctx)], self.settings.val_batch_size, g)

    def objective(self, model, y, images, labels, group, ctx, g):
        """(loss_of, real batches) of the configured objective other than `unrolled`, for one group."""
        s = self.settings
        augment = self._augment(ctx, group[0], 3)
        if s.objective == "prototype":
            means, old = self.old_means(model, ctx)
            return (prototype_loss(model, y, means, old, s.cosine_scale, augment),
                    self.real_batches(images, labels, ctx, True, g))
        gen = device_generator(seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 4), ctx.device)
        return MATCH_LOSSES[s.match](model, y, s.embedders, gen, augment), tensor_batches(images, labels, s.val_batch_size, g)

    def select(self, model, images, labels, group, m, ctx):
        s = self.settings
        # herding's decodes stay cached: the real batches below read the same images
        init = (lambda *args: herd(*args, keep=True)) if s.init == "herding" else \
            (lambda model, *rest: pick_random(*rest))
        out = init(model, images, labels, group, m, ctx)
        if m <= 0:
            return out
        x0, y = _stack(out, group, ctx.device)
        g = seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 1)
        trace = _Trace("select", group, ctx.phase, self.notes)
        if s.objective == "unrolled":
            val = self.real_batches(images, labels, ctx, s.meta_data == "phase", g)
            x = optimise_exemplars(model, x0, y, val, s, generator=g, progress=trace,
                                   augment=self._augment(ctx, group[0], 3), previous=ctx.previous,
                                   snapshot=ctx.snapshot)
            fixed = None
            if {"current": None, "previous": ctx.previous, "snapshot": ctx.snapshot}[s.start] is None:
                # Θ' starts at Θ, where the probe unrolls from
                pick = torch.linspace(0, len(labels) - 1, min(len(labels), s.val_batch_size)).long()
                probe = [(images[pick].float().div(255).to(ctx.device), labels[pick].to(ctx.device))]
                fixed = tuple(meta_loss_value(model, e, y, probe, s) for e in (x0, x))
        else:
            loss_of, real = self.objective(model, y, images, labels, group, ctx, g)
            x = descend(x0, loss_of, real, schedule(s, s.lr), trace)
            fixed = None
        trace.report(x0, x, fixed)
        return _unstack(x, out, group)

    def snapshot_epoch(self) -> int:
        s = self.settings
        return s.snapshot_epoch if s.objective == "unrolled" and s.start == "snapshot" else 0

    def adjust(self, model, exemplars, group, ctx):
        x0, y = _stack(exemplars, group, ctx.device)
        g = seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 2)
        trace = _Trace("adjust", group, ctx.phase, self.notes)
        x = adjust_exemplars(model, x0, y, self.settings, generator=g, progress=trace,
                             augment=self._augment(ctx, group[0], 5, self.settings.adjust_augment))
        trace.report(x0, x)
        return _unstack(x, exemplars, group)
