"""The `matching` objective with `match=gradients`: per-class gradient matching (Zhao, Mopuri & Bilen, ICLR 2021).

For each class of the group present in the step's real batches, a network's cross-entropy gradient on
the class's (augmented) real images is the target, and its gradient on the class's (augmented)
exemplars must point the same way: per class, Σ_rows (1 - cos) between the two gradients over the
network's weight matrices and kernels, every output unit's row compared on its own (the paper's
layer-wise distance; biases and BatchNorm are left out, as there), divided by the number of rows, so a
class's term lies in [0, 2] whatever the network's width; the loss sums the classes' terms. The exemplars
then teach a network what the real class would teach it, step by step, which a mean in feature space
(`match=features`) does not ask for.

Embedders as for feature matching (`exemplars.optimised.matching.embedders`): "current" = Θ itself (a frozen copy,
eval mode, Θ's running statistics); "random" = a copy with weights freshly drawn at every outer step
(BatchNorm on batch statistics), the paper's random-initialisation regime without its inner training;
"both" = the sum. The pixels' gradient passes through the exemplar gradient (second order), so a step
costs, per class and embedder, one forward and backward of the real images and a forward, a backward
and a double backward of the exemplars.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exemplars.objectives.embedders import embedder_copy, redraw
from exemplars.pixel_descent import Batch, LossOf

def layer_distance(target: Tensor, got: Tensor) -> Tensor:
    """Σ over output units of 1 - cos(target row, got row): rows are a kernel's or matrix's first dimension."""
    return (1 - F.cosine_similarity(target.reshape(len(target), -1), got.reshape(len(got), -1), dim=1,
                                    eps=1e-8)).sum()


def gradient_matching_loss(model: nn.Module, labels: Tensor, embedders: str, generator: torch.Generator,
                           augment=None) -> LossOf:
    """`loss_of(x, real)` for exemplars `x` with `labels` (the group's classes); `generator` (on x's device)
    draws the fresh embedders' weights. Real labels outside the group are ignored."""
    group = torch.unique(labels).tolist()
    nets = [(embedder_copy(model, fresh, weight_grads=True), fresh) for fresh in
            {"current": (False,), "random": (True,), "both": (False, True)}[embedders]]
    weights_of = [[p for p in net.parameters() if p.requires_grad] for net, _ in nets]
    rows = sum(len(w) for w in weights_of[0])                     # output units per network, the same for all

    @torch.enable_grad()              # weight gradients are part of the value, also where only it is wanted
    def loss_of(x: Tensor, real: list[Batch]) -> Tensor:
        xa = x if augment is None else augment(x)
        rx = torch.cat([bx for bx, _ in real])
        ry = torch.cat([by for _, by in real])
        rx = rx if augment is None else augment(rx)
        total = x.new_zeros(())
        for (net, fresh), weights in zip(nets, weights_of):
            if fresh:
                redraw(net, generator)
            for c in group:
                theirs, mine = ry == c, labels == c
                if not theirs.any():
                    continue
                target = torch.autograd.grad(F.cross_entropy(net(rx[theirs]), ry[theirs]), weights)
                got = torch.autograd.grad(F.cross_entropy(net(xa[mine]), labels[mine]), weights, create_graph=True)
                total = total + sum(layer_distance(t, s) for t, s in zip(target, got)) / rows
        return total
    return loss_of
