"""Mnemonics exemplar optimisation (Liu et al., CVPR 2020, Section 4.3, Eq. 7-10).

Pure torch: no I/O, no torch.distributed, no device choice (everything runs on the device of the
inputs). The exemplar-level bilevel problem is

    min_E  L_c(Θ'(E); D)                      (7a, meta level, "validation loss")
    s.t.   Θ'(E) = T steps of  Θ' <- Θ' - α2 ∇_Θ' L_c(Θ'; E),  Θ'_0 = Θ      (7b / Eq. 8)

and the pixels of E take SGD steps  E <- E - β1 ∇_E L_c(Θ'(E); D)  (Eq. 9). The gradient through
the T unrolled steps is a gradient through gradients: every inner step is computed with
`torch.autograd.grad(create_graph=True)` on a functional copy of the parameters
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
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as _checkpoint

from exemplars.pixel_descent import LossOf, Schedule, descend

__all__ = [
    "MnemonicsSettings",
    "optimise_exemplars",
    "adjust_exemplars",
    "unroll",
    "validation_loss",
    "theta_logits",
    "start_params",
    "unrolled_meta_loss",
    "meta_loss_value",
    "fold_ids",
    "tensor_batches",
    "unrolled_loss",
    "schedule",
    "previous_params",
    "PAPER",
    "paper_settings",
]

Batch = tuple[Tensor, Tensor]
OBJECTIVES = ("unrolled", "prototype", "matching")
# The settings that make the exemplar level the paper's (Section 5.1): Eq. 8-9's unrolled objective from a random
# subset, plain SGD on unaugmented pixels, 50 epochs of one outer step, β1 0.01 halved every 10, and Eq. 10 on the
# same outer loop (the `adjust_*` schedule keys None). Until the recommended objective became the default (issue
# 20) these were the defaults and the `adjust_*` schedule keys did not exist, so a stored config that lacks one of
# these keys was written when it had this value (trainer.config.stored_defaults).
PAPER = {"objective": "unrolled", "lr": 0.01, "init": "random", "momentum": 0.0, "augment": False, "epochs": 50,
         "steps_per_epoch": 1, "lr_halve_every": 10, "adjust_epochs": None, "adjust_steps_per_epoch": None,
         "adjust_lr_halve_every": None}
ValBatches = Callable[[int], Iterable[Batch]]
Progress = Callable[[dict], None]
Augment = Callable[[Tensor], Tensor]


@dataclass
class MnemonicsSettings:
    """Exemplar-level hyperparameters (paper, Section 5.1 "Exemplar-level hyperparameters").

    Plain types only (an `adjust_*` schedule key may be None): this is embedded as the
    ``exemplars.mnemonics`` section of the YAML config. The defaults are the recommended objective
    (`prototype`, chosen on the glyph validation split with its cost bounded: docs/results.md, issue 20) and
    its validated outer loop; `PAPER` holds the settings that give the paper's Eq. 8-10 instead. Eq. 10 (the
    adjustment of old exemplars) has its own outer loop, the paper's by default.
    """

    # T: unrolled full-batch SGD steps of the temporary model Θ' on the exemplars (Eq. 8). The
    # paper trains Θ' "in 50 epochs" with gradient descent; one full-batch step over a class
    # group's exemplars is one epoch, so T=50 is the paper's setting. Cost per outer step is ~linear in T;
    # memory is ~flat in T with `checkpoint`. Small-scale/CPU recipes should lower it (e.g. 5).
    inner_steps: int = 50
    # α2: learning rate of the temporary model's plain (functional) SGD.
    inner_lr: float = 0.01
    # Outer epochs of the new exemplars' pixel optimisation (paper: 50). An epoch is `steps_per_epoch`
    # outer steps (pixel updates) on that epoch's real batches, see below.
    epochs: int = 10
    # β1: pixel learning rate for new-class exemplars (the paper's Eq. 9: 0.01; the recommended
    # objective's, chosen on validation: 0.5).
    lr: float = 0.5
    # β2: pixel learning rate when adjusting old exemplars (Eq. 10), paper: 0.01.
    adjust_lr: float = 0.01
    # β1 is halved every this many epochs (paper: 10).
    lr_halve_every: int = 4
    # Wrap each inner step in non-reentrant activation checkpointing.
    checkpoint: bool = True
    # Inner steps per outer checkpoint segment (two-level checkpointing, see `unroll`): 0 = auto,
    # ceil(sqrt(T)), keeps ~2*sqrt(T) parameter copies instead of T at ~1.5x the time of per-step
    # checkpointing; 1 = per-step checkpointing only (faster; fine when the exemplar activations,
    # not the T parameter copies, dominate memory, e.g. hundreds of exemplars per group).
    checkpoint_segment: int = 0
    # Number of folds old exemplars are split into for Eq. 10 (2 = the paper's A/B split).
    folds: int = 2
    # Real images per validation batch (the caller's loader uses it; adjust_exemplars batches the
    # complement fold with it).
    val_batch_size: int = 128
    # Real batches per outer step: Θ' is unrolled once and the meta-loss is the mean CE over them.
    val_batches: int = 1
    # Outer steps per epoch (each consumes `val_batches` batches of that epoch's iterable);
    # 0 = run until the epoch's iterable is exhausted (a full pass over the real data). Paper: 1.
    steps_per_epoch: int = 5
    # Exemplars per inner step; 0 = all of them (full batch, the paper's "epoch"). A positive value
    # draws a random subset per inner step from the generator (bounds memory for large groups).
    inner_batch_size: int = 0
    # BatchNorm in the meta/validation forward of Θ': "batch" = statistics of the real batch, like
    # the inner steps (default: Θ' is trained and judged in the same normalisation regime, and the
    # group's class-restricted statistics are not mixed with Θ's all-class running statistics);
    # "running" = Θ's running statistics (eval mode, as at test time).
    val_bn: str = "batch"
    # BatchNorm in the inner steps of Θ' (Eq. 8): "batch" = statistics of the exemplar batch (train
    # mode, as Θ itself was trained); "running" = Θ's running statistics, frozen (with val_bn=running
    # Θ'_0 then computes exactly Θ's function, so the meta-loss measures what the exemplars teach
    # and not how fast Θ' recovers from normalising by a class group's statistics).
    inner_bn: str = "batch"
    # Classes the meta-loss's cross-entropy ranges over: "all" = every class Θ' predicts (Eq. 9 as
    # written); "group" = only the classes of the exemplars being optimised, so the loss cannot be
    # lowered by shifting predictions towards the group, only by telling its classes apart.
    meta_loss: str = "all"
    # Initial exemplars of a new class: "random" = a random subset S of D_i (Algorithm 1 step 10, the
    # paper); "herding" = the herding selection (as the authors' released code starts).
    init: str = "herding"
    # Seed of the generator used when the caller passes none (fold split, shuffles, subsets).
    seed: int = 0
    # What the pixels minimise (exemplars/objectives/): "unrolled" = Eq. 8-9 above (the paper's bilevel
    # reading); "prototype" = the authors' released one-level objective (a cosine classifier whose
    # new-class weights are the exemplars' mean features, old-class weights the stored class means,
    # cross-entropy on real batches); "matching" = per-class mean-embedding matching of exemplars and
    # real images. The settings below the line apply to all three unless they say otherwise. Default:
    # prototype, the recommended objective (none beats herding on glyphs, docs/results.md; this one is
    # the best on validation whose whole run costs at most 2x herding's).
    objective: str = "prototype"
    # Heavy-ball momentum of the pixel optimiser (0 = plain SGD, the paper's Eq. 9).
    momentum: float = 0.9
    # Apply the model-level exemplar augmentation (pad-crop, flip where the preset flips) to the
    # exemplars and to the real batches at every outer step, differentiably (the paper: no).
    augment: bool = True
    # Eq. 10 anchored: weight of (anchor/2)·||E - E_stored||² added to the adjustment's objective, which
    # pulls adjusted old exemplars back towards their stored pixels (0 = the paper's Eq. 10).
    adjust_anchor: float = 0.0
    # Eq. 10's own pixel optimiser, apart from `momentum` and `augment` above (which only the new-class
    # exemplars use): 0 and false = the paper's plain SGD on unaugmented folds. Sharing the new objectives'
    # momentum 0.9 and augmentation cost herding 5.4 points of Ā where the paper's adjustment costs 1.9
    # (docs/results.md, issue 20), so they are opted into separately.
    adjust_momentum: float = 0.0
    adjust_augment: bool = False
    # Eq. 10's outer loop: epochs, outer steps per epoch, β2 halved every so many epochs (the paper's 50 epochs
    # of one step, halved every 10). None = the same as the new exemplars' `epochs` / `steps_per_epoch` /
    # `lr_halve_every`, which is what every run made before these keys existed did.
    adjust_epochs: Optional[int] = 50
    adjust_steps_per_epoch: Optional[int] = 1
    adjust_lr_halve_every: Optional[int] = 10
    # prototype: scale (inverse temperature) of the cosine classifier's logits.
    cosine_scale: float = 16.0
    # matching: the embedders whose mean features are matched: "current" = Θ's own features (frozen,
    # eval mode); "random" = a freshly initialised copy of the network per outer step (distribution
    # matching, Zhao & Bilen); "both" = the sum of the two losses.
    embedders: str = "current"
    # matching: what is matched per class under those embedders: "features" = the mean embedding of the
    # exemplars and of the real images; "gradients" = the network's cross-entropy gradients on the two
    # (layer-wise 1 - cos per output unit, gradient matching, Zhao et al. 2021; second order, dearer).
    match: str = "features"
    # unrolled: where Θ' starts. "current" = Θ_i, the model just trained on D_i (the paper); "previous" =
    # Θ_{i-1} (the model before this phase), its head's new-class rows imprinted from the exemplars' mean
    # features, so the T steps have the new classes to learn from the exemplars. Phase 0 has no Θ_{i-1}
    # and starts from Θ_i. "snapshot" = the phase's own model after `snapshot_epoch` epochs of its
    # model-level training (kept by the run as it trains, no extra training): a model that has not fit D_i
    # yet, in every phase including phase 0 (where phase 0 is reused by train.base_from: Θ_i).
    start: str = "current"
    # start=snapshot: epochs of the phase's first training stage after which the model is kept (a phase
    # shorter than that keeps its last epoch's model, Θ_i).
    snapshot_epoch: int = 1
    # Real data of the meta-loss (and of the prototype objective): "group" = the group's real images;
    # "phase" = those and the old classes' exemplars, so what the exemplars teach must not cost the old
    # classes (prototype always uses "phase", the authors' choice).
    meta_data: str = "group"

    def __post_init__(self) -> None:
        if self.inner_steps < 0 or self.epochs < 0:
            raise ValueError("mnemonics: inner_steps and epochs must be >= 0")
        if self.folds < 2:
            raise ValueError("mnemonics: folds must be >= 2")
        if min(self.lr_halve_every, self.val_batch_size, self.val_batches, self.snapshot_epoch) < 1:
            raise ValueError("mnemonics: lr_halve_every, val_batch_size, val_batches, snapshot_epoch must be >= 1")
        for key in ("adjust_epochs", "adjust_steps_per_epoch", "adjust_lr_halve_every"):
            value, least = getattr(self, key), 1 if key == "adjust_lr_halve_every" else 0
            if value is not None and (not isinstance(value, int) or value < least):
                raise ValueError(f"mnemonics: {key} must be an integer >= {least} or null, got {value!r}")
        if min(self.steps_per_epoch, self.inner_batch_size, self.checkpoint_segment) < 0:
            raise ValueError(
                "mnemonics: steps_per_epoch, inner_batch_size, checkpoint_segment must be >= 0")
        for key in ("val_bn", "inner_bn"):
            if getattr(self, key) not in ("batch", "running"):
                raise ValueError(f"mnemonics: {key} must be 'batch' or 'running', got {getattr(self, key)!r}")
        if self.meta_loss == "group" and self.meta_data == "phase":
            raise ValueError("mnemonics: meta_loss=group ranges over the group's classes only; it cannot score "
                             "the old exemplars of meta_data=phase")
        if not (0.0 <= self.momentum < 1.0 and 0.0 <= self.adjust_momentum < 1.0):
            raise ValueError(f"mnemonics: momentum and adjust_momentum must be in [0, 1), got {self.momentum} "
                             f"and {self.adjust_momentum}")
        if self.adjust_anchor < 0 or self.cosine_scale <= 0:
            raise ValueError("mnemonics: adjust_anchor must be >= 0 and cosine_scale > 0")
        for key, allowed in (("meta_loss", ("all", "group")), ("init", ("random", "herding")),
                             ("objective", OBJECTIVES), ("embedders", ("current", "random", "both")),
                             ("match", ("features", "gradients")),
                             ("start", ("current", "previous", "snapshot")), ("meta_data", ("group", "phase"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"mnemonics: {key} must be one of {allowed}, got {getattr(self, key)!r}")


def paper_settings(**overrides) -> MnemonicsSettings:
    """The paper's exemplar level (`PAPER`) with `overrides`."""
    return MnemonicsSettings(**{**PAPER, **overrides})


