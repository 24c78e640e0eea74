"""The engine clips the gradient only where the config says so. DeepSpeed's own default (`gradient_clipping`
1.0) clipped every step of every mnemo run at global norm 1 until the engine set it: found by running one phase
of LwF in lockstep with FACIL's, where mnemo's step was a third of torch SGD's on the same gradient
(docs/parity.md)."""
import copy

import pytest
import torch
from torch import nn

from trainer.config import load_config, stored_defaults
from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine


def _step(clip: float):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x, y = torch.randn(8, 16) * 10, torch.randint(0, 4, (8,))      # inputs large enough for a gradient norm > 1
    ref = copy.deepcopy(model)
    loss = nn.functional.cross_entropy(ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with Engine(model, distributed.init("cpu"), 8, 0.1, 0.0, 0.0, grad_clip=clip) as engine:
        engine.step(nn.functional.cross_entropy(engine.module(x), y))
    moved = [p.detach() - q.detach() for p, q in zip(model.parameters(), ref.parameters())]
    return moved, grads, float(norm)


def test_without_clipping_the_step_is_sgds():
    moved, grads, norm = _step(0.0)
    assert norm > 2.0                                            # the clipped case below would have shrunk it
    for m, g in zip(moved, grads):
        torch.testing.assert_close(m, -0.1 * g, rtol=1e-5, atol=1e-7)


def test_clipping_scales_the_step_to_the_norm_asked():
    moved, grads, norm = _step(1.0)
    for m, g in zip(moved, grads):
        torch.testing.assert_close(m, -0.1 * g / norm, rtol=1e-4, atol=1e-7)


def test_the_key_defaults_off_and_older_runs_read_as_clipped():
    assert load_config(None).train.grad_clip == 0.0
    assert load_config("configs/glyphs.yaml").train.grad_clip == 1.0   # what every recorded glyph figure used
    assert stored_defaults()["train"]["grad_clip"] == 1.0               # a config.yaml written before the key


def test_a_negative_clip_is_refused():
    from core.errors import UserError
    with pytest.raises(UserError, match="train.grad_clip"):
        load_config(None, ["train.grad_clip=-1"])
