"""The exemplar level of a phase (Algorithm 1, steps 10-17): build E_i for the new classes with the
configured selection, adjust old exemplars with the configured adjustment (the paper's Eq. 10) when asked, trim
to the budget.

Work is split into class groups fixed by the protocol and the group size (`exemplars.group_size`, or the
selection's own: `Selection.groups`; never the number of processes); groups are spread over ranks balanced by
cost, and the results are gathered, so every rank ends with the same memory, equal to what a single process
computes. Each group's result can be kept as it finishes (`GroupResults`), so a stop (core/stop.py) or a crash
inside the exemplar level resumes at the next group: a rank checks for a stop after every group and while it waits
for the other ranks. The selection and the adjustment are plug-ins (exemplars/selections/, exemplars/adjustments/): nothing here names one.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from core import faults, stop
from core.ranks import SINGLE, DistInfo
from data_pipeline.loading.augment import model_view
from exemplars.adjustments.base import build_adjustment
from exemplars.memory import ExemplarMemory, quota
from exemplars.selections.base import REGISTRY, Selection, SelectionContext
from exemplars.sharding import assign_groups

log = logging.getLogger(__name__)
# Every rank's own progress through its class groups (shown on all ranks: trainer/run/session.py), so a
# long, unequal exemplar level shows who is still working and who waits in the exchange.
progress = logging.getLogger("mnemo.progress.exemplars")


@dataclass(frozen=True)
class Collectives:
    """How ranks share the exemplar level's results: `gather` collects a small object from every rank (in rank
    order), `exchange` merges every rank's {label: tensor} on every rank, moved as tensors, and says how many
    bytes this rank sent. The defaults are one process's."""
    gather: Callable[[object], list] = lambda obj: [obj]
    exchange: Callable[[dict], tuple[dict, int]] = lambda tensors: (tensors, 0)
    # wait until every rank is ready to exchange; False when this rank should stop instead (core/stop.py)
    ready: Callable[[str], bool] = lambda tag: True


class GroupResults(Protocol):
    """Where finished class groups' results are kept within a phase (trainer/run/storage/group_results.py)."""

    def load(self, key: str) -> dict[int, torch.Tensor] | None: ...

    def save(self, key: str, result: dict[int, torch.Tensor]) -> None: ...


@dataclass
class _Level:
    """One exemplar level's shared parts: the ranks, how they share, where groups are kept, bytes sent."""
    phase: int
    dist: DistInfo
    comm: Collectives
    kept: GroupResults | None
    sent: list[int]


LOCAL = Collectives()


@dataclass
class PhaseClasses:
    """A phase as the exemplar level sees it: the new and old classes' labels, the real images of a class group
    (`images(labels) -> (images, labels)`: uint8, or a LazyImages that decodes the samples a selection takes;
    decoded when asked, so a rank decodes only its own groups) and the images per new class (to balance groups
    over ranks)."""
    new_labels: list[int]
    old_labels: list[int]
    images: Callable[[list[int]], tuple]
    counts: dict[int, int]
    # {label: mean bytes of the class's original training images as the shards store them}, of every seen class:
    # what a budget image stands for when the memory's codec counts bytes (None: only raw can run)
    image_bytes: dict[int, float] | None = None


PROBE = 16          # images of a class stored to estimate what its exemplars cost (a byte-counting codec)
MARGIN = 1.25       # candidates beyond the estimate where costs vary, so a class's bytes are filled


def byte_budgets(memory: ExemplarMemory, m: int, phase: PhaseClasses) -> dict[int, float] | None:
    """{label: bytes} of every seen class when the memory's codec counts bytes (m original images' worth), else
    None."""
    if not memory.codec.counts_bytes:
        return None
    if phase.image_bytes is None:
        raise ValueError(f"exemplars.codec={memory.codec.name} counts bytes, but the phase gave no image bytes")
    return {l: m * phase.image_bytes[l] for l in [*phase.old_labels, *phase.new_labels]}


