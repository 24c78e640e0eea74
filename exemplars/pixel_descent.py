"""The outer loop every exemplar objective shares: gradient descent on pixels.

An objective is a function `loss_of(x, real) -> scalar tensor` of the exemplar pixels `x` (float, in
[0, 1], requires grad) and one outer step's real batches. This module owns what is the same for all of
them: the epochs and steps over an epoch's real batches, the rate schedule (halved every
`halve_every` epochs), heavy-ball momentum, an optional pull towards the starting pixels (the anchored
Eq. 10), and the clamp to [0, 1]; and the real batches themselves, reshuffled every epoch
(`tensor_batches`, `pooled_batches`). The pixels are float32 (or wider) throughout, whatever the stored dtype, so
small steps add up instead of being rounded away one by one.

Pure torch; everything runs on the device of `x0`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor]
LossOf = Callable[[Tensor, list[Batch]], Tensor]
ValBatches = Callable[[int], Iterable[Batch]]        # epoch -> that epoch's real batches


@dataclass(frozen=True)
class Schedule:
    epochs: int
    steps_per_epoch: int          # 0 = until the epoch's batches run out
    batches_per_step: int
    lr: float
    halve_every: int
    momentum: float = 0.0
    anchor: float = 0.0           # weight of (anchor/2)·||x - x0||², summed over pixels
    # per-channel factors of the rate (None: 1). A rate meant for pixels the model normalises, x_n = (x - μ)/σ
    # (the paper's code optimises normalised tensors), moves [0, 1] pixels by lr·σ²·∂L/∂x: `paper_units`.
    rate_scale: tuple[float, ...] | None = None


def paper_units(model) -> tuple[float, ...]:
    """σ² per channel of the normalisation `model` applies to its [0, 1] input (its `normalize` module): the
    factors (`Schedule.rate_scale`) that make a pixel rate the paper's, a rate on normalised pixels."""
    norm = getattr(getattr(model, "module", model), "normalize", None)
    std = getattr(norm, "std", None)
    if std is None:
        raise ValueError(f"pixel rates in the paper's units need the model's input normalisation, and "
                         f"{type(model).__name__} has no `normalize` module with a `std`")
    return tuple(float(v) ** 2 for v in std.flatten())


def descend(x0: Tensor, loss_of: LossOf, batches_of: Callable[[int], Iterable[Batch]], schedule: Schedule,
            progress: Callable[[dict], None] | None = None, extra: dict | None = None) -> Tensor:
    """Minimise `loss_of` over the pixels, starting at `x0`; returns pixels in [0, 1] (float32 at least), detached.

    `batches_of(epoch)`: that epoch's real batches; each step takes `batches_per_step` of them (moved to
    x0's device, labels int64). `progress` gets {**extra, epoch, step, loss, lr} after every step, where
    loss is the objective's value before the step (the anchor term excluded)."""
    start = x0.detach().to(torch.promote_types(x0.dtype, torch.float32))   # float16 storage: add in float32
    x = start.clone().requires_grad_(True)
    velocity = torch.zeros_like(start) if schedule.momentum else None
    scale = None if schedule.rate_scale is None else \
        torch.tensor(schedule.rate_scale, dtype=start.dtype, device=start.device).view(1, -1, 1, 1)
    for epoch in range(schedule.epochs):
        lr = schedule.lr * 0.5 ** (epoch // schedule.halve_every)
        batches = iter(batches_of(epoch))
        steps = itertools.count() if schedule.steps_per_epoch == 0 else range(schedule.steps_per_epoch)
        for step in steps:
            real = [(bx.to(x.device), by.to(x.device, torch.long))
                    for bx, by in itertools.islice(batches, schedule.batches_per_step)]
            if not real:
                break
            loss = loss_of(x, real)
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                if schedule.anchor:
                    grad = grad + schedule.anchor * (x - start)
                if velocity is not None:
                    grad = velocity.mul_(schedule.momentum).add_(grad)
                x.sub_(lr * grad if scale is None else grad * (scale * lr)).clamp_(0.0, 1.0)
            if progress is not None:
                progress({**(extra or {}), "epoch": epoch, "step": step, "loss": loss.item(), "lr": lr})
    return x.detach()


def descend_stored(x0: Tensor, loss_of: LossOf, batches_of: Callable[[int], Iterable[Batch]], schedule: Schedule,
                   progress: Callable[[dict], None] | None = None, extra: dict | None = None, codec=None) -> Tensor:
    """`descend` on the pixels the memory keeps: where the codec (exemplars/codecs/) stores pixels of its own
    (`parametrises`: lower resolution), the descent moves the stored tensor and the objective sees it decoded, so
    the exemplar kept is the one optimised (the codec stores a decoded exemplar as the tensor it came from); else
    (no codec, or one that keeps the model-side pixels) the model-side pixels, as `descend`."""
    if codec is None or not codec.parametrises:
        return descend(x0, loss_of, batches_of, schedule, progress, extra)
    side = x0.shape[-1]
    low = codec.store(x0).to(x0.device, torch.promote_types(x0.dtype, torch.float32))
    low = descend(low, lambda z, batches: loss_of(codec.decode(z, side), batches), batches_of, schedule, progress,
                  extra)
    return codec.decode(low, side)


def tensor_batches(x: Tensor, y: Tensor, batch_size: int,
                   generator: torch.Generator) -> ValBatches:
    """`epoch -> batches` over in-memory tensors, reshuffled every epoch from the generator (drawn when
    the epoch's first batch is taken). uint8 images become float pixels in [0, 1] batch by batch."""
    def batches(epoch: int) -> Iterator[Batch]:
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        for i in perm.split(batch_size):
            xb = x[i]
            yield (xb.float().div_(255) if xb.dtype == torch.uint8 else xb), y[i]
    return batches


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
