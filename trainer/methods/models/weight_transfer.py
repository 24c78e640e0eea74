"""Weight transfer operations (mnemonics paper, Sec. 5.1: "weight transfer operations [MTL, FiLM]
rather than standard weight over-writing"), applied in its "w/ ours" results.

In an incremental phase the convolution weights W of the previous phase are frozen and the network
learns a scaling S on top of them, one scalar per (output channel, input channel) pair as MTL's
Conv2dMtl does (S has shape (C_out, C_in/groups, 1, 1), initialised to 1), and, for convolutions that
have a bias, a per-output-channel shift b (initialised to 0):

    conv(x; W ⊙ S) + (bias + b)

Convolutions without a bias get no shift: in these ResNets every such convolution feeds a BatchNorm,
whose batch mean would cancel a constant per-channel shift exactly (zero gradient), as in MTL's code,
where the shift of a bias-free convolution is never used.

At the end of the phase the operations are folded back: W <- W ⊙ S and bias <- bias + b. The network
is a plain network again, with the same parameter names and identical outputs, so sealed phases,
exemplar code and the next phase's teacher never see the transfer parameters.

Implemented with `torch.nn.utils.parametrize`: the module tree is not changed, `conv.weight` is
computed from the frozen original and the scale, and `torch.func.functional_call` (mnemonics'
unrolled inner loop) and `copy.deepcopy` work on the parametrised model. The engine trains only
`requires_grad` parameters, so the frozen originals are left alone by the optimizer.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class ChannelScale(nn.Module):
    """weight -> weight * scale, scale of shape (C_out, C_in/groups, 1, ...)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        shape = tuple(weight.shape[:2]) + (1,) * (weight.dim() - 2)
        self.scale = nn.Parameter(torch.ones(shape, device=weight.device, dtype=weight.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale


class ChannelShift(nn.Module):
    """bias -> bias + shift (per output channel)."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros_like(bias))

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias + self.shift


def _convs(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def is_applied(module: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in _convs(module))


def apply(module: nn.Module) -> int:
    """Freeze every Conv2d weight (and bias) under `module` behind learnable scale (and shift)
    parameters. Returns the number of convolutions transformed; a no-op where already applied."""
    n = 0
    for conv in _convs(module):
        if parametrize.is_parametrized(conv):
            continue
        parametrize.register_parametrization(conv, "weight", ChannelScale(conv.weight))
        conv.parametrizations.weight.original.requires_grad_(False)
        if conv.bias is not None:
            parametrize.register_parametrization(conv, "bias", ChannelShift(conv.bias))
            conv.parametrizations.bias.original.requires_grad_(False)
        n += 1
    return n


def transfer_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The learnable scale/shift parameters currently applied under `module`."""
    out = []
    for conv in _convs(module):
        if parametrize.is_parametrized(conv):
            for plist in conv.parametrizations.values():
                for p in plist:
                    out.extend(p.parameters())
    return out


@torch.no_grad()
def fold(module: nn.Module) -> int:
    """Fold scale/shift into plain weights (W <- W ⊙ S, bias <- bias + b) and remove the operations;
    the folded weights are ordinary trainable parameters again. Returns the number folded."""
    n = 0
    for conv in _convs(module):
        if not parametrize.is_parametrized(conv):
            continue
        for name in list(conv.parametrizations.keys()):
            parametrize.remove_parametrizations(conv, name, leave_parametrized=True)
            getattr(conv, name).requires_grad_(True)
        n += 1
    return n
