import pytest
import torch

from trainer.methods.losses import kd_loss
from trainer.run.metrics import MetricsLog, average_accuracy, forgetting


def test_average_accuracy_and_forgetting_follow_the_paper():
    phases = [{"accuracy": 80.0, "accuracy_base": 80.0}, {"accuracy": 60.0, "accuracy_base": 70.0},
              {"accuracy": 40.0, "accuracy_base": 50.0}]
    assert average_accuracy(phases) == pytest.approx(60.0)      # mean over all N+1 phases
    assert forgetting(phases) == pytest.approx(30.0)             # A^Z_0 - A^Z_N on D_0^test
    log = MetricsLog(3)
    for p in phases[:2]:
        log.add({"phase": 0, "classes_seen": 1, "accuracy_old": None, "accuracy_new": 1.0, **p}, [1.0], None)
    s = log.summary()
    assert s["status"] == "running" and s["phases_done"] == 2
    assert "Ā" in log.table()


def test_kd_has_zero_gradient_when_student_equals_teacher():
    logits = torch.randn(6, 5, requires_grad=True)
    loss = kd_loss(logits, logits.detach().clone(), tau=2.0)
    (g,) = torch.autograd.grad(loss, logits)
    assert g.abs().max() < 1e-6
    other = kd_loss(torch.randn(6, 5, requires_grad=True), logits.detach(), 2.0)
    assert other > loss
