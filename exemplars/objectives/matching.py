"""The `matching` objective: per-class mean-embedding matching, first order (no unroll).

For each class of the group, the squared distance between the mean embedding of its (augmented)
exemplars and the mean embedding of its (augmented) real images in the step's real batches, summed
over the classes present. Embedders (`MnemonicsSettings.embedders`):

  current  Θ's own L2-normalised features, frozen, eval mode: the space herding and the NME classifier
           work in, so the exemplars' mean is pulled to the class mean there (herding can only pick it).
  random   a freshly initialised copy of the network at every outer step, BatchNorm on batch
           statistics (distribution matching, Zhao & Bilen 2023): the exemplars must match the real
           images under many random feature maps, not only under the one Θ has learned. Its features
           are L2-normalised too (unlike DM), so both embedders' losses have one scale and one β1.
  both     the sum of the two.

One forward and backward of the exemplars and one forward of the real batch per embedder and step.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exemplars.pixel_descent import Batch, LossOf

_BN = nn.modules.batchnorm._BatchNorm


def redraw(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give `net` fresh weights in place, drawn from `generator` only (never the global RNG): He-normal
    weights for every parameter with a fan-in, BatchNorm at (1, 0), biases at 0."""
    with torch.no_grad():
        for module in net.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, _BN) or p.dim() < 2:
                    p.fill_(1.0 if (isinstance(module, _BN) and name == "weight") else 0.0)
                else:
                    std = math.sqrt(2.0 / p[0].numel())
                    p.copy_(torch.randn(p.shape, generator=generator, device=generator.device) * std)
    return net


def embedder_copy(model: nn.Module, bn_batch: bool = True, weight_grads: bool = False) -> nn.Module:
    """A copy of `model` to embed with: every module in eval mode except BatchNorm, which normalises with batch
    statistics where `bn_batch` (fresh weights make Θ's running statistics meaningless); gradients only to
    its weight matrices and kernels where `weight_grads` (gradient matching), to no parameter otherwise."""
    net = copy.deepcopy(model)
    for p in net.parameters():
        p.requires_grad_(weight_grads and p.dim() >= 2)
    for m in net.modules():
        m.training = bn_batch and isinstance(m, _BN)
    return net


def _class_means(f: Tensor, labels: Tensor, classes: list[int]) -> tuple[Tensor, Tensor]:
    """(len(classes), d) means of f per class, and which classes have any row (absent ones are 0)."""
    onehot = (labels[:, None] == torch.tensor(classes, device=labels.device)[None, :]).to(f.dtype)
    counts = onehot.sum(0)
    return (onehot.T @ f) / counts.clamp(min=1)[:, None], counts > 0


def matching_loss(model: nn.Module, labels: Tensor, embedders: str, generator: torch.Generator,
                  augment=None) -> LossOf:
    """`loss_of(x, real)` for exemplars `x` with `labels` (the group's classes); `generator` (on x's device)
    draws the fresh embedders' weights."""
    group = torch.unique(labels).tolist()
    fresh = embedder_copy(model) if embedders in ("random", "both") else None
    views = []
    if embedders in ("current", "both"):
        views.append(lambda z: F.normalize(model.features(z), dim=1))
    if fresh is not None:
        views.append(lambda z: F.normalize(fresh.features(z), dim=1))

    def loss_of(x: Tensor, real: list[Batch]) -> Tensor:
        if fresh is not None:
            redraw(fresh, generator)
        xa = x if augment is None else augment(x)
        rx = torch.cat([bx for bx, _ in real])
        ry = torch.cat([by for _, by in real])
        rx = rx if augment is None else augment(rx)
        total = x.new_zeros(())
        for embed in views:
            mine, _ = _class_means(embed(xa), labels, group)
            with torch.no_grad():
                target, present = _class_means(embed(rx), ry, group)
            total = total + ((mine - target) ** 2).sum(1).mul(present).sum()
        return total
    return loss_of
