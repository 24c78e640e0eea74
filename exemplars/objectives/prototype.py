"""The `prototype` objective: the exemplar step of the mnemonics authors' released code, one level.

Θ (the phase's trained model) is frozen and in eval mode. A cosine classifier over every class the
group can be confused with is built from exemplars: the weight of each of the group's classes is the
L2-normalised mean of its exemplars' L2-normalised features (a function of the pixels being
optimised), and the weight of each old class is its stored class mean (fixed). The loss is the
cross-entropy of `scale`·cos(feature, weight) on real batches: the group's real images and the old
exemplars. Lowering it moves each class's exemplar mean to where it separates that class's real images
from the old classes and from the group's other classes: the NME prototype the memory will stand for.

There is no inner model to unroll, so a step costs one forward and backward of the exemplars and one
forward of a real batch (no gradient); BatchNorm uses Θ's running statistics throughout.
Settings: `exemplars.optimised.prototype`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exemplars.objectives.base import GroupTask, Objective, register
from exemplars.pixel_descent import Batch, LossOf, ValBatches


@dataclass
class PrototypeSettings:
    cosine_scale: float = 16.0           # scale (inverse temperature) of the cosine classifier's logits

    def __post_init__(self) -> None:
        if self.cosine_scale <= 0:
            raise ValueError(f"prototype: cosine_scale must be > 0, got {self.cosine_scale}")


def prototype_loss(model: nn.Module, labels: Tensor, old_means: Tensor | None, old_labels: list[int],
                   scale: float, augment=None) -> LossOf:
    """`loss_of(x, real)` for exemplars `x` with `labels`; `old_means` (len(old_labels), d): the old classes'
    stored class means (L2-normalised), or None. Real labels must be the group's or old labels."""
    group = torch.unique(labels).tolist()
    classes = list(old_labels) + group
    column = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=labels.device)
    column[torch.tensor(classes, device=labels.device)] = torch.arange(len(classes), device=labels.device)
    members = [labels == c for c in group]
    fixed = old_means.to(labels.device) if old_means is not None and len(old_labels) else None

    def loss_of(x: Tensor, real: list[Batch]) -> Tensor:
        f = F.normalize(model.features(x if augment is None else augment(x)), dim=1)
        w = F.normalize(torch.stack([f[m].mean(0) for m in members]), dim=1)
        w = w if fixed is None else torch.cat([fixed.to(w.dtype), w])
        losses = []
        for rx, ry in real:
            with torch.no_grad():
                fr = F.normalize(model.features(rx if augment is None else augment(rx)), dim=1)
            losses.append(F.cross_entropy(scale * fr @ w.T, column[ry]))   # -1 (unknown label) fails here
        return torch.stack(losses).mean()
    return loss_of


@register
class Prototype(Objective):
    name = "prototype"
    Settings = PrototypeSettings

    def loss(self, task: GroupTask) -> tuple[LossOf, ValBatches]:
        means, old = task.old.means(task.model, task.ctx)
        return (prototype_loss(task.model, task.y, means, old, self.settings.cosine_scale, task.augment),
                task.real_batches(with_old=True))
