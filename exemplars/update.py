"""The exemplar level of a phase (Algorithm 1, steps 10-17): build E_i for the new classes by
random, herding or mnemonics selection, adjust old exemplars (Eq. 10) when asked, trim to the budget.

Work is split into class groups fixed by the protocol and `exemplars.group_size` (never by the
number of processes); groups are spread over ranks balanced by cost, and the results are gathered,
so every rank ends with the same memory, equal to what a single process computes.
"""
from __future__ import annotations

import logging
import time

import torch

from core import faults
from data_pipeline.loading.augment import model_view
from exemplars.features import extract_features
from exemplars.memory import ExemplarMemory, quota
from exemplars.mnemonics import adjust_exemplars, meta_loss_value, optimise_exemplars
from exemplars.selections.herding import herding_order, random_order
from exemplars.sharding import assign_groups, class_groups
from trainer.engine import distributed

log = logging.getLogger(__name__)


def _generator(seed: int, phase: int, label: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + phase) * 10_007 + label) * 13 + stream)


def _val_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, g: torch.Generator):
    """Real batches of a class group, reshuffled each epoch from `g` (uint8 -> float [0,1])."""
    def batches(epoch: int):
        perm = torch.randperm(len(labels), generator=g)
        for idx in perm.split(batch_size):
            yield images[idx].float().div_(255), labels[idx]
    return batches


class _Trace:
    """Progress of one class group's pixel optimisation: meta-loss first/last, outer steps, pixel change."""

    def __init__(self, what: str, group: list[int], phase: int):
        self.what, self.group, self.phase, self.losses = what, group, phase, []
        self.t0 = time.perf_counter()

    def __call__(self, rec: dict) -> None:
        self.losses.append(rec["loss"])

    def report(self, before: torch.Tensor, after: torch.Tensor, fixed: tuple[float, float] | None = None) -> None:
        """`fixed`: the meta-loss on one fixed real batch with the initial and the final exemplars."""
        if not self.losses:
            return
        delta = (after.float() - before.float().to(after.device)).abs().mul_(255)
        log.info("phase %d mnemonics %s classes %s: meta-loss %.4f -> %.4f over %d outer steps%s, pixel change "
                 "mean %.3f max %.1f (of 255), %.1fs", self.phase, self.what, self.group[0] if len(self.group) == 1
                 else f"{self.group[0]}-{self.group[-1]}", self.losses[0], self.losses[-1], len(self.losses),
                 "" if fixed is None else f" (on one fixed real batch: {fixed[0]:.4f} -> {fixed[1]:.4f})",
                 delta.mean().item(), delta.max().item(), time.perf_counter() - self.t0)


def _select_group(model, group: list[int], group_images, m: int, cfg, phase: int, device) -> dict[int, torch.Tensor]:
    """E_i for one class group; `group_images(group)` decodes just this group's real images."""
    sel = cfg.exemplars.selection
    images, labels = group_images(group)
    images = model_view(images, cfg.data.image_size)   # exemplars are stored at the model's input size
    out: dict[int, torch.Tensor] = {}
    herding = sel == "herding" or (sel == "mnemonics" and cfg.exemplars.mnemonics.init == "herding")
    for label in group:
        cls = images[labels == label]
        if herding:
            feats = extract_features(model, cls, device, cfg.eval.batch_size)
            order = herding_order(feats, m)
        else:          # random, and mnemonics' default initialisation (a random subset S of D_i)
            order = random_order(len(cls), m, _generator(cfg.seed, phase, label, 0))
        out[label] = cls[order].float().div_(255)
    if sel == "mnemonics" and m > 0:
        x = torch.cat([out[l] for l in group]).to(device)
        y = torch.cat([torch.full((len(out[l]),), l, dtype=torch.int64) for l in group]).to(device)
        g = _generator(cfg.seed, phase, group[0], 1)
        val = _val_batches(images, labels, cfg.exemplars.mnemonics.val_batch_size, g)
        trace = _Trace("select", group, phase)
        x0, x = x, optimise_exemplars(model, x, y, val, cfg.exemplars.mnemonics, generator=g, progress=trace)
        pick = torch.linspace(0, len(labels) - 1, min(len(labels), cfg.exemplars.mnemonics.val_batch_size)).long()
        probe = [(images[pick].float().div(255).to(device), labels[pick].to(device))]   # all classes, both sets
        fixed = tuple(meta_loss_value(model, e, y, probe, cfg.exemplars.mnemonics) for e in (x0, x))
        trace.report(x0, x, fixed)
        out = dict(zip(group, x.cpu().split([len(out[l]) for l in group])))
    return out


