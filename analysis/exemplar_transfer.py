"""How well do a run's exemplars train the temporary model, beyond the meta-objective's own setting?

    python -m analysis.exemplar_transfer RUN [RUN ...] [--phase 0] [--horizons 0 5 25 50 100]
        [--inner-lr 0.01 0.1] [--bn batch running] [--out FILE.json]

The mnemonics objective (Eq. 7-9) asks: after T steps of SGD at α2 from Θ_i on the exemplars E,
how low is the cross-entropy on real batches of D_i? It is optimised with one configuration (the
run's T and α2) on the real batches the optimiser draws. This tool measures the same quantity
for other horizons T', learning rates and BatchNorm regimes, on two sets of real images:

  seen      the run's train split of the phase's new classes (the pool the meta-batches came from)
  held-out  the run's test split of those classes (for runs on a `mnemo holdout` split that is the
            held-out train fonts, never the real test fonts)

Runs given together must share the sealed Θ_i of `--phase` (e.g. random and mnemonics runs that
start from the same `train.base_from`): then the rows differ only in the exemplars, and mnemonics
(initialised from the same random subset as the random run) is compared with its own start.
Groups are the run's `exemplars.group_size` class groups, as in the optimisation. Prints a Markdown
table and writes one JSON object (`--out`): mean CE, accuracy over all seen classes and accuracy among
the group's classes only ("in-group") per run, split, BN regime, α2 and T'.

BN regimes (`--bn`): "batch" = Θ' trained and judged with batch statistics (inner_bn = val_bn =
batch, the default objective); "running" = both with Θ's frozen running statistics (T' = 0 is then
Θ itself). Default: the first run's own (inner_bn, val_bn), named "inner/val" when they differ.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from core.errors import UserError
from core.protocol import make_plan
from data_pipeline.loading.augment import model_view
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.reader import read_classes
from exemplars.memory import ExemplarMemory, stack_bank
from exemplars.selections.optimised import descent_section
from exemplars.unroll import InnerLoop, start_params, theta_logits, unroll
from exemplars.update import build_selection
from trainer.config import config_from_dict, stored_config
from trainer.run.session import build_strategy
from trainer.run.storage import sealed_phases


def load_run(run: Path, phase: int):
    """(config, plan, model with Θ_phase in eval mode, exemplar bank) of a sealed phase."""
    path = run / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run}: no config.yaml, not a run directory")
    if sealed_phases.phase_problem(run, phase):
        raise UserError(f"{run}: phase {phase} is not sealed ({sealed_phases.phase_problem(run, phase)})")
    cfg = config_from_dict(stored_config(path))
    manifest = load_manifest(cfg.data.shards)
    p = cfg.protocol
    plan = make_plan(manifest.num_classes, p.base_classes, p.phases, p.class_order_seed, p.num_classes)
    model = build_strategy(cfg).build_model()
    for n in plan.phase_sizes[: phase + 1]:
        model.head.grow(n)
    model_sd, memory_sd, _ = sealed_phases.load_phase(run, phase)
    model.load_state_dict(model_sd)
    model.eval()
    bank = ExemplarMemory.of_run(memory_sd, cfg.to_dict()["exemplars"], cfg.data.image_size).view()
    return cfg, manifest, plan, model, bank


def real_images(cfg, manifest, plan, labels: list[int], split: str, limit: int | None):
    """The split's images of `labels` (at most `limit`), in a fixed shuffled order: shards are read class
    by class, and with batch-statistics BatchNorm a one-class batch would be judged, not the model."""
    got = read_classes(manifest, split, plan.class_ids(labels), cfg.data.preset, cfg.data.image_size)
    if len(got) == 0:
        raise UserError(f"{manifest.root}: no {split} images of the classes with labels {labels}")
    perm = torch.randperm(len(got), generator=torch.Generator().manual_seed(0))[:limit]
    return model_view(got.images[perm], cfg.data.image_size), plan.labels_of(got.class_ids[perm])


def evaluate(model, theta, buffers, images, labels, group: list[int], batch: int,
             val_bn: str) -> tuple[float, float, float, int]:
    """(summed CE, correct, correct among the group's classes only, n) of Θ' on uint8 images, in
    batches like the meta-loss's. The within-group count ignores every logit outside the group: what
    the exemplars teach about telling the group's classes apart, without a shift towards the group."""
    ce = correct = within = 0.0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            x, y = images[i:i + batch].float().div_(255), labels[i:i + batch]
            logits = theta_logits(model, theta, buffers, x, val_bn)
            ce += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            outside = torch.ones(logits.shape[1], dtype=torch.bool)
            outside[group] = False
            within += (logits.masked_fill(outside, float("-inf")).argmax(1) == y).sum().item()
    return ce, correct, within, len(labels)


def measure(runs: list[Path], phase: int, horizons: list[int], inner_lrs: list[float] | None,
            bns: list[str] | None = None, limit: int | None = None) -> dict:
    loaded = [load_run(r, phase) for r in runs]
    cfg, manifest, plan, model, _ = loaded[0]
    ref = sealed_phases.weights_digest(model)
    for r, (_, _, _, m, _) in zip(runs[1:], loaded[1:]):
        if sealed_phases.weights_digest(m) != ref:
            raise UserError(f"{r}: its phase-{phase} model differs from {runs[0]}'s; compare runs that share "
                            "phase 0 (train.base_from) so that only the exemplars differ")
    ex = cfg.exemplars
    mn = getattr(ex, descent_section(ex))                     # Θ''s settings: the pixel-descending selection's
    inner = mn.unrolled
    lrs = inner_lrs or [inner.inner_lr]
    regimes = [(b, b) for b in bns] if bns else [(inner.inner_bn, inner.val_bn)]
    groups = build_selection(ex).groups(plan.new_labels(phase), ex.group_size)
    for r, (_, _, _, _, bank) in zip(runs, loaded):
        missing = [l for l in plan.new_labels(phase) if len(bank.get(l, ())) == 0]
        if missing:
            raise UserError(f"{r}: no exemplars of the phase-{phase} classes {missing[:5]} in its memory "
                            "(a run without exemplars, or trimmed to 0 per class)")
    sums: dict[tuple, list[float]] = {}
    for gi, group in enumerate(groups):
        real = {s: real_images(cfg, manifest, plan, group, s, limit) for s in ("train", "test")}
        for run, (_, _, _, model, bank) in zip(runs, loaded):
            x, y = stack_bank(bank, group)
            for (inner_bn, val_bn), lr in itertools.product(regimes, lrs):
                bn = inner_bn if inner_bn == val_bn else f"{inner_bn}/{val_bn}"
                params, buffers = start_params(model)
                done = 0
                for h in sorted(set(horizons)):
                    with torch.no_grad():
                        params = {**params, **unroll(model, (params, buffers), x, y,
                                                     InnerLoop(h - done, lr, checkpoint=False, bn=inner_bn))}
                    params = {n: p.detach().requires_grad_(model.get_parameter(n).requires_grad)
                              for n, p in params.items()}
                    done = h
                    for split, (images, labels) in real.items():
                        s = sums.setdefault((str(run), split, bn, lr, h), [0.0, 0.0, 0.0, 0])
                        for k, v in enumerate(evaluate(model, params, buffers, images, labels, group,
                                                       mn.val_batch_size, val_bn)):
                            s[k] += v
        print(f"[exemplar_transfer] group {gi + 1}/{len(groups)} done", file=sys.stderr, flush=True)
    rows = [{"run": run, "split": "seen" if split == "train" else "held-out", "bn": bn, "inner_lr": lr,
             "T": h, "ce": ce / n, "acc": 100.0 * correct / n, "acc_in_group": 100.0 * within / n, "images": n}
            for (run, split, bn, lr, h), (ce, correct, within, n) in sums.items()]
    return {"phase": phase, "groups": len(groups), "objective": {
        "inner_steps": inner.inner_steps, "inner_lr": inner.inner_lr, "inner_bn": inner.inner_bn,
        "val_bn": inner.val_bn},
        "rows": rows}


def table(result: dict) -> str:
    hs = sorted({r["T"] for r in result["rows"]})
    out = ["| run | real images | BN | α2 | " + " | ".join(f"T'={h}: CE / acc / in-group" for h in hs) + " |",
           "|---|---|---|---:|" + "---:|" * len(hs)]
    key = lambda r: (r["run"], r["split"], r["bn"], r["inner_lr"])  # noqa: E731
    for k in dict.fromkeys(map(key, result["rows"])):
        cells = {r["T"]: r for r in result["rows"] if key(r) == k}
        run, split, bn, lr = k
        out.append(f"| {run} | {split} | {bn} | {lr:g} | " +
                   " | ".join(f"{cells[h]['ce']:.3f} / {cells[h]['acc']:.1f} / {cells[h]['acc_in_group']:.1f}"
                              for h in hs) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--phase", type=int, default=0)
    ap.add_argument("--horizons", type=int, nargs="+", default=[0, 5, 25, 50, 100])
    ap.add_argument("--inner-lr", type=float, nargs="+", default=None,
                    help="α2 values (default: the first run's exemplars.optimised.unrolled.inner_lr)")
    ap.add_argument("--bn", nargs="+", choices=("batch", "running"), default=None,
                    help="BN regimes of Θ' (default: the first run's inner_bn/val_bn)")
    ap.add_argument("--max-images", type=int, default=None,
                    help="at most this many images per split and class group (a fixed random subset)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    try:
        if min(a.horizons) < 0 or (a.max_images is not None and a.max_images < 1):
            raise UserError("--horizons must be >= 0 and --max-images >= 1")
        result = measure(a.runs, a.phase, a.horizons, a.inner_lr, a.bn, a.max_images)
    except UserError as e:
        print(f"exemplar_transfer: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
