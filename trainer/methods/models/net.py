"""The incremental network: input normalisation, a backbone, and a growing head.

Inputs are float images in [0,1] (normalisation lives in the model, so exemplar pixels are images
and loaders need not normalise). `forward` returns logits; `features` the pooled embedding used by
herding and NME; `forward_maps` the last convolutional maps (LwM's Grad-CAM).

The network computes in channels_last: its input is laid out NHWC in memory (a no-op for a loader that
already emits channels_last), which selects the NHWC convolutions of cuDNN (tensor cores) and oneDNN
(ResNet-20 at 32 px on 2 cores: 270 -> 350 img/s, docs/benchmarks.md) from any caller: training, the
teacher, evaluation, exemplar optimisation. The parameters keep the default layout: DeepSpeed views
them as flat byte buffers (its broadcast, ZeRO 1/2's partitions), which channels_last parameters
break, and a convolution with channels_last input and contiguous weights computes the same bits.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import UserError
from trainer.methods.models.heads import LinearHead
from trainer.methods.models.resnet_cifar import CifarResNet

MEAN_STD = {
    "glyphs": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "cifar": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class TimmBackbone(nn.Module):
    """timm ResNet-18 without its classifier; `forward_maps` gives the last stage's maps."""

    def __init__(self, name: str = "resnet18", last_relu: bool = True):
        super().__init__()
        import timm

        self.net = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
        self.out_dim = self.net.num_features
        if not last_relu:                      # LUCIR: features of the last block before its ReLU
            self.net.layer4[-1].act2 = nn.Identity()

    def forward_maps(self, x):
        return self.net.forward_features(x)

    def forward(self, x):
        return self.forward_maps(x).mean((2, 3))


def build_backbone(arch: str, last_relu: bool = True) -> nn.Module:
    """`last_relu=False` drops the ReLU after the last residual block (LUCIR's cosine classifier)."""
    if arch == "resnet32":
        return CifarResNet(32, last_relu=last_relu)
    if arch == "resnet20":
        return CifarResNet(20, last_relu=last_relu)
    if arch == "resnet18":
        return TimmBackbone("resnet18", last_relu=last_relu)
    raise UserError(f"unknown model.arch '{arch}' (known: resnet32, resnet20, resnet18)")


class IncrementalNet(nn.Module):
    def __init__(self, arch: str, preset: str, head: nn.Module | None = None, last_relu: bool = True):
        super().__init__()
        self.normalize = Normalize(*MEAN_STD[preset])
        self.backbone = build_backbone(arch, last_relu)
        self.head = head if head is not None else LinearHead(self.backbone.out_dim)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward_maps(self, x):
        return self.backbone.forward_maps(self.normalize(x).contiguous(memory_format=torch.channels_last))

    def features(self, x):
        return self.forward_maps(x).mean((2, 3))

    def forward(self, x):
        return self.head(self.features(x))
