"""How much does a memory of exemplars teach, by itself? A measure of exemplar quality that needs no
incremental run (the companion of analysis/exemplar_transfer.py, which asks the unrolled objective's
own question).

    python -m analysis.exemplar_quality RUN [RUN ...] [--phase P] [--epochs 30] [--seeds 0 1]
        [--out FILE.json]

For each run, the exemplar memory sealed at phase P (every class seen by then) is used two ways:

  fresh     a freshly initialised network (the run's architecture, seed s) trained on the exemplars
            alone: SGD with momentum, cosine rate, the model-level exemplar augmentation;
  previous  Θ_{P-1} (the run's sealed model of phase P-1, its head grown to the classes of phase P)
            trained on the same exemplars the same way, at a tenth of the rate (phase P > 0 only): what
            the memory adds to a model that already knows the old classes;

and scored on the held-out split of all classes seen by phase P (for a `mnemo holdout` split that is the
held-out train fonts, never the real test fonts). Runs given together should share phase 0
(`train.base_from`) so that they differ only in the exemplars. Prints a Markdown table: accuracy mean ±
std over seeds, and the held-out accuracy on the old and the new classes of phase P.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from analysis.exemplar_transfer import load_run, real_images
from core.errors import UserError
from data_pipeline.loading.augment import augment_exemplars, model_view
from exemplars.memory import stack_bank
from trainer.run.session import build_strategy
from trainer.run.storage import sealed_phases


def train_on(model, x: torch.Tensor, y: torch.Tensor, preset: str, epochs: int, lr: float, seed: int,
             batch: int = 128) -> None:
    """SGD (momentum 0.9, weight decay 5e-4, cosine rate) on (x, y) with the exemplar augmentation."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch):
            loss = F.cross_entropy(model(augment_exemplars(x[idx], preset, g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Per-image correctness (bool) of `model` on uint8 images."""
    return torch.cat([model(images[i:i + batch].float().div_(255)).argmax(1) == labels[i:i + batch]
                      for i in range(0, len(labels), batch)])


def measure(runs: list[Path], phase: int, epochs: int, seeds: list[int], limit: int | None) -> dict:
    loaded = [load_run(r, phase) for r in runs]
    cfg, manifest, plan, _, _ = loaded[0]
    seen, new = plan.seen_labels(phase), plan.new_labels(phase)
    images, labels = real_images(cfg, manifest, plan, seen, "test", limit)
    is_new = torch.isin(labels, torch.tensor(new))
    rows = []
    for run, (rcfg, _, _, _, bank) in zip(runs, loaded):
        missing = [l for l in seen if len(bank.get(l, ())) == 0]
        if missing:
            raise UserError(f"{run}: no exemplars of classes {missing[:5]} at phase {phase} (a run without "
                            "exemplars?)")
        x, y = stack_bank(bank, seen)
        x = model_view(x, rcfg.data.image_size)
        modes = ["fresh"] + (["previous"] if phase > 0 else [])
        for mode in modes:
            for seed in seeds:
                torch.manual_seed(seed)
                model = build_strategy(rcfg).build_model()
                if mode == "previous":
                    for n in plan.phase_sizes[:phase]:
                        model.head.grow(n)
                    model_sd, _, _ = sealed_phases.load_phase(run, phase - 1)
                    model.load_state_dict(model_sd)
                    model.head.grow(plan.phase_sizes[phase])
                else:
                    for n in plan.phase_sizes[: phase + 1]:
                        model.head.grow(n)
                train_on(model, x, y, rcfg.data.preset, epochs, 0.1 if mode == "fresh" else 0.01, seed)
                ok = accuracy(model, images, labels)
                rows.append({"run": str(run), "mode": mode, "seed": seed, "acc": 100.0 * ok.float().mean().item(),
                             "acc_old": 100.0 * ok[~is_new].float().mean().item() if (~is_new).any() else None,
                             "acc_new": 100.0 * ok[is_new].float().mean().item()})
                print(f"[exemplar_quality] {run} {mode} seed {seed}: {rows[-1]['acc']:.2f} %", file=sys.stderr,
                      flush=True)
    return {"phase": phase, "epochs": epochs, "seeds": seeds, "held_out_images": len(labels),
            "exemplars_per_class": len(y) // len(seen), "rows": rows}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(result: dict) -> str:
    out = ["| run | trained | held-out acc (%) | old classes | new classes |", "|---|---|---:|---:|---:|"]
    key = lambda r: (r["run"], r["mode"])  # noqa: E731
    for run, mode in dict.fromkeys(map(key, result["rows"])):
        rs = [r for r in result["rows"] if key(r) == (run, mode)]
        old = [r["acc_old"] for r in rs if r["acc_old"] is not None]
        out.append(f"| {run} | {mode} | {_mean_std([r['acc'] for r in rs])} | "
                   f"{_mean_std(old) if old else '–'} | {_mean_std([r['acc_new'] for r in rs])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--phase", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-images", type=int, default=None, help="at most this many held-out images")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    try:
        if a.epochs < 1 or a.phase < 0 or (a.max_images is not None and a.max_images < 1):
            raise UserError("--epochs must be >= 1, --phase >= 0 and --max-images >= 1")
        result = measure(a.runs, a.phase, a.epochs, a.seeds, a.max_images)
    except UserError as e:
        print(f"exemplar_quality: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
