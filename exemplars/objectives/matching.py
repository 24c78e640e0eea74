"""The `matching` objective: per-class mean-embedding matching, first order (no unroll).

For each class of the group, the squared distance between the mean embedding of its (augmented)
exemplars and the mean embedding of its (augmented) real images in the step's real batches, summed
over the classes present. Embedders (`exemplars.optimised.matching.embedders`):

  current  Θ's own L2-normalised features, frozen, eval mode: the space herding and the NME classifier
           work in, so the exemplars' mean is pulled to the class mean there (herding can only pick it).
  random   a freshly initialised copy of the network at every outer step, BatchNorm on batch
           statistics (distribution matching, Zhao & Bilen 2023): the exemplars must match the real
           images under many random feature maps, not only under the one Θ has learned. Its features
           are L2-normalised too (unlike DM), so both embedders' losses have one scale and one β1.
  both     the sum of the two.

One forward and backward of the exemplars and one forward of the real batch per embedder and step.
With `match=gradients` the objective matches per-class network gradients instead (gradient_matching.py).
Settings: `exemplars.optimised.matching`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import seeds
from data_pipeline.loading.augment import device_generator
from exemplars.objectives.base import GroupTask, Objective, register
from exemplars.objectives.embedders import embedder_copy, redraw
from exemplars.objectives.gradient_matching import gradient_matching_loss
from exemplars.pixel_descent import Batch, LossOf, ValBatches

EMBEDDERS = ("current", "random", "both")


@dataclass
class MatchingSettings:
    # the embedders whose features are matched: "current" = Θ's own (frozen, eval mode); "random" = a freshly
    # initialised copy of the network per outer step (distribution matching, Zhao & Bilen); "both" = the sum
    embedders: str = "current"
    # what is matched per class under them: "features" = the mean embedding of the exemplars and of the real
    # images; "gradients" = the network's cross-entropy gradients on the two (gradient matching, Zhao et al.
    # 2021; second order, dearer)
    match: str = "features"

    def __post_init__(self) -> None:
        for key, allowed in (("embedders", EMBEDDERS), ("match", tuple(MATCH_LOSSES))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"matching: {key} must be one of {allowed}, got {getattr(self, key)!r}")


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


# exemplars.optimised.matching.match -> the loss builder (the selection and `mnemo profile mnemonics --objectives`)
MATCH_LOSSES = {"features": matching_loss, "gradients": gradient_matching_loss}


@register
class Matching(Objective):
    name = "matching"
    Settings = MatchingSettings

    def loss(self, task: GroupTask) -> tuple[LossOf, ValBatches]:
        ctx = task.ctx
        gen = device_generator(seeds.generator("exemplars", ctx.seed, ctx.phase, task.group[0], 4), ctx.device)
        s = self.settings
        return (MATCH_LOSSES[s.match](task.model, task.y, s.embedders, gen, task.augment),
                task.real_batches(with_old=False))
