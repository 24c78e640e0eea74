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