def candidates(codec, images, labels: torch.Tensor, group: list[int], budgets: dict[int, float], side: int) -> int:
    """How many exemplars of each class of `group` to select so that its bytes can be filled: the budget over the
    mean cost of PROBE of its images as the codec stores them (MARGIN more where their costs differ), at most the
    class's images."""
    most = 0
    for label in group:
        idx = torch.nonzero(labels == label).squeeze(1)
        if not len(idx):
            continue
        probe = images[idx[:PROBE]]
        probe = probe.tensor() if hasattr(probe, "tensor") else probe
        cost = codec.nbytes(codec.store(model_view(probe, side).float().div_(255))).double()
        n = budgets[label] / cost.mean().item()
        n = math.floor(n) if bool((cost == cost[0]).all()) else math.ceil(n * MARGIN)
        most = max(most, min(len(idx), n))
    return most


def build_selection(settings) -> Selection:
    """The selection named by `settings.selection` (the exemplars config section), with its own settings."""
    return REGISTRY.get(settings.selection)(getattr(settings, settings.selection, None))


def snapshot_epoch(settings) -> int:
    """After which epoch of a phase's model-level training the configured selection wants the model kept
    (`Selection.snapshot_epoch`; 0: none). `settings`: the exemplars config section."""
    return build_selection(settings).snapshot_epoch()


def _spread(what: str, groups: list[list[int]], cost_of, work, level: _Level) -> dict[int, torch.Tensor]:
    """Run `work(group)` for this rank's groups (or take a group's kept result); exchange every rank's results
    (bytes sent into `level.sent`). `what`: the stage ("selection", "adjustment") the logs name."""
    dist, comm = level.dist, level.comm
    rank, world = dist.rank, dist.world
    assignment = assign_groups(groups, [cost_of(g) for g in groups], world)
    idle = sum(1 for a in assignment if not a)
    if idle and rank == 0:
        log.warning("exemplar %s: %d class group(s) for %d ranks, so %d rank(s) wait idle; a smaller "
                    "group size (exemplars.group_size, or exemplars.mnemonics.group_size with the paper's method) "
                    "gives every rank work (it sets which classes are optimised together, so it is part of the "
                    "recipe, not picked by the world size)", what, len(groups), world,
                    idle)
    mine: dict[int, torch.Tensor] = {}
    t0 = time.perf_counter()
    for n, gi in enumerate(assignment[rank]):
        key = f"{what}-{groups[gi][0]}-{groups[gi][-1]}"
        got = level.kept.load(key) if level.kept is not None else None
        was_kept = got is not None
        if got is None:
            got = {l: t.to(torch.float16) for l, t in work(groups[gi]).items()}
            if level.kept is not None:
                level.kept.save(key, got)
        mine.update(got)
        if world > 1:
            progress.info("rank %d: %s class group %d/%d %s (classes %d-%d), %.0fs", rank, what, n + 1,
                          len(assignment[rank]), "kept from before" if was_kept else "done",
                          groups[gi][0], groups[gi][-1], time.perf_counter() - t0)
        if stop.requested():
            raise stop.StopRequested(f"phase {level.phase} exemplar {what}: stopped after class group {n + 1} of "
                                     f"{len(assignment[rank])} on rank {rank} ({stop.why()})")
    if world > 1:
        progress.info("rank %d: %d %s class group(s) done in %.0fs; waiting for the other ranks", rank,
                      len(assignment[rank]), what, time.perf_counter() - t0)
    if not comm.ready(f"p{level.phase}-{what}"):
        raise stop.StopRequested(f"phase {level.phase} exemplar {what}: stopped on rank {rank} while it waited for "
                                 f"the other ranks ({stop.why()})")
    merged, nbytes = comm.exchange(mine)
    level.sent.append(nbytes)
    if world > 1:
        progress.info("rank %d: sent %d exemplar tensors (%.1f MB) to the other ranks", rank, len(mine), nbytes / 1e6)
    return merged


def held_and_bytes(memory: ExemplarMemory, budgets: dict[int, float]) -> dict:
    """What a byte-counted memory holds: exemplars per class (fewest, mean, most), its bytes and its budget's."""
    held = [len(memory.bank[l]) for l in memory.labels()] or [0]
    return {"codec": memory.codec.describe(), "held_min": min(held), "held_max": max(held),
            "held_mean": round(sum(held) / len(held), 2),
            "bytes": int(sum(int(memory.nbytes(l).sum()) for l in memory.labels())),
            "budget_bytes": int(sum(budgets[l] for l in memory.labels()))}


