"""LwM (Dhar et al., "Learning without Memorizing", CVPR 2019): L = L_C + β·L_D + γ·L_AD.

- L_C: cross-entropy over all seen classes.
- L_D: LwF-MC's distillation on the base (old) classes' logits, sigmoid targets from the teacher
  (trainer.methods.losses.sigmoid_kd).
- L_AD: attention distillation. For every image, b is the top base class predicted by the student.
  Grad-CAM at the last convolutional layer (`model.forward_maps`): α_k = spatial mean of ∂y_b/∂A_k,
  Q = ReLU(Σ_k α_k A_k), for the teacher and the student; L_AD is the L1 distance between the
  L2-normalised vectorised maps (LwM Eq. 6), batch mean.

The student's map is differentiable in the student's weights: its gradient ∂y_b/∂A is taken with
`create_graph=True`, so L_AD back-propagates through both the feature maps A and the Grad-CAM weights
α (public versions compute the maps under no_grad, which leaves L_AD without a gradient). The teacher's
map is a constant.

LwM's own setting is exemplar-free (exemplars.per_class=0: the memory stays empty and the balanced
fine-tune is skipped); with exemplars it rehearses them like the other methods. β and γ are not given
in the paper; docs/strategies.md describes how to choose them on a held-out validation split. The incremental
phases train at the paper's rate, 0.01 (`incremental_lr`): at the run's 0.1 with momentum, L_D and L_AD hold
the features where the teacher had them, so the classification loss can fit a phase's new classes only by
growing their head, and with few exemplars against many new images the head then predicts the newest class for
everything (measured on glyphs with one-class phases, and in FACIL's LwM at the same rate: the base classes fall
to 0-20 %).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from trainer.methods.losses import sigmoid_kd
from trainer.methods.strategies.base import Batch, Strategy, register
from trainer.methods.strategies.stages import Stage


def grad_cam(maps: torch.Tensor, scores: torch.Tensor, cls: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) of the classes `cls` (B,) from feature maps `maps` (B, K, H, W) that
    `scores` (B, C) were computed from."""
    y = scores.gather(1, cls[:, None]).sum()
    (g,) = torch.autograd.grad(y, maps, create_graph=create_graph, retain_graph=True)
    alpha = g.mean(dim=(2, 3), keepdim=True)              # neuron importance: GAP of the gradients
    return F.relu((alpha * maps).sum(1))


def attention_distillation_loss(q_student: torch.Tensor, q_teacher: torch.Tensor) -> torch.Tensor:
    """LwM Eq. 6: Σ_j |Q_s/‖Q_s‖₂ - Q_t/‖Q_t‖₂| over the vectorised maps, batch mean."""
    qs = F.normalize(q_student.flatten(1), dim=1)
    qt = F.normalize(q_teacher.flatten(1), dim=1)
    return (qs - qt).abs().sum(1).mean()


def lwm_terms(model, teacher, x: torch.Tensor, num_old: int, num_seen: int):
    """(student logits over seen classes, L_D, L_AD) for a batch; the student's map keeps its graph."""
    maps = model.forward_maps(x)
    logits = model.head(maps.mean(dim=(2, 3)))[:, :num_seen]
    b = logits[:, :num_old].detach().argmax(1)             # top base class predicted by the student
    with torch.enable_grad():
        with torch.no_grad():
            t_maps = teacher.forward_maps(x)
        t_maps = t_maps.detach().requires_grad_(True)
        t_old = teacher.head(t_maps.mean(dim=(2, 3)))[:, :num_old]
        q_t = grad_cam(t_maps, t_old, b, create_graph=False).detach()
    q_s = grad_cam(maps, logits[:, :num_old], b, create_graph=True)
    return logits, sigmoid_kd(logits[:, :num_old], t_old.detach()), attention_distillation_loss(q_s, q_t)


@dataclass
class LwMSettings:
    beta: float = 2.0                    # weight of L_D (sigmoid distillation); chosen on validation, docs/strategies.md
    gamma: float = 4.0                   # weight of L_AD (Grad-CAM attention distillation); ditto
    # starting rate of the incremental phases (the paper: "a learning rate of 0.01"; null: train.lr);
    # train.incremental_lr, when set, takes precedence
    incremental_lr: Optional[float] = 0.01


@register
class LwM(Strategy):
    name = "lwm"
    Settings = LwMSettings
    before_keys = {"incremental_lr": None}       # a stored config without it trained at the run's rate

    def incremental_lr(self) -> float | None:
        return self.settings.incremental_lr

    def loss(self, model, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        if not stage.distills or self.teacher is None or self.num_old == 0:
            ce = F.cross_entropy(model(batch.x)[:, : self.num_seen], batch.y)
            return {"loss": ce, "ce": ce}
        s = self.settings
        logits, ld, lad = lwm_terms(model, self.teacher, batch.x, self.num_old, self.num_seen)
        ce = F.cross_entropy(logits, batch.y)
        return {"loss": ce + s.beta * ld + s.gamma * lad, "ce": ce, "kd": ld, "attention": lad}
