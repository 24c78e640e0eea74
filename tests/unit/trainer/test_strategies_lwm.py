"""LwM: the attention-distillation loss has a real gradient in the student's convolution weights
(it matches finite differences), Grad-CAM follows its definition, and the loss combines as Eq. 3."""
import pytest
import torch
import torch.nn.functional as F
from strategy_kit import batch, perturb, start

from trainer.methods.strategies.lwm import (
    attention_distillation_loss,
    grad_cam,
    lwm_terms,
)
from trainer.methods.strategies.stages import BalancedFinetune, Train

pytestmark = pytest.mark.usefixtures("one_thread")


def _student_teacher():
    strategy, model, ctx = start("lwm", 1)
    perturb(model.backbone, scale=0.3, seed=12)           # L_AD is 0 (and flat) while student == teacher
    model.double().train()
    strategy.teacher.double()
    b = batch(ctx.seen_labels, n=6, seed=4)
    return strategy, model, b.x.double()


def test_attention_loss_gradient_in_conv_weights_matches_finite_differences():
    strategy, model, x = _student_teacher()
    old, seen = strategy.num_old, strategy.num_seen

    def l_ad():
        return lwm_terms(model, strategy.teacher, x, old, seen)[2]

    convs = [model.backbone.layers[-1].conv2.weight, model.backbone.conv1.weight]
    loss = l_ad()
    assert loss.item() > 0
    grads = torch.autograd.grad(loss, convs)
    assert all(g.abs().max() > 0 for g in grads)
    g = torch.Generator().manual_seed(0)
    eps = 1e-6
    for w, grad in zip(convs, grads):
        flat = torch.randperm(w.numel(), generator=g)[:4]
        for i in flat.tolist():
            idx = torch.unravel_index(torch.tensor(i), w.shape)
            with torch.no_grad():
                w[idx] += eps
            up = l_ad().item()
            with torch.no_grad():
                w[idx] -= 2 * eps
            down = l_ad().item()
            with torch.no_grad():
                w[idx] += eps
            fd = (up - down) / (2 * eps)
            assert grad[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_student_map_keeps_the_gradient_through_the_gradcam_weights():
    """create_graph=True: L_AD reaches the head through α = ∂y_b/∂A (a detached α would not)."""
    strategy, model, x = _student_teacher()
    loss = lwm_terms(model, strategy.teacher, x, strategy.num_old, strategy.num_seen)[2]
    (gw,) = torch.autograd.grad(loss, [model.head.weight])
    assert gw[: strategy.num_old].abs().max() > 0


def test_grad_cam_definition():
    maps = torch.rand(2, 3, 4, 4, requires_grad=True)
    w = torch.randn(5, 3)
    scores = maps.mean((2, 3)) @ w.T
    cls = torch.tensor([1, 4])
    q = grad_cam(maps, scores, cls, create_graph=False)
    expect = F.relu((w[cls][:, :, None, None] / 16 * maps).sum(1))  # ∂y/∂A = w_c / (H·W), spatially constant
    torch.testing.assert_close(q, expect)
    a, b = torch.rand(3, 4, 4), torch.rand(3, 4, 4)
    ref = (F.normalize(a.flatten(1), dim=1) - F.normalize(b.flatten(1), dim=1)).abs().sum(1).mean()
    torch.testing.assert_close(attention_distillation_loss(a, b), ref)
    assert attention_distillation_loss(a, 3 * a).abs().item() < 1e-6     # scale-free, as Eq. 6


def test_lwm_loss_is_eq3():
    strategy, model, x = _student_teacher()
    b = batch(list(range(strategy.num_seen)), n=6, seed=4)
    out = strategy.loss(model, type(b)(x, b.y), Train())
    s = strategy.settings
    torch.testing.assert_close(out["loss"], out["ce"] + s.beta * out["kd"] + s.gamma * out["attention"])
    assert out["attention"].item() > 0 and out["kd"].item() > 0
    ft = strategy.loss(model, type(b)(x, b.y), BalancedFinetune())
    assert set(ft) == {"loss", "ce"}
