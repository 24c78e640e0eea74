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
