"""Loss terms shared by strategies."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 1 of the mnemonics paper: -sum_k softmax(p_hat/tau)_k log softmax(p/tau)_k, batch mean.

    Multiplied by tau^2 (Hinton et al.) so its gradient scale does not shrink with the temperature.
    Zero gradient (and loss equal to the teacher entropy) when student == teacher.
    """
    target = F.softmax(teacher_logits / tau, dim=1)
    return -(target * F.log_softmax(student_logits / tau, dim=1)).sum(1).mean() * tau * tau


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float,
          tau_squared: bool = True) -> torch.Tensor:
    """Eq. 1 minus the teacher's entropy, i.e. KL(teacher || student) at temperature tau, batch mean.

    Same gradient as `kd_loss` (the entropy does not depend on the student), but its value is zero
    when student == teacher, so a logged KD term reads as "how far the student has moved".
    `tau_squared` multiplies by tau^2 (Hinton et al.); BiC's Eq. 3 does not.
    """
    t = F.log_softmax(teacher_logits / tau, dim=1)
    s = F.log_softmax(student_logits / tau, dim=1)
    kl = (t.exp() * (t - s)).sum(1).mean()
    return kl * tau * tau if tau_squared else kl


def sigmoid_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """LwF-MC's distillation as iCaRL implements it (and LwM's L_D): per-class binary cross-entropy of
    sigmoid(student) against the targets sigmoid(teacher), summed over classes, batch mean, minus the
    targets' own entropy (a Bernoulli KL: same gradient, zero when student == teacher)."""
    q = torch.sigmoid(teacher_logits)
    bce = F.binary_cross_entropy_with_logits(student_logits, q, reduction="none")
    ent = F.binary_cross_entropy_with_logits(teacher_logits, q, reduction="none")
    return (bce - ent).sum(1).mean()


def sigmoid_ce(logits: torch.Tensor, labels: torch.Tensor, first: int = 0) -> torch.Tensor:
    """iCaRL's classification term: per-class binary cross-entropy against one-hot targets on the
    columns `first:` of `logits` (labels outside them give all-zero targets), summed over classes,
    batch mean."""
    cols = logits[:, first:]
    target = torch.zeros_like(cols)
    inside = (labels >= first) & (labels < logits.shape[1])
    rows = torch.nonzero(inside).squeeze(1)
    target[rows, labels[rows] - first] = 1.0
    return F.binary_cross_entropy_with_logits(cols, target, reduction="none").sum(1).mean()


def lwf_mc_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_old: torch.Tensor | None,
                num_old: int) -> dict[str, torch.Tensor]:
    """iCaRL's representation-learning loss (= LwF-MC; iCaRL, Algorithm 3): binary cross-entropy with
    one-hot targets on the new classes and the teacher's sigmoid outputs as targets on the old ones.
    Without a teacher (phase 0, or a stage without distillation) every class gets one-hot targets."""
    if teacher_old is None or num_old == 0:
        ce = sigmoid_ce(logits, labels)
        return {"loss": ce, "ce": ce}
    ce = sigmoid_ce(logits, labels, first=num_old)
    kd = sigmoid_kd(logits[:, :num_old], teacher_old)
    return {"loss": ce + kd, "ce": ce, "kd": kd}