def _adjust_group(model, group: list[int], memory: ExemplarMemory, cfg, phase: int, device) -> dict:
    x = torch.cat([memory.get(l).float() for l in group]).to(device)
    y = torch.cat([torch.full((len(memory.get(l)),), l, dtype=torch.int64) for l in group]).to(device)
    g = _generator(cfg.seed, phase, group[0], 2)
    trace = _Trace("adjust", group, phase)
    x0, x = x, adjust_exemplars(model, x, y, cfg.exemplars.mnemonics, generator=g, progress=trace)
    trace.report(x0, x)
    return dict(zip(group, x.cpu().split([len(memory.get(l)) for l in group])))


def _spread(groups: list[list[int]], cost_of, dist_info, work) -> dict[int, torch.Tensor]:
    """Run `work(group)` for this rank's groups; gather every rank's results."""
    assignment = assign_groups(groups, [cost_of(g) for g in groups], dist_info.world)
    mine: dict[int, torch.Tensor] = {}
    for gi in assignment[dist_info.rank]:
        mine.update({l: t.to(torch.float16) for l, t in work(groups[gi]).items()})
    merged: dict[int, torch.Tensor] = {}
    for part in distributed.all_gather_object(mine):
        merged.update(part)
    return merged


def update_memory(model, memory: ExemplarMemory, new_labels: list[int], old_labels: list[int], group_images,
                  counts: dict[int, int], cfg, phase: int, dist_info, events) -> dict:
    """Steps 10-17 of Algorithm 1 on `memory` (in place). `group_images(labels) -> (images, labels)`: the
    real D_i images (uint8) and incremental labels of a class group, decoded when asked (a rank decodes
    only its own groups); `counts`: images per new class (for balancing groups over ranks)."""
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    ex = cfg.exemplars
    m = quota(ex.per_class, ex.budget, len(old_labels) + len(new_labels))
    new_groups = class_groups(list(new_labels), ex.group_size)
    new = _spread(new_groups, lambda g: sum(min(m, counts[l]) for l in g) + sum(counts[l] for l in g) / 100,
                  dist_info, lambda g: _select_group(model, g, group_images, m, cfg, phase, dist_info.device))
    t_select = time.perf_counter() - t0
    faults.maybe_fail("exemplars", phase)
    t_adjust = 0.0
    old_present = [l for l in old_labels if l in memory.bank and len(memory.get(l)) > 1]
    if ex.adjust_old and old_present:
        t1 = time.perf_counter()
        adjusted = _spread(class_groups(old_present, ex.group_size), lambda g: sum(len(memory.get(l)) for l in g),
                           dist_info, lambda g: _adjust_group(model, g, memory, cfg, phase, dist_info.device))
        for l, x in adjusted.items():
            memory.set(l, x)
        t_adjust = time.perf_counter() - t1
    for l in new_labels:
        memory.set(l, new[l])
    memory.trim(m)                      # fixed-total mode: old classes shrink after adjustment
    model.train(was_training)
    info = {"per_class": m, "total": len(memory), "select_s": round(t_select, 3), "adjust_s": round(t_adjust, 3),
            "selection": ex.selection, "adjusted": bool(ex.adjust_old and old_present)}
    events.write(event="exemplars", phase=phase, **info)
    log.info("phase %d exemplars: %s, %d per class, %d in memory (select %.1fs, adjust %.1fs)", phase,
             ex.selection, m, len(memory), t_select, t_adjust)
    return info
