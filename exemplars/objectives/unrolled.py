"""The `unrolled` objective: the paper's bilevel exemplar objective (Liu et al., CVPR 2020, Eq. 8-9).

A temporary copy Θ' of the model is trained on the exemplars for T steps of functional SGD (Eq. 8,
exemplars/unroll.py), and the exemplars' pixels descend the cross-entropy of Θ' on real batches (Eq. 9):
what the exemplars teach a model in T steps is judged on real data. Θ' starts at Θ_i (the paper), at Θ_{i-1}
with the new classes imprinted, or at a snapshot of the phase's own training (`start`). The adjustment of old
exemplars (Eq. 10, exemplars/adjustments/folds.py) reuses this objective with a fold of exemplars as the real
data. Settings: `exemplars.optimised.unrolled`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from exemplars.objectives.base import GroupTask, Objective, register
from exemplars.pixel_descent import Batch, LossOf, Schedule, ValBatches, descend
from exemplars.unroll import InnerLoop, Start, previous_params, start_params, unroll, validation_loss

BN_REGIMES = ("batch", "running")
STARTS = ("current", "previous", "snapshot")


@dataclass
class UnrolledSettings:
    # T: unrolled full-batch SGD steps of the temporary model Θ' on the exemplars (Eq. 8). The paper trains Θ'
    # "in 50 epochs" with gradient descent; one full-batch step over a class group's exemplars is one epoch, so
    # T=50 is the paper's setting. Cost per outer step is ~linear in T; memory is ~flat in T with `checkpoint`.
    # Small-scale/CPU recipes should lower it (e.g. 5).
    inner_steps: int = 50
    inner_lr: float = 0.01               # α2: rate of Θ''s plain (functional) SGD
    checkpoint: bool = True              # each inner step in non-reentrant activation checkpointing
    # Inner steps per outer checkpoint segment (two-level checkpointing, exemplars/unroll.py): 0 = auto,
    # ceil(sqrt(T)), keeps ~2*sqrt(T) parameter copies instead of T at ~1.5x the time of per-step
    # checkpointing; 1 = per-step checkpointing only (faster; fine when the exemplar activations, not the T
    # parameter copies, dominate memory, e.g. hundreds of exemplars per group).
    checkpoint_segment: int = 0
    # Exemplars per inner step; 0 = all of them (full batch, the paper's "epoch"). A positive value draws a
    # random subset per inner step from the group's generator (bounds memory for large groups).
    inner_batch_size: int = 0
    # BatchNorm in the meta/validation forward of Θ': "batch" = statistics of the real batch, like the inner
    # steps (Θ' is trained and judged in the same normalisation regime, and the group's class-restricted
    # statistics are not mixed with Θ's all-class running statistics); "running" = Θ's running statistics
    # (eval mode, as at test time).
    val_bn: str = "batch"
    # BatchNorm in the inner steps (Eq. 8): "batch" = statistics of the exemplar batch (train mode, as Θ itself
    # was trained); "running" = Θ's running statistics, frozen (with val_bn=running Θ'_0 then computes exactly
    # Θ's function, so the meta-loss measures what the exemplars teach and not how fast Θ' recovers from
    # normalising by a class group's statistics).
    inner_bn: str = "batch"
    # Classes the meta-loss's cross-entropy ranges over: "all" = every class Θ' predicts (Eq. 9 as written);
    # "group" = only the classes of the exemplars being optimised, so the loss cannot be lowered by shifting
    # predictions towards the group, only by telling its classes apart.
    meta_loss: str = "all"
    # Where Θ' starts. "current" = Θ_i, the model just trained on D_i (the paper); "previous" = Θ_{i-1} (the
    # model before this phase), its head's new-class rows imprinted from the exemplars' mean features, so the T
    # steps have the new classes to learn from the exemplars (phase 0 has no Θ_{i-1} and starts from Θ_i);
    # "snapshot" = the phase's own model after `snapshot_epoch` epochs of its model-level training (kept by the
    # run as it trains, no extra training): a model that has not fit D_i yet, in every phase including phase 0
    # (where phase 0 is reused by train.base_from: Θ_i).
    start: str = "current"
    # start=snapshot: epochs of the phase's first training stage after which the model is kept (a phase shorter
    # than that keeps its last epoch's model, Θ_i).
    snapshot_epoch: int = 1
    # Real data of the meta-loss: "group" = the group's real images; "phase" = those and the old classes'
    # exemplars, so what the exemplars teach must not cost the old classes.
    meta_data: str = "group"

    def __post_init__(self) -> None:
        if self.inner_steps < 0:
            raise ValueError(f"unrolled: inner_steps must be >= 0, got {self.inner_steps}")
        if self.snapshot_epoch < 1:
            raise ValueError(f"unrolled: snapshot_epoch must be >= 1, got {self.snapshot_epoch}")
        if min(self.inner_batch_size, self.checkpoint_segment) < 0:
            raise ValueError("unrolled: inner_batch_size and checkpoint_segment must be >= 0")
        for key, allowed in (("val_bn", BN_REGIMES), ("inner_bn", BN_REGIMES), ("meta_loss", ("all", "group")),
                             ("start", STARTS), ("meta_data", ("group", "phase"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"unrolled: {key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.meta_loss == "group" and self.meta_data == "phase":
            raise ValueError("unrolled: meta_loss=group ranges over the group's classes only; it cannot score "
                             "the old exemplars of meta_data=phase")

    def inner_loop(self) -> InnerLoop:
        return InnerLoop(self.inner_steps, self.inner_lr, self.checkpoint, self.checkpoint_segment, self.inner_bn)


@register
class Unrolled(Objective):
    name = "unrolled"
    Settings = UnrolledSettings

    def meta_classes(self, labels: Tensor) -> Tensor | None:
        """The classes the meta-loss ranges over (meta_loss=group), or None (all)."""
        return torch.unique(labels.long()) if self.settings.meta_loss == "group" else None

    def loss_of(self, model: nn.Module, labels: Tensor, generator: torch.Generator, classes: Tensor | None,
                augment=None, start: Start | None = None) -> LossOf:
        """`loss_of(x, real)`: unroll Θ' on the exemplars x with `labels` for T steps (Eq. 8), then the
        cross-entropy of Θ' on the real batches (Eq. 9), over `classes` (None = all). `augment(x)`, if given, is
        applied to the exemplars and to every real batch, differentiably. `start`: Θ'_0 when it is not Θ."""
        s = self.settings
        params, buffers = start if start is not None else start_params(model)
        n, b, loop = len(labels), s.inner_batch_size, s.inner_loop()

        def loss(x: Tensor, real: list[Batch]) -> Tensor:
            idx = None
            if 0 < b < n:  # random exemplar subset per inner step, drawn from the generator only
                idx = [torch.randperm(n, generator=generator)[:b].to(x.device) for _ in range(s.inner_steps)]
            if augment is not None:
                x, real = augment(x), [(augment(rx), ry) for rx, ry in real]
            theta = unroll(model, (params, buffers), x, labels, loop, idx)
            return validation_loss(model, theta, buffers, real, s.val_bn, classes)
        return loss

    def start_of(self, task: GroupTask) -> Start | None:
        """Θ'_0 of `start` (None: Θ, also where the model it names does not exist, as Θ_{i-1} in phase 0)."""
        s, ctx = self.settings, task.ctx
        if s.start == "previous" and ctx.previous is not None:
            return previous_params(task.model, ctx.previous, task.x0.float(), task.y.long())
        if s.start == "snapshot" and ctx.snapshot is not None:
            return start_params(ctx.snapshot)
        return None

    def loss(self, task: GroupTask) -> tuple[LossOf, ValBatches]:
        batches = task.real_batches(with_old=self.settings.meta_data == "phase")
        return (self.loss_of(task.model, task.y, task.generator, self.meta_classes(task.y), task.augment,
                             self.start_of(task)), batches)

    def snapshot_epoch(self) -> int:
        return self.settings.snapshot_epoch if self.settings.start == "snapshot" else 0

    def probe(self, task: GroupTask, x: Tensor) -> tuple[float, float] | None:
        """The meta-loss on one fixed batch of the group's real images, before and after (only where Θ' starts
        at Θ, where the probe unrolls from)."""
        ctx = task.ctx
        if {"current": None, "previous": ctx.previous, "snapshot": ctx.snapshot}[self.settings.start] is not None:
            return None
        labels = task.labels
        pick = torch.linspace(0, len(labels) - 1, min(len(labels), task.settings.val_batch_size)).long()
        fixed = [(task.images[pick].float().div(255).to(ctx.device), labels[pick].to(ctx.device))]
        return tuple(self.meta_loss_value(task.model, e, task.y, fixed) for e in (task.x0, x))

    def meta_loss_value(self, model: nn.Module, exemplars: Tensor, labels: Tensor, batches) -> float:
        """The meta-loss L_c(Θ'(E); batches) as a number, without building a graph (diagnostics: compare the
        same real batches before and after optimising E)."""
        s = self.settings
        labels = labels.to(exemplars.device)
        params, buffers = start_params(model)
        with torch.no_grad():
            theta = unroll(model, (params, buffers), exemplars.detach(), labels.long(), s.inner_loop())
            return validation_loss(model, theta, buffers, batches, s.val_bn, self.meta_classes(labels)).item()

    def optimise(self, model: nn.Module, x0: Tensor, labels: Tensor, batches_of: ValBatches, schedule: Schedule,
                 generator: torch.Generator | None = None, progress=None, start: Start | None = None) -> Tensor:
        """Eq. 8-9 on one exemplar set, outside a run: `x0` the initial pixels in [0, 1] with their `labels`,
        `batches_of(epoch)` the real batches of the same classes; returns the pixels (x0's shape and dtype),
        detached. `generator` draws only inner_batch_size's exemplar subsets (default: seeded with 0, never the
        global RNG); `progress` gets {"epoch", "step", "loss", "lr"} after every outer step."""
        labels = labels.to(device=x0.device, dtype=torch.long)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        loss_of = self.loss_of(model, labels, generator, self.meta_classes(labels), start=start)
        return descend(x0, loss_of, batches_of, schedule, progress).to(x0.dtype)
