"""Classifier heads that grow by appending classes, keeping the old classes' weights."""
from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int = 0):
        super().__init__()
        self.in_dim = in_dim
        self.weight = nn.Parameter(torch.empty(0, in_dim))
        self.bias = nn.Parameter(torch.empty(0))
        if num_classes:
            self.grow(num_classes)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def grow(self, n_new: int, generator: torch.Generator | None = None) -> None:
        """Append `n_new` freshly initialised classes (nn.Linear's default init)."""
        bound = 1.0 / self.in_dim ** 0.5
        w = torch.empty(n_new, self.in_dim).uniform_(-bound, bound, generator=generator)
        b = torch.empty(n_new).uniform_(-bound, bound, generator=generator)
        dev = self.weight.device
        self.weight = nn.Parameter(torch.cat([self.weight.data, w.to(dev, self.weight.dtype)]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, b.to(dev, self.bias.dtype)]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(features, self.weight, self.bias)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class CosineHead(nn.Module):
    """LUCIR's cosine-normalised classifier (Hou et al., CVPR 2019): logits = sigma * cos(f, w_c).

    `sigma` is a learnable scale. The class weights are kept as one parameter per growth step (one
    per phase) so that a strategy can freeze the old classes' weights (LUCIR trains only the new
    classes' weights in incremental phases). `cosine` gives the unscaled scores in [-1, 1].
    """

    def __init__(self, in_dim: int, num_classes: int = 0, sigma: float = 1.0):
        super().__init__()
        self.in_dim = in_dim
        self.weights = nn.ParameterList()
        self.sigma = nn.Parameter(torch.full((1,), float(sigma)))
        if num_classes:
            self.grow(num_classes)

    @property
    def num_classes(self) -> int:
        return sum(w.shape[0] for w in self.weights)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat(list(self.weights)) if len(self.weights) else self.sigma.new_empty(0, self.in_dim)

    def grow(self, n_new: int, generator: torch.Generator | None = None) -> None:
        """Append `n_new` classes, initialised uniformly in ±1/sqrt(d) as LUCIR's CosineLinear."""
        bound = 1.0 / self.in_dim ** 0.5
        w = torch.empty(n_new, self.in_dim).uniform_(-bound, bound, generator=generator)
        self.weights.append(nn.Parameter(w.to(self.sigma.device, self.sigma.dtype)))

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(nn.functional.normalize(features, dim=1),
                                    nn.functional.normalize(self.weight, dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma * self.cosine(features)


class BiasCorrectedHead(nn.Module):
    """BiC's bias correction (Wu et al., CVPR 2019) around any growing head.

    Every growth step j (one per phase) gets its own two-parameter layer: the logits o of the classes
    added in step j become alpha_j * o + beta_j. A new layer starts as the identity (alpha 1, beta 0);
    BiC trains only the newest layer, in its own stage, and keeps the older ones fixed.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.alphas = nn.ParameterList()
        self.betas = nn.ParameterList()
        self.sizes: list[int] = []

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    def grow(self, n_new: int, generator: torch.Generator | None = None) -> None:
        self.inner.grow(n_new, generator=generator)
        dev = _device_of(self.inner)
        self.alphas.append(nn.Parameter(torch.ones(1, device=dev)))
        self.betas.append(nn.Parameter(torch.zeros(1, device=dev)))
        self.sizes.append(n_new)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.inner(features)
        parts, start = [], 0
        for alpha, beta, n in zip(self.alphas, self.betas, self.sizes):
            parts.append(out[:, start: start + n] * alpha + beta)
            start += n
        return torch.cat(parts, dim=1) if parts else out
