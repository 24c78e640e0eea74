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
from exemplars.mnemonics import (
    MnemonicsSettings,
    adjust_exemplars,
    meta_loss_value,
    optimise_exemplars,
    tensor_batches,
)
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
    x = torch.cat([exemplars[l].float() for l in group]).to(device)
    y = torch.cat([torch.full((len(exemplars[l]),), l, dtype=torch.int64) for l in group]).to(device)
    return x, y


def _unstack(x: torch.Tensor, exemplars: dict[int, torch.Tensor], group: list[int]) -> dict[int, torch.Tensor]:
    return dict(zip(group, x.cpu().split([len(exemplars[l]) for l in group])))


@register
class Mnemonics(Selection):
    name = "mnemonics"
    takes_lazy_images = True        # indexes its images and decodes what it takes
    Settings = MnemonicsSettings

    def select(self, model, images, labels, group, m, ctx):
        s = self.settings
        init = herd if s.init == "herding" else (lambda model, *rest: pick_random(*rest))
        out = init(model, images, labels, group, m, ctx)
        if m <= 0:
            return out
        x0, y = _stack(out, group, ctx.device)
        g = seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 1)
        val = tensor_batches(images, labels, s.val_batch_size, g)
        trace = _Trace("select", group, ctx.phase, self.notes)
        x = optimise_exemplars(model, x0, y, val, s, generator=g, progress=trace)
        pick = torch.linspace(0, len(labels) - 1, min(len(labels), s.val_batch_size)).long()
        probe = [(images[pick].float().div(255).to(ctx.device), labels[pick].to(ctx.device))]   # all classes
        fixed = tuple(meta_loss_value(model, e, y, probe, s) for e in (x0, x))
        trace.report(x0, x, fixed)
        return _unstack(x, out, group)

    def adjust(self, model, exemplars, group, ctx):
        x0, y = _stack(exemplars, group, ctx.device)
        g = seeds.generator("exemplars", ctx.seed, ctx.phase, group[0], 2)
        trace = _Trace("adjust", group, ctx.phase, self.notes)
        x = adjust_exemplars(model, x0, y, self.settings, generator=g, progress=trace)
        trace.report(x0, x)
        return _unstack(x, exemplars, group)