# ----------------------------------------------------------------------------------------------
# Functional forward with controlled BatchNorm behaviour
# ----------------------------------------------------------------------------------------------

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


def _inner_step(model: nn.Module, names: tuple[str, ...], frozen: Mapping[str, Tensor],
                buffers: Mapping[str, Tensor], x: Tensor, y: Tensor, lr: float, bn_train: bool,
                create_graph: bool, *params: Tensor) -> tuple[Tensor, ...]:
    """One SGD step of Θ' on (x, y) (Eq. 8). With create_graph=True the new parameters stay
    differentiable functions of the old ones *and* of x (the Hessian-vector path of Eq. 9)."""
    logits = _forward(model, {**frozen, **dict(zip(names, params))}, buffers, x, bn_train)
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return tuple(p if g is None else p - lr * g for p, g in zip(params, grads))


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
                    params = _inner_step(self.model, self.names, self.frozen, self.buffers, x, y,
                                         self.lr, self.bn_train, False, *params)
                params = tuple(p.detach() for p in params)
                continue
            args = (self.model, self.names, self.frozen, self.buffers, x, y, self.lr, self.bn_train,
                    True, *params)
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


def unroll(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
           ex_x: Tensor, ex_y: Tensor, steps: int, lr: float, checkpoint: bool = True,
           batch_indices: Sequence[Tensor] | None = None, segment: int = 0,
           inner_bn: str = "batch") -> dict[str, Tensor]:
    """Θ' after `steps` differentiable SGD steps on the exemplars (Eq. 8).

    `params` are the starting values Θ; those with requires_grad=True are trained (the others are
    held fixed), so pass e.g. ``{n: p.detach().requires_grad_() for n, p in ...}``. The result is
    differentiable w.r.t. `ex_x` (and the starting params). `batch_indices`, if given, holds one
    index tensor per step selecting the exemplars of that step (default: all, full batch).

    Memory with `checkpoint`: a checkpointed step keeps only its inputs, but the meta-backward
    needs every intermediate Θ'_t, so per-step checkpointing alone still holds T parameter-sized
    copies (resnet18: 47 MB each), which dominates when the exemplar batch is small. Two-level
    checkpointing (`_Segment`) fixes that: steps are grouped into segments of `segment` steps
    (0 = auto, ceil(sqrt(T))); only segment inputs are kept, and during the meta-backward one
    segment at a time is re-run with per-step checkpoints. Peak ~ (T/segment + segment) parameter
    copies + one step's activations, for one extra forward+backward per step.
    `segment=1` (or >= T) is plain per-step checkpointing. `inner_bn`: see MnemonicsSettings.
    """
    names = tuple(n for n, p in params.items() if p.requires_grad)
    frozen = {n: p for n, p in params.items() if not p.requires_grad}
    current = tuple(params[n] for n in names)
    ctx = _Unroll(model, names, frozen, buffers, ex_y, lr, batch_indices, inner_bn == "batch")
    seg = segment if segment > 0 else max(1, math.ceil(math.sqrt(steps)))
    if not torch.is_grad_enabled():
        current = ctx.run(range(steps), ex_x, current, False, False)
    elif not checkpoint or seg == 1 or seg >= steps:
        current = ctx.run(range(steps), ex_x, current, True, checkpoint)
    else:
        for start in range(0, steps, seg):
            current = _Segment.apply(ctx, range(start, min(start + seg, steps)), ex_x, *current)
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