def update_memory(model, memory: ExemplarMemory, phase: PhaseClasses, settings, ctx: SelectionContext,
                  dist: DistInfo = SINGLE, comm: Collectives = LOCAL, kept: GroupResults | None = None) -> dict:
    """Steps 10-17 of Algorithm 1 on `memory` (in place); returns what was done (for events.jsonl).
    `settings`: the `exemplars` config section; `kept`: where finished groups' results are kept (None: nowhere)."""
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    old_labels, new_labels = phase.old_labels, phase.new_labels
    ctx = dataclasses.replace(ctx, old_exemplars={l: memory.get(l) for l in old_labels if l in memory.bank},
                              codec=memory.codec)
    selection = build_selection(settings)
    m = quota(settings.per_class, settings.budget, len(old_labels) + len(new_labels))

    budgets = byte_budgets(memory, m, phase)

    def select(group):
        images, labels = phase.images(group)
        k = m if budgets is None else candidates(memory.codec, images, labels, group, budgets, ctx.image_size)
        if hasattr(images, "with_view"):                  # decoded lazily (PhaseImages.lazy)
            if selection.takes_lazy_images:
                return selection.select(model, images.with_view(lambda x: model_view(x, ctx.image_size)), labels,
                                        group, k, ctx)
            images = images.tensor()
        return selection.select(model, model_view(images, ctx.image_size), labels, group, k, ctx)

    counts = phase.counts
    sent: list[int] = []
    level = _Level(ctx.phase, dist, comm, kept, sent)
    new = _spread("selection", selection.groups(list(new_labels), settings.group_size),
                  lambda g: sum(min(m, counts[l]) for l in g) + sum(counts[l] for l in g) / 100, select, level)
    t_select = time.perf_counter() - t0
    faults.maybe_fail("exemplars", ctx.phase)
    t_adjust = 0.0
    old_present = [l for l in old_labels if l in memory.bank and len(memory.get(l)) > 1]
    adjuster = build_adjustment(settings) if settings.adjust_old else None
    if adjuster is not None and old_present:
        t1 = time.perf_counter()
        adjusted = _spread("adjustment", selection.groups(old_present, settings.group_size),
                           lambda g: sum(len(memory.get(l)) for l in g),
                           lambda g: adjuster.adjust(model, {l: memory.get(l) for l in g}, g, ctx), level)
        for l, x in adjusted.items():
            memory.set(l, x)
        t_adjust = time.perf_counter() - t1
    mine = selection.notes + (adjuster.notes if adjuster is not None else [])
    groups = [note for part in comm.gather(mine) for note in part]
    for l in new_labels:
        memory.set(l, new[l])
    if budgets is None:
        memory.trim(m)                  # fixed-total mode: old classes shrink after adjustment
    else:
        memory.fit(budgets)             # each class's bytes (fixed-total mode: fewer as classes arrive)
    model.train(was_training)
    info = {"per_class": m, "total": len(memory), "select_s": round(t_select, 3), "adjust_s": round(t_adjust, 3),
            "selection": settings.selection, "adjusted": bool(settings.adjust_old and old_present), "groups": groups,
            **({"exchange_bytes_sent": sum(sent)} if dist.world > 1 else {}),
            **(held_and_bytes(memory, budgets) if budgets is not None else {})}
    if budgets is None:
        log.info("phase %d exemplars: %s, %d per class, %d in memory (select %.1fs, adjust %.1fs)", ctx.phase,
                 settings.selection, m, len(memory), t_select, t_adjust)
    else:
        log.info("phase %d exemplars: %s stored as %s, %d-%d per class (mean %.1f) at the bytes of %d originals, "
                 "%d in memory, %.2f of %.2f MB (select %.1fs, adjust %.1fs)", ctx.phase, settings.selection,
                 info["codec"], info["held_min"], info["held_max"], info["held_mean"], m, len(memory),
                 info["bytes"] / 1e6, info["budget_bytes"] / 1e6, t_select, t_adjust)
    return info
