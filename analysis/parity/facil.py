"""Run one FACIL approach (Masana et al., github.com/mmasana/FACIL) on glyph shards under a matched recipe.

    python -m analysis.parity.facil --facil PATH --out DIR --recipe JSON

`PATH` is a checkout of FACIL (its src/ is imported from there: nothing of FACIL is copied into mnemo).
`JSON` is a recipe of analysis/parity/recipes.py (`Recipe.facil_job`): data, protocol, method, seed and the
schedule both implementations share. FACIL runs unchanged but for what the recipe matches, patched at run time:
- data: the arrays mnemo trains and tests on (analysis/parity/data.py), in mnemo's class order;
- augmentation: mnemo's for the preset (zero-padded random crop, a flip where the preset flips), and its
  normalisation (FACIL's own crop is a random-resized crop);
- schedule: the recipe's epochs, starting rates and step milestones (base phase and later phases apart), no validation
  split: FACIL's default holds out 10 % of each class's training images to decay the rate on a plateau and
  keep the best epoch, which mnemo does not do;
- device: BiC's bias layers are made on the CPU where FACIL makes them on "cuda";
- torch: LUCIR's margin-ranking target is shaped as its inputs (torch 2 refuses the [n] target beside [n, 1]
  inputs that older torch broadcast);
- image size: below 32 px ResNet-32's fixed 8x8 average pool is replaced by the global average it computes at
  32 px (mnemo's ResNet-32 pools globally at any size);
- with `"batches": "join"` in the recipe (implementation `facil_join` of analysis/parity/run.py), an epoch's last
  batch of one or two images (JOIN_BELOW) joins the batch before it. FACIL's loader keeps it: a training step on
  one image, whose BatchNorm statistics then make a tenth of the running statistics the evaluation uses. Its
  plain-CE phase 0 on the `one_class` protocol (1,665 images, a tail of one at batch 128) ends at 51-84 % or NaN;
  with one base image fewer (no tail) at 91 %, as its BiC's (2 images a class held out) and mnemo's. With
  `"batches": "even"` (`facil_even`) an epoch is cut into ceil(n / batch) batches of near-equal size, as mnemo's
  default (`train.last_batch=even`).
Writes DIR/metrics.json in mnemo's form (accuracy on all seen classes per phase, on the base classes, Ā, F)
and DIR/facil.log.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

from data_pipeline.loading.batch_plan import batch_bounds


# a last batch smaller than this joins the one before it: one image (one_class's 1,665 base images) or two
# (many_one_class's 3,330), where train-mode BatchNorm normalises over one or two images
JOIN_BELOW = 3


def joined_batches(perm: list[int], batch: int) -> list[list[int]]:
    """`perm` cut into batches of `batch`; a last batch of fewer than JOIN_BELOW images joins the one before it."""
    chunks = [perm[i: i + batch] for i in range(0, len(perm), batch)]
    if len(chunks) > 1 and len(chunks[-1]) < JOIN_BELOW:
        tail = chunks.pop()
        chunks[-1] = chunks[-1] + tail
    return chunks


def even_batches(perm: list[int], batch: int) -> list[list[int]]:
    """`perm` cut into ceil(n / batch) batches whose sizes differ by at most one: mnemo's plan
    (data_pipeline.loading.batch_plan, `last_batch=even`) on one process."""
    bounds = batch_bounds(len(perm), batch, 1, "even")
    return [perm[a:b] for a, b in zip(bounds, bounds[1:])]


# how FACIL's epochs are cut (the recipe's "batches"): short, its own loader (None: left as it is); join, a last
# batch of fewer than JOIN_BELOW images joined to the one before; even, near-equal batches as mnemo's default
BATCHES = {"short": None, "join": joined_batches, "even": even_batches}


def lucir_for_torch2():
    """FACIL's approach.lucir (its src/ on sys.path) with the margin-ranking target shaped as its inputs: torch 2
    refuses the [n] target beside [n, 1] inputs that older torch broadcast."""
    import torch
    from approach import lucir

    class MarginRankingLoss(torch.nn.MarginRankingLoss):
        def forward(self, input1, input2, target):
            return super().forward(input1, input2, target.view_as(input1))

    lucir.nn = types.SimpleNamespace(**{**vars(torch.nn), "MarginRankingLoss": MarginRankingLoss})
    return lucir


def _patch(facil_src: Path, arrays, job: dict) -> None:
    """Point FACIL at the arrays, mnemo's transforms and the recipe's fixed schedule."""
    sys.path.insert(0, str(facil_src))
    import torch
    import torchvision.transforms as T

    from approach import incremental_learning
    from datasets import data_loader, dataset_config
    from datasets import memory_dataset as memd

    mean, std = job["normalize"]
    dataset_config.dataset_config["glyphs_parity"] = {
        "path": None, "resize": None, "pad": None, "crop": None, "flip": False, "normalize": None,
        "extend_channel": None, "class_order": list(arrays.order)}
    train_tf = [T.RandomCrop(job["size"], padding=job["pad"], fill=0)] if job["pad"] else []
    train_tf += [T.RandomHorizontalFlip()] if job["flip"] else []
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    data_loader.get_transforms = lambda **kw: (T.Compose(train_tf + tail), T.Compose(tail))

    def get_datasets(dataset, path, num_tasks, nc_first_task, validation, trn_transform, tst_transform,
                     class_order=None):
        data, taskcla, class_indices = memd.get_data(
            {"x": arrays.train_x, "y": arrays.train_y.tolist()}, {"x": arrays.test_x, "y": arrays.test_y},
            num_tasks=num_tasks, nc_first_task=nc_first_task, validation=0.0, shuffle_classes=False,
            class_order=class_order)
        out, offset = ([], [], []), 0
        for task in range(num_tasks):
            for split in ("trn", "val", "tst"):
                data[task][split]["y"] = [label + offset for label in data[task][split]["y"]]
            out[0].append(memd.MemoryDataset(data[task]["trn"], trn_transform, class_indices))
            out[1].append(memd.MemoryDataset(data[task]["val"], tst_transform, class_indices))
            out[2].append(memd.MemoryDataset(data[task]["tst"], tst_transform, class_indices))
            offset += taskcla[task][1]
        return (*out, taskcla)

    data_loader.get_datasets = get_datasets

    cut = BATCHES[job.get("batches", "short")]

    class Batches(torch.utils.data.Sampler):
        """A fresh permutation each epoch (the global generator, as FACIL's shuffling loader), cut by `cut`."""

        def __init__(self, n: int, batch: int):
            self.n, self.batch = n, batch

        def __iter__(self):
            return iter(cut(torch.randperm(self.n).tolist(), self.batch))

        def __len__(self):
            return len(cut(list(range(self.n)), self.batch))

    def train_loop(self, t, trn_loader, val_loader):
        """The recipe's schedule: a fixed number of epochs, the rate divided by `gamma` at each milestone."""
        if cut is not None:
            trn_loader = torch.utils.data.DataLoader(
                trn_loader.dataset, batch_sampler=Batches(len(trn_loader.dataset), trn_loader.batch_size),
                num_workers=trn_loader.num_workers, pin_memory=trn_loader.pin_memory)
        epochs, milestones = (job["base_epochs"], job["base_milestones"]) if t == 0 else \
            (job["epochs"], job["milestones"])
        self.lr = job["lr"] if t == 0 else job.get("incremental_lr", job["lr"])
        self.optimizer = self._get_optimizer()
        scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=job["gamma"])
        for e in range(epochs):
            t0 = time.time()
            self.train_epoch(t, trn_loader)
            scheduler.step()
            print(f"| task {t} epoch {e + 1}/{epochs}, {time.time() - t0:.1f}s, lr {scheduler.get_last_lr()[0]:g}")

    incremental_learning.Inc_Learning_Appr.train_loop = train_loop
    if job["size"] != 32:                      # ResNet-32's fixed 8x8 average pool is the global one at 32 px
        resnet32 = importlib.import_module("networks.resnet32")    # the package exports the function by that name
        made = resnet32.ResNet.__init__

        def global_pool_init(net, *a, **kw):
            made(net, *a, **kw)
            net.avgpool = torch.nn.AdaptiveAvgPool2d(1)

        resnet32.ResNet.__init__ = global_pool_init
    if job["method"] == "bic":                 # its bias layers are made on "cuda" whatever the device
        from approach import bic

        def bias_layer_init(layer):
            torch.nn.Module.__init__(layer)
            layer.alpha = torch.nn.Parameter(torch.ones(1, requires_grad=False))
            layer.beta = torch.nn.Parameter(torch.zeros(1, requires_grad=False))

        bic.BiasLayer.__init__ = bias_layer_init
    if job["method"] == "lucir":
        lucir_for_torch2()


