"""The unrolled inner loop of the paper's exemplar objective (Liu et al., CVPR 2020, Eq. 7-9), pure torch.

No I/O, no torch.distributed, no device choice (everything runs on the device of the inputs). The
exemplar-level bilevel problem is

    min_E  L_c(Θ'(E); D)                      (7a, meta level, "validation loss")
    s.t.   Θ'(E) = T steps of  Θ' <- Θ' - α2 ∇_Θ' L_c(Θ'; E),  Θ'_0 = Θ      (7b / Eq. 8)

and the pixels of E take gradient steps on L_c(Θ'(E); D) (Eq. 9: exemplars/objectives/unrolled.py, through
pixel_descent.py). The gradient through the T unrolled steps is a gradient through gradients: every inner
step is computed with `torch.autograd.grad(create_graph=True)` on a functional copy of the parameters
(`torch.func.functional_call`), so the meta-loss is an ordinary differentiable function of E.
Each inner step can be wrapped in non-reentrant activation checkpointing, which keeps the saved
activations of only one inner step alive at a time; a second level (`_Segment`) also keeps only
~2*sqrt(T) of the T intermediate parameter sets alive, so memory grows ~sqrt(T) in parameter-sized
copies and not at all in activations (see `unroll`).

BatchNorm (see `_bn_mode`): inside Θ' every BatchNorm layer normalises with the statistics of the
batch it sees (train mode) and writes its running-statistics update into throw-away clones of the
buffers; every other module (dropout, drop-path, ...) runs in eval mode so that nothing draws on the
global RNG. The model's own parameters, buffers, `.grad` and train/eval flags are never changed.
The model must be the bare module (no DDP/DeepSpeed wrapper) and must not contain SyncBatchNorm,
which would all-reduce statistics across ranks that optimise different class groups.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as _checkpoint

Batch = tuple[Tensor, Tensor]
Start = tuple[dict, dict]                # (params, buffers) of Θ'_0


@dataclass(frozen=True)
class InnerLoop:
    """The T steps of Θ' on the exemplars (Eq. 8): plain full-batch SGD at rate α2, each step optionally in
    activation checkpointing (`segment`: steps per outer checkpoint segment, 0 = ceil(sqrt(T))), BatchNorm on
    the exemplar batch's statistics (`bn="batch"`) or Θ's running ones (`"running"`)."""
    steps: int
    lr: float
    checkpoint: bool = True
    segment: int = 0
    bn: str = "batch"


_BN = nn.modules.batchnorm._BatchNorm


@contextlib.contextmanager
def _bn_mode(model: nn.Module, bn_train: bool) -> Iterator[None]:
    """Every module in eval mode except BatchNorm layers, which get `bn_train`; flags restored."""
    saved = [(m, m.training) for m in model.modules()]
    if bn_train and any(isinstance(m, nn.SyncBatchNorm) for m, _ in saved):
        raise ValueError("mnemonics: SyncBatchNorm would synchronise statistics across ranks; "
                         "pass a model with plain BatchNorm")
    try:
        for m, _ in saved:
            m.training = bn_train if isinstance(m, _BN) else False
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
             x: Tensor, bn_train: bool) -> Tensor:
    # In train mode BatchNorm updates running_mean/var and num_batches_tracked in place: hand it
    # fresh clones so neither Θ's buffers nor the caller's dict ever change. (The clones do not
    # influence the output in train mode; with checkpointing the recomputation clones again.)
    if bn_train:
        buffers = {k: v.clone() for k, v in buffers.items()}
    with _bn_mode(model, bn_train):
        return functional_call(model, (dict(params), dict(buffers)), (x,))


def _inner_step(fixed: _Unroll, x: Tensor, y: Tensor, create_graph: bool, *params: Tensor) -> tuple[Tensor, ...]:
    """One SGD step of Θ' on (x, y) (Eq. 8); `fixed`: the unroll's model, names, frozen parameters, buffers,
    rate and BatchNorm regime. With create_graph=True the new parameters stay differentiable functions of the
    old ones *and* of x (the Hessian-vector path of Eq. 9)."""
    logits = _forward(fixed.model, {**fixed.frozen, **dict(zip(fixed.names, params))}, fixed.buffers, x,
                      fixed.bn_train)
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return tuple(p if g is None else p - fixed.lr * g for p, g in zip(params, grads))


class _Unroll:
    """The fixed context of an unroll; `run` performs inner steps `ts` from `params` on `ex_x`."""

    def __init__(self, model, names, frozen, buffers, ex_y, lr, batch_indices, bn_train):
        self.model, self.names, self.frozen, self.buffers = model, names, frozen, buffers
        self.ex_y, self.lr, self.batch_indices, self.bn_train = ex_y, lr, batch_indices, bn_train

    def run(self, ts: range, ex_x: Tensor, params: Sequence[Tensor], differentiable: bool,
            ckpt: bool) -> tuple[Tensor, ...]:
        params = tuple(params)
        for t in ts:
            x, y = ex_x, self.ex_y
            if self.batch_indices is not None:
                x, y = ex_x[self.batch_indices[t]], y[self.batch_indices[t]]
            if not differentiable:  # values only: one step's graph at a time, then let it go
                with torch.enable_grad():
                    params = tuple(p.detach().requires_grad_() for p in params)
                    params = _inner_step(self, x, y, False, *params)
                params = tuple(p.detach() for p in params)
                continue
            args = (self, x, y, True, *params)
            if ckpt:
                # Non-reentrant: the reentrant variant drops the graph to ex_x / params ("element 0
                # of tensors does not require grad"). Nothing in a step is random (non-BN modules
                # run in eval mode), so the global RNG state need not be stashed and restored.
                params = _checkpoint(_inner_step, *args, use_reentrant=False,
                                     preserve_rng_state=False)
            else:
                params = _inner_step(*args)
        return params


class _Segment(torch.autograd.Function):
    """Outer level of two-level checkpointing: a segment of inner steps that keeps only its inputs.

    forward : runs the steps for their values only (no create_graph, nothing kept).
    backward: re-runs them differentiably, each step in non-reentrant checkpointing, and
              backpropagates the incoming gradient to the segment's inputs (Θ'_start and ex_x).
    (torch's nested checkpointing cannot do this: an autograd.grad inside a nested checkpointed
    forward makes the outer frame recompute and keep everything.) First-order only.
    """

    @staticmethod
    def forward(ctx, unroll: _Unroll, ts: range, ex_x: Tensor, *params: Tensor):
        ctx.unroll, ctx.ts = unroll, ts
        ctx.save_for_backward(ex_x, *params)
        return unroll.run(ts, ex_x.detach(), [p.detach() for p in params], False, False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_out: Tensor):
        ex_x, *params = ctx.saved_tensors
        x = ex_x.detach().requires_grad_(ctx.needs_input_grad[2])
        params = [p.detach().requires_grad_() for p in params]
        with torch.enable_grad():
            out = ctx.unroll.run(ctx.ts, x, params, True, True)
        wrt = [x, *params] if x.requires_grad else params
        grads = list(torch.autograd.grad(out, wrt, grad_out, allow_unused=True))
        grad_x = grads.pop(0) if x.requires_grad else None
        return (None, None, grad_x, *grads)


def unroll(model: nn.Module, start: Start, ex_x: Tensor, ex_y: Tensor, loop: InnerLoop,
           batch_indices: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
    """Θ' after `loop.steps` differentiable SGD steps on the exemplars (Eq. 8).

    `start` = (params, buffers) of Θ'_0 (`start_params`); params with requires_grad=True are trained (the
    others are held fixed). The result is differentiable w.r.t. `ex_x` (and the starting params).
    `batch_indices`, if given, holds one index tensor per step selecting the exemplars of that step
    (default: all, full batch).

    Memory with `loop.checkpoint`: a checkpointed step keeps only its inputs, but the meta-backward
    needs every intermediate Θ'_t, so per-step checkpointing alone still holds T parameter-sized
    copies (resnet18: 47 MB each), which dominates when the exemplar batch is small. Two-level
    checkpointing (`_Segment`) fixes that: steps are grouped into segments of `loop.segment` steps
    (0 = auto, ceil(sqrt(T))); only segment inputs are kept, and during the meta-backward one
    segment at a time is re-run with per-step checkpoints. Peak ~ (T/segment + segment) parameter
    copies + one step's activations, for one extra forward+backward per step.
    `segment=1` (or >= T) is plain per-step checkpointing.
    """
    params, buffers = start
    steps = loop.steps
    names = tuple(n for n, p in params.items() if p.requires_grad)
    frozen = {n: p for n, p in params.items() if not p.requires_grad}
    current = tuple(params[n] for n in names)
    ctx = _Unroll(model, names, frozen, buffers, ex_y, loop.lr, batch_indices, loop.bn == "batch")
    seg = loop.segment if loop.segment > 0 else max(1, math.ceil(math.sqrt(steps)))
    if not torch.is_grad_enabled():
        current = ctx.run(range(steps), ex_x, current, False, False)
    elif not loop.checkpoint or seg == 1 or seg >= steps:
        current = ctx.run(range(steps), ex_x, current, True, loop.checkpoint)
    else:
        for first in range(0, steps, seg):
            current = _Segment.apply(ctx, range(first, min(first + seg, steps)), ex_x, *current)
    return {**frozen, **dict(zip(names, current))}


def theta_logits(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                 x: Tensor, val_bn: str = "batch") -> Tensor:
    """Logits of Θ' (= `params`) on real images, normalised as in the meta-loss (`val_bn`)."""
    return _forward(model, params, buffers, x, bn_train=(val_bn == "batch"))