def meta_loss_value(model: nn.Module, exemplars: Tensor, labels: Tensor, batches: Iterable[Batch],
                    settings: MnemonicsSettings) -> float:
    """The meta-loss L_c(Θ'(E); batches) as a number, without building a graph (diagnostics: compare
    the same real batches before and after optimising E)."""
    params, buffers = start_params(model)
    with torch.no_grad():
        theta = unroll(model, params, buffers, exemplars.detach(), labels.to(exemplars.device, torch.long),
                       settings.inner_steps, settings.inner_lr, inner_bn=settings.inner_bn)
        return validation_loss(model, theta, buffers, batches, settings.val_bn,
                               _meta_classes(labels.to(exemplars.device), settings)).item()


def unrolled_meta_loss(model: nn.Module, params: Mapping[str, Tensor],
                       buffers: Mapping[str, Tensor], ex_x: Tensor, ex_y: Tensor, val_x: Tensor,
                       val_y: Tensor, steps: int, lr: float, checkpoint: bool = True,
                       val_bn: str = "batch", segment: int = 0, inner_bn: str = "batch") -> Tensor:
    """L_c(Θ'(E); D) for one real batch: unroll T steps on (ex_x, ex_y), then CE on (val_x, val_y).

    Differentiable w.r.t. ex_x; ``torch.autograd.grad(loss, ex_x)`` is ∇_E of Eq. 9.
    """
    theta = unroll(model, params, buffers, ex_x, ex_y, steps, lr, checkpoint, segment=segment,
                   inner_bn=inner_bn)
    return validation_loss(model, theta, buffers, [(val_x, val_y)], val_bn)


