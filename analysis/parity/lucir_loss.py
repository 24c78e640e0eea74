"""mnemo's LUCIR loss against FACIL's on the same tensors: the value and its gradients.

    python -m analysis.parity.lucir_loss --facil ~/FACIL

Builds one cosine head of a base task and two one-class tasks (σ shared, as FACIL shares it), random features of
the model and of the reference model and labels of every seen class, then computes FACIL's `Appr.criterion`
(less-forget, margin ranking, CE over every head) and mnemo's LUCIR terms (trainer/methods/strategies/lucir.py)
from them, with the same λ, m and K. Prints both values and the largest difference of their gradients with respect
to the features, the newest class weights and σ; exits 1 if any differs beyond float rounding. FACIL is imported
from the checkout (nothing of it is copied); its margin-ranking target is shaped as its inputs, as
analysis/parity/facil.py does for torch 2.
"""
from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from analysis.parity.facil import lucir_for_torch2
from trainer.methods.models.heads import CosineHead
from trainer.methods.strategies.lucir import less_forget_loss, margin_ranking_loss

SIZES = (5, 1, 1)          # one_class's phase 2: five base classes, two one-class phases
TOL = 1e-5


def compare(facil_src: Path, seed: int = 0, batch: int = 64, dim: int = 64) -> dict:
    sys.path.insert(0, str(facil_src))
    lucir = lucir_for_torch2()
    torch.manual_seed(seed)
    head = CosineHead(dim)
    for n in SIZES:
        head.grow(n)
    head.sigma.data.fill_(3.7)
    heads = []
    for w in head.weights:                       # FACIL: one CosineLinear a task, all sharing the first's σ
        h = lucir.CosineLinear(dim, w.shape[0])
        h.weight = torch.nn.Parameter(w.detach().clone())
        h.sigma = heads[0].sigma if heads else torch.nn.Parameter(head.sigma.detach().clone())
        heads.append(h.train())
    f = torch.randn(batch, dim)
    f_ref = torch.randn(batch, dim)
    y = torch.randint(0, sum(SIZES), (batch,))
    old, new, k = sum(SIZES[:-1]), SIZES[-1], 2
    lam = 5.0 * math.sqrt(old / new)
    appr = types.SimpleNamespace(device="cpu", less_forget=True, margin_ranking=True, lamda=lam, lamb_mr=1.0,
                                 dist=0.5, K=min(k, new))

    fa = f.clone().requires_grad_(True)
    theirs = lucir.Appr.criterion(appr, len(SIZES) - 1, [h(fa) for h in heads], y,
                                  ref_outputs=[h(f_ref) for h in heads[:-1]], features=fa, ref_features=f_ref)
    g_theirs = torch.autograd.grad(theirs, [fa, heads[-1].weight, heads[0].sigma])

    fb = f.clone().requires_grad_(True)
    cos = head.cosine(fb)
    ours = lam * less_forget_loss(fb, f_ref) + F.cross_entropy(head.sigma * cos, y) + \
        margin_ranking_loss(cos, y, old, k, 0.5)
    g_ours = torch.autograd.grad(ours, [fb, head.weights[-1], head.sigma])
    grads = {name: float((a - b).abs().max()) for name, a, b in zip(("features", "newest weights", "sigma"),
                                                                     g_theirs, g_ours)}
    return {"facil": theirs.item(), "mnemo": ours.item(), "grad_max_abs_diff": grads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.parity.lucir_loss", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facil", type=Path, required=True, help="a checkout of github.com/mmasana/FACIL")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    if not (args.facil / "src" / "approach" / "lucir.py").is_file():
        print("analysis.parity.lucir_loss: --facil must name a checkout of github.com/mmasana/FACIL (with src/)",
              file=sys.stderr)
        return 2
    same = True
    for seed in args.seeds:
        r = compare(args.facil / "src", seed)
        ok = abs(r["facil"] - r["mnemo"]) <= TOL * max(1.0, abs(r["facil"])) and \
            all(d <= TOL for d in r["grad_max_abs_diff"].values())
        same &= ok
        grads = ", ".join(f"{k} {v:.1e}" for k, v in r["grad_max_abs_diff"].items())
        print(f"seed {seed}: FACIL {r['facil']:.6f}  mnemo {r['mnemo']:.6f}  gradients differ by at most: {grads}"
              f"  {'same' if ok else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
