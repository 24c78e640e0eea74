"""Weight transfer: scale/shift over frozen convolution weights, folded back into plain weights with
identical outputs and the plain network's parameter names."""
import copy

import pytest
import torch
from torch import nn

from trainer.methods.models import weight_transfer as wt
from trainer.methods.models.net import IncrementalNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_a_little(model, x, steps=3):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        model(x).logsumexp(1).mean().backward()
        opt.step()


def test_fold_gives_a_plain_network_with_identical_outputs():
    torch.manual_seed(0)
    model = IncrementalNet("resnet20", "cifar")
    model.head.grow(5)
    names = [n for n, _ in model.named_parameters()]
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "conv" in n or "shortcut.0" in n}
    n = wt.apply(model.backbone)
    assert n == sum(isinstance(m, nn.Conv2d) for m in model.backbone.modules()) and wt.is_applied(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith(".original") for n in trainable)
    assert any(n.endswith(".scale") for n in trainable) and "head.weight" in trainable
    x = torch.rand(8, 3, 16, 16)
    model.train()
    _train_a_little(model, x)
    for name, w in frozen.items():                         # the previous phase's conv weights did not move
        mod = model.backbone.get_submodule(name.rsplit(".", 1)[0])
        assert torch.equal(mod.parametrizations.weight.original, w)
    scales = wt.transfer_parameters(model.backbone)
    assert any((s - 1).abs().max() > 0 for s in scales)       # the transfer did learn something
    with torch.no_grad():                  # train-mode forwards update BatchNorm statistics: use copies
        before_eval = model.eval()(x)
        before_train = copy.deepcopy(model).train()(x)
    assert wt.fold(model.backbone) == n and not wt.is_applied(model)
    assert [n for n, _ in model.named_parameters()] == names
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), before_eval, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(copy.deepcopy(model).train()(x), before_train, rtol=1e-5, atol=1e-6)
    fresh = IncrementalNet("resnet20", "cifar")
    fresh.head.grow(5)
    fresh.load_state_dict(model.state_dict())                  # a sealed phase loads into a plain network


def test_conv_with_bias_gets_a_shift_and_folds_exactly():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))
    wt.apply(net)
    assert net[0].parametrizations.bias[0].shift.shape == (4,)
    assert not hasattr(net[2].parametrizations, "bias")
    assert net[0].parametrizations.weight[0].scale.shape == (4, 3, 1, 1)
    with torch.no_grad():
        for p in wt.transfer_parameters(net):
            p.uniform_(-1.5, 1.5)
    x = torch.rand(2, 3, 6, 6)
    y = net(x)
    wt.fold(net)
    torch.testing.assert_close(net(x), y)
    assert set(dict(net.named_parameters())) == {"0.weight", "0.bias", "2.weight"}