# ----------------------------------------------------------------------------------------------
# Outer loops: Eq. 9 (new exemplars) and Eq. 10 (adjusting old exemplars)
# ----------------------------------------------------------------------------------------------

def start_params(model: nn.Module) -> tuple[dict, dict]:
    """(params, buffers) of Θ'_0 = Θ as new leaf tensors: gradients never reach the model's
    parameters or their .grad; parameters that require grad are the ones `unroll` trains."""
    params = {n: p.detach().requires_grad_(p.requires_grad) for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


def _generator(generator: torch.Generator | None, settings: MnemonicsSettings) -> torch.Generator:
    if generator is None:
        generator = torch.Generator().manual_seed(settings.seed)
    return generator


def _meta_classes(labels: Tensor, settings: MnemonicsSettings) -> Tensor | None:
    return torch.unique(labels.long()) if settings.meta_loss == "group" else None


def schedule(settings: MnemonicsSettings, lr: float, anchor: float = 0.0, adjust: bool = False) -> Schedule:
    """The outer loop of Eq. 9 (new exemplars, pixel rate `lr` = β1) or, `adjust`, of Eq. 10 (β2, with the
    adjustment's own momentum and outer loop; an `adjust_*` key left None takes Eq. 9's value)."""
    s = settings
    if not adjust:
        return Schedule(s.epochs, s.steps_per_epoch, s.val_batches, lr, s.lr_halve_every, s.momentum, anchor)
    def own(value, shared):
        return shared if value is None else value
    return Schedule(own(s.adjust_epochs, s.epochs), own(s.adjust_steps_per_epoch, s.steps_per_epoch), s.val_batches,
                    lr, own(s.adjust_lr_halve_every, s.lr_halve_every), s.adjust_momentum, anchor)


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


def unrolled_loss(model: nn.Module, labels: Tensor, settings: MnemonicsSettings, generator: torch.Generator,
                  classes: Tensor | None, augment: Augment | None = None,
                  start: tuple[dict, dict] | None = None) -> LossOf:
    """The paper's objective as `loss_of(x, real)`: unroll Θ' from Θ on the exemplars x for T steps (Eq. 8),
    then the cross-entropy of Θ' on the real batches (Eq. 9); `classes`: the meta-loss's classes (None =
    all). `augment(x)`, if given, is applied to the exemplars and to every real batch, differentiably.
    `start`: Θ'_0 as (params, buffers) when it is not Θ (`previous_params`)."""
    params, buffers = start if start is not None else start_params(model)
    n, b = len(labels), settings.inner_batch_size

    def loss_of(x: Tensor, real: list[Batch]) -> Tensor:
        idx = None
        if 0 < b < n:  # random exemplar subset per inner step, drawn from the generator only
            idx = [torch.randperm(n, generator=generator)[:b].to(x.device) for _ in range(settings.inner_steps)]
        if augment is not None:
            x, real = augment(x), [(augment(rx), ry) for rx, ry in real]
        theta = unroll(model, params, buffers, x, labels, settings.inner_steps, settings.inner_lr,
                       settings.checkpoint, idx, settings.checkpoint_segment, settings.inner_bn)
        return validation_loss(model, theta, buffers, real, settings.val_bn, classes)
    return loss_of


def _optimise(model: nn.Module, exemplars: Tensor, labels: Tensor, val_batches: ValBatches,
              settings: MnemonicsSettings, base_lr: float, generator: torch.Generator,
              progress: Progress | None, extra: dict, classes: Tensor | None, anchor: float = 0.0,
              augment: Augment | None = None, start: tuple[dict, dict] | None = None,
              adjust: bool = False) -> Tensor:
    """Eq. 9 / 10 (`adjust`) on one exemplar set; `classes`: the meta-loss's classes (None = all)."""
    labels = labels.to(device=exemplars.device, dtype=torch.long)
    loss_of = unrolled_loss(model, labels, settings, generator, classes, augment, start)
    x = descend(exemplars, loss_of, val_batches, schedule(settings, base_lr, anchor, adjust), progress, extra)
    return x.to(exemplars.dtype)


def optimise_exemplars(model: nn.Module, exemplars: Tensor, labels: Tensor,
                       val_batches: ValBatches, settings: MnemonicsSettings,
                       generator: torch.Generator | None = None,
                       progress: Progress | None = None, augment: Augment | None = None,
                       previous: nn.Module | None = None, snapshot: nn.Module | None = None) -> Tensor:
    """Train new-class mnemonics exemplars (Eq. 8-9); returns them detached (same shape, dtype,
    device). (The unrolled objective; exemplars/objectives/ has the others.)

    model       maps float images in [0,1] (N,C,H,W) to logits over the seen classes; not modified.
    exemplars   initial pixels (Algorithm 1 step 10: a random real subset), values in [0,1].
    labels      int64 indices into the logits, one per exemplar.
    val_batches callable ``epoch -> iterable of (x, y)`` real batches of the same classes (D_i).
                Each outer step takes `settings.val_batches` batches from that epoch's iterable;
                an epoch ends after `settings.steps_per_epoch` steps or when it is exhausted.
                Making it a function of the epoch lets the caller reshuffle deterministically.
    generator   only used when `settings.inner_batch_size` draws exemplar subsets; default is a
                fresh generator seeded with `settings.seed` (never the global RNG).
    progress    optional callback receiving {"epoch", "step", "loss", "lr"} after each outer step.
    augment     optional differentiable augmentation of the exemplars and the real batches.
    previous    Θ_{i-1}, where Θ' starts with `settings.start = "previous"` (None: start at Θ).
    snapshot    the model early in its training, the same architecture and head as `model`, where Θ'
                starts with `settings.start = "snapshot"` (None: start at Θ).
    """
    labels = labels.to(exemplars.device)
    start = None
    if settings.start == "previous" and previous is not None:
        start = previous_params(model, previous, exemplars.float(), labels.long())
    elif settings.start == "snapshot" and snapshot is not None:
        start = start_params(snapshot)
    return _optimise(model, exemplars, labels, val_batches, settings, settings.lr,
                     _generator(generator, settings), progress, {}, _meta_classes(labels, settings),
                     augment=augment, start=start)


def fold_ids(labels: Tensor, folds: int, generator: torch.Generator) -> Tensor:
    """Fold index per exemplar: each class's exemplars are permuted with the generator and dealt
    round-robin into `folds` folds (sizes within a class differ by at most one)."""
    labels = labels.cpu()
    ids = torch.empty_like(labels)
    for c in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        where = torch.nonzero(labels == c).flatten()
        perm = where[torch.randperm(len(where), generator=generator)]
        ids[perm] = torch.arange(len(perm)) % folds
    return ids


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


def adjust_exemplars(model: nn.Module, exemplars: Tensor, labels: Tensor,
                     settings: MnemonicsSettings, generator: torch.Generator | None = None,
                     progress: Progress | None = None, augment: Augment | None = None) -> Tensor:
    """Adjust old exemplars (Eq. 10): split each class into `settings.folds` folds; optimise each
    fold as the exemplar set of Eq. 8-9 with its complement as the real validation data, lr β2 and
    momentum `settings.adjust_momentum`; `settings.adjust_anchor` > 0 adds the pull towards the stored
    pixels (anchored Eq. 10). `augment`: the caller passes it only with `settings.adjust_augment`.

    Every fold is validated against the *unadjusted* complement (Eq. 10a and 10b both read the
    pre-adjustment E^A / E^B), so the result does not depend on the fold order. Returns the adjusted
    exemplars in the original order (same shape/dtype/device)."""
    generator = _generator(generator, settings)
    ids = fold_ids(labels, settings.folds, generator).to(exemplars.device)
    labels = labels.to(exemplars.device)
    classes = _meta_classes(labels, settings)     # the whole group's: a fold may miss a class
    out = exemplars.detach().clone()
    for f in range(settings.folds):
        inside, outside = ids == f, ids != f
        if not inside.any() or not outside.any():
            continue
        val = tensor_batches(exemplars[outside].detach(), labels[outside],
                             settings.val_batch_size, generator)
        out[inside] = _optimise(model, exemplars[inside], labels[inside], val, settings,
                                settings.adjust_lr, generator, progress, {"fold": f}, classes,
                                settings.adjust_anchor, augment, adjust=True)
    return out
