"""CIFAR-style ResNet (He et al. 2016, Sec. 4.2): 3 stages of n basic blocks, 16/32/64 channels.

ResNet-32 (n=5) is the paper's CIFAR-100 backbone; ResNet-20 (n=3) is a cheaper variant. The last
block has no final ReLU when `last_relu=False` (LUCIR applies its cosine classifier to pre-ReLU
features); `forward_maps` returns the last convolutional feature maps (for Grad-CAM in LwM).
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, last_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.last_relu = last_relu
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.relu(out) if self.last_relu else out


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 32, last_relu: bool = True):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                is_last = stage == 2 and b == n - 1
                layers.append(BasicBlock(cin, cout, stride, last_relu=last_relu or not is_last))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_dim = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).mean((2, 3))