def mnemo_metrics(acc_tag: np.ndarray, test_counts: list[int], seconds: float) -> dict:
    """FACIL's task-agnostic accuracy matrix (rows: after task t; columns: task u) as mnemo's metrics.json:
    per phase the accuracy on all seen classes (tasks weighted by their test images), on the base classes and on
    the newest classes; Ā over the phases; F = base accuracy after phase 0 minus after the last."""
    phases = []
    for t in range(acc_tag.shape[0]):
        w = np.array(test_counts[: t + 1], dtype=float)
        acc = float((acc_tag[t, : t + 1] * w).sum() / w.sum())
        phases.append({"phase": t, "accuracy": round(100 * acc, 4), "accuracy_base": round(100 * acc_tag[t, 0], 4),
                       "accuracy_new": round(100 * acc_tag[t, t], 4)})
    return {"status": "complete", "average_accuracy": round(float(np.mean([p["accuracy"] for p in phases])), 4),
            "forgetting": round(phases[0]["accuracy_base"] - phases[-1]["accuracy_base"], 4), "phases": phases,
            "acc_matrix": [[round(100 * v, 4) for v in row[: i + 1]] for i, row in enumerate(acc_tag)],
            "wall_s": round(seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.parity.facil", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facil", required=True, type=Path, help="a checkout of github.com/mmasana/FACIL")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--recipe", required=True, help="the job as JSON (analysis/parity/recipes.py)")
    args = ap.parse_args(argv)
    job = json.loads(args.recipe)
    from analysis.parity.data import protocol_arrays

    arrays = protocol_arrays(job["shards"], job["preset"], job["size"], job["protocol"])
    args.out.mkdir(parents=True, exist_ok=True)
    _patch(args.facil / "src", arrays, job)
    import main_incremental

    counts = [int(np.isin(arrays.test_y, arrays.order[sum(arrays.sizes[:i]): sum(arrays.sizes[: i + 1])]).sum())
              for i in range(len(arrays.sizes))]
    t0 = time.time()
    with open(args.out / "facil.log", "w") as log, contextlib.redirect_stdout(log):
        _, acc_tag, _, _, _ = main_incremental.main([
            "--datasets", "glyphs_parity", "--num-tasks", str(len(arrays.sizes)),
            "--nc-first-task", str(arrays.sizes[0]), "--network", job["network"], "--approach", job["method"],
            "--nepochs", str(max(job["base_epochs"], job["epochs"])), "--lr", str(job["lr"]),
            "--momentum", str(job["momentum"]), "--weight-decay", str(job["weight_decay"]),
            "--batch-size", str(job["batch_size"]), "--num-workers", "0", "--seed", str(job["seed"]),
            "--results-path", str(args.out / "facil"), "--num-exemplars-per-class", str(job["per_class"]),
            "--exemplar-selection", job["selection"], *job.get("facil_args", [])])
    metrics = mnemo_metrics(np.asarray(acc_tag), counts, time.time() - t0)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"{job['method']} seed {job['seed']}: Ā {metrics['average_accuracy']:.2f} F {metrics['forgetting']:.2f} "
          f"({metrics['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
