"""The networks the matching objectives embed with: a frozen copy of Θ, or one whose weights are drawn afresh."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

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