def validation_loss(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                    batches: Iterable[Batch], val_bn: str = "batch",
                    classes: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of Θ' (= `params`) over real batches (the meta-loss of Eq. 7a/9).
    `classes` (sorted label ids): the cross-entropy over these logits only (meta_loss=group);
    every label of the batches must be one of them."""
    def ce(x: Tensor, y: Tensor) -> Tensor:
        logits = theta_logits(model, params, buffers, x, val_bn)
        if classes is not None:
            if not torch.isin(y, classes).all():
                raise ValueError("validation_loss: a real label is outside `classes`")
            logits, y = logits[:, classes], torch.searchsorted(classes, y)
        return F.cross_entropy(logits, y)

    losses = [ce(x, y) for x, y in batches]
    if not losses:
        raise ValueError("validation_loss: no batches")
    return torch.stack(losses).mean()


def unrolled_meta_loss(model: nn.Module, start: Start, ex_x: Tensor, ex_y: Tensor, real: Batch, loop: InnerLoop,
                       val_bn: str = "batch") -> Tensor:
    """L_c(Θ'(E); D) for one real batch: unroll on (ex_x, ex_y) from `start`, then CE on `real` = (x, y).

    Differentiable w.r.t. ex_x; ``torch.autograd.grad(loss, ex_x)`` is ∇_E of Eq. 9.
    """
    theta = unroll(model, start, ex_x, ex_y, loop)
    return validation_loss(model, theta, start[1], [real], val_bn)


def start_params(model: nn.Module) -> tuple[dict, dict]:
    """(params, buffers) of Θ'_0 = Θ as new leaf tensors: gradients never reach the model's
    parameters or their .grad; parameters that require grad are the ones `unroll` trains."""
    params = {n: p.detach().requires_grad_(p.requires_grad) for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


@torch.no_grad()
def previous_params(model: nn.Module, previous: nn.Module, x0: Tensor, labels: Tensor) -> tuple[dict, dict]:
    """(params, buffers) of Θ'_0 = Θ_{i-1}: `previous`'s parameters and buffers under `model`'s names; a
    parameter `model` has grown (the head's rows of the phase's classes) keeps Θ_{i-1}'s rows, and its new
    rows are imprinted: the weight row of each class of `labels` is the L2-normalised mean feature of its
    exemplars `x0` under Θ_{i-1}, scaled to the mean norm of the old rows, its bias the old rows' mean
    bias (Qi et al.'s weight imprinting). A parameter `previous` lacks (a head part of this phase) and rows
    of classes outside `labels` keep Θ_i's values."""
    params, buffers = start_params(model)
    before = dict(previous.named_parameters())
    buffers.update({n: b.detach() for n, b in previous.named_buffers() if n in buffers
                    and b.shape == buffers[n].shape})
    f = F.normalize(previous.features(x0), dim=1)
    classes = torch.unique(labels)
    means = F.normalize(torch.stack([f[labels == c].mean(0) for c in classes]), dim=1)
    for name, p in params.items():
        old = before.get(name)
        if old is None:
            continue
        if old.shape == p.shape:
            value = old.detach().clone()
        elif old.dim() == p.dim() and old.shape[1:] == p.shape[1:] and old.shape[0] < p.shape[0]:
            value = p.detach().clone()
            value[: old.shape[0]] = old
            grown = classes[classes >= old.shape[0]]
            rows = means[classes >= old.shape[0]]
            if p.dim() == 2 and p.shape[1] == means.shape[1] and len(grown):
                value[grown] = rows * old.norm(dim=1).mean()
            elif p.dim() == 1 and len(grown) and len(old):
                value[grown] = old.mean()
        else:
            continue
        params[name] = value.requires_grad_(p.requires_grad)
    return params, buffers
