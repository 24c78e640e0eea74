"""Peak memory and time of one mnemonics outer step (Eq. 8-9) vs. unrolled steps T, checkpointing.

    python -m benchmarks.mnemonics_profile [--sizes 32 224] [--steps 1 5 25 50] [--device cpu]
    python -m benchmarks.mnemonics_profile --objectives --steps 5    (every objective, below)

prints ONE JSON object. Model: timm resnet18 (num_classes = the class group size), exemplars and
"real" batches are random pixels (the cost does not depend on their content). One outer step =
`Unrolled.optimise` with epochs=1: T differentiable inner steps, the validation forward, the
meta-backward through all T steps into the pixels, and the pixel update.

Memory: every configuration runs in a fresh subprocess.
  cpu : peak RSS (resource.getrusage ru_maxrss) minus the RSS measured just before the outer step,
        after the model, the tensors and a warm-up (lazy imports) exist. The subprocess runs with
        glibc MALLOC_MMAP_THRESHOLD_=65536: every allocation >= 64 KiB is its own mmap, returned
        to the OS when freed, so RSS follows the live tensors (otherwise freed heap pages stay
        resident and the figure depends on allocator history). Small allocations are included.
  cuda: torch.cuda.max_memory_allocated() minus memory_allocated() before the step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from benchmarks.cluster_estimate import Costs, estimate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEMORY_METHOD = {
    "cpu": "fresh subprocess per configuration; peak RSS (getrusage ru_maxrss) minus RSS just "
           "before the outer step (after model/tensor creation and a warm-up); glibc "
           "MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave RSS at once",
    "cuda": "fresh subprocess per configuration; torch.cuda.max_memory_allocated minus "
            "memory_allocated before the outer step",
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure_one(cfg: dict) -> dict:
    """In a fresh process: build the model and data, then run `repeats` outer steps."""
    import timm
    import torch
    from torch import nn

    from exemplars.objectives.unrolled import Unrolled, UnrolledSettings
    from exemplars.pixel_descent import Schedule
    from exemplars.unroll import InnerLoop, unrolled_meta_loss

    device = torch.device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    k, size = cfg["classes"], cfg["size"]
    model = timm.create_model("resnet18", num_classes=k).to(device)
    ex = torch.rand(k * cfg["per_class"], 3, size, size, generator=g).to(device)
    ey = torch.arange(k).repeat_interleave(cfg["per_class"]).to(device)
    vx = torch.rand(cfg["val_batch"], 3, size, size, generator=g).to(device)
    vy = (torch.arange(cfg["val_batch"]) % k).to(device)

    # Warm-up on a tiny net: loads what checkpoint/autograd import lazily, outside the measurement.
    tiny = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(k))
    tiny = tiny.to(device)
    tiny(torch.rand(2, 3, 8, 8, device=device))
    p = {n: t.detach().requires_grad_() for n, t in tiny.named_parameters()}
    b = {n: t.detach() for n, t in tiny.named_buffers()}
    x = torch.rand(2, 3, 8, 8, device=device, requires_grad=True)
    yy = torch.arange(2, device=device) % k
    torch.autograd.grad(unrolled_meta_loss(tiny, (p, b), x, yy, (x.detach(), yy), InnerLoop(2, 0.1)), x)

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    objective = Unrolled(UnrolledSettings(inner_steps=cfg["inner_steps"], checkpoint=cfg["checkpoint"],
                                          checkpoint_segment=cfg["segment"]))
    schedule = Schedule(cfg["repeats"], 1, 1, 0.01, 10)          # the paper's Eq. 9 step, `repeats` times
    stamps = [time.perf_counter()]

    def progress(info: dict) -> None:  # loss.item() inside synchronises CUDA before this runs
        stamps.append(time.perf_counter())

    objective.optimise(model, ex, ey, lambda epoch: [(vx, vy)], schedule, progress=progress)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # KiB on Linux
    step_times = [b - a for a, b in zip(stamps, stamps[1:])]
    return {**{k_: cfg[k_] for k_ in ("size", "inner_steps", "checkpoint", "segment", "classes",
                                      "per_class", "val_batch")},
            "threads": torch.get_num_threads(),
            "peak_mb": round(peak, 1), "base_mb": round(base, 1),
            "step_s": round(min(step_times), 3), "step_s_all": [round(t, 3) for t in step_times]}


def run_isolated(cfg: dict, timeout: float | None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # glibc: serve every allocation >= 64 KiB with its own mmap and unmap it on free, so that RSS
    # follows the live tensors instead of keeping freed heap pages (peak RSS ~ peak live bytes).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.mnemonics_profile", "--one",
                               json.dumps(cfg)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        return {**cfg, "error": proc.stderr.strip().splitlines()[-1:] or f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Grid:
    """The configurations `profile_mnemonics` measures: every (image size, T, checkpointing) of these."""
    steps: tuple = (1, 5, 25, 50)
    sizes: tuple = (32, 224)
    checkpoint: tuple = (True, False)
    segments: tuple = (0, 1)
    classes: int = 2
    per_class: dict | None = None
    val_batch: dict | None = None
    repeats: int = 1
    device: str | None = None
    threads: int | None = None


def profile_mnemonics(grid: Grid = Grid(), timeout: float | None = None, log=None) -> dict:
    """Measure every (image size, T, checkpoint) combination of `grid`, each in a fresh subprocess.

    With checkpointing on, each value of `segments` is measured (exemplars.optimised.unrolled.
    checkpoint_segment: 0 = two-level, ceil(sqrt(T)) steps per segment, the default; 1 = per-step
    checkpointing only). `threads` sets torch.set_num_threads in the subprocess (None: default).

    per_class / val_batch map image size -> exemplars per class / real images per batch
    (defaults: 32 px: 10 / 32; 224 px: 1 / 4, small enough for CPU: without checkpointing the
    second-order graph of resnet18 costs ~95 MB per inner step per 2 images at 224 px).
    `repeats` outer steps are run per configuration and the fastest is reported as step_s.
    """
    import torch

    steps, sizes, checkpoint, segments = grid.steps, grid.sizes, grid.checkpoint, grid.segments
    classes, repeats, threads = grid.classes, grid.repeats, grid.threads
    device = grid.device or ("cuda" if torch.cuda.is_available() else "cpu")
    per_class = {32: 10, 224: 1, **(grid.per_class or {})}
    val_batch = {32: 32, 224: 4, **(grid.val_batch or {})}
    modes = [(True, seg) for seg in segments if True in checkpoint]
    modes += [(False, 0)] if False in checkpoint else []
    results = []
    for size in sizes:
        for t in steps:
            for ck, seg in modes:
                cfg = {"device": device, "size": size, "inner_steps": t, "checkpoint": ck,
                       "segment": seg, "classes": classes, "per_class": per_class.get(size, 2),
                       "val_batch": val_batch.get(size, 8), "repeats": repeats,
                       "threads": threads}
                results.append(run_isolated(cfg, timeout))
                if log:
                    log(json.dumps(results[-1]))
    out = {"model": "timm resnet18", "device": device, "torch": torch.__version__,
           "threads": threads or torch.get_num_threads(),
           "memory_method": MEMORY_METHOD[device.split(":")[0]],
           "time_method": "wall time of one outer step (fastest of `repeats`), measured in the "
                          "same subprocess after a warm-up",
           "results": results, "acceptance": {}}
    # target: checkpointed T=50 <= 2x checkpointed T=5, and >= 3x lower than plain T=50
    for size in sizes:
        peak = {(r["inner_steps"], r["checkpoint"], r["segment"]): r.get("peak_mb")
                for r in results if r["size"] == size}
        p50 = peak.get((50, False, 0))
        for seg in segments:
            c5, c50 = peak.get((5, True, seg)), peak.get((50, True, seg))
            if c5 and c50 and p50:
                out["acceptance"][f"{size}px_segment{seg}"] = {
                    "ckpt_T50_over_ckpt_T5": round(c50 / c5, 2),
                    "plain_T50_over_ckpt_T50": round(p50 / c50, 2),
                    "pass": c50 <= 2 * c5 and p50 >= 3 * c50}
    return out


def phase_share(run_dir: str) -> dict:
    """Share of each phase's wall time spent in the exemplar level (selection + Eq. 10 adjustment) of a
    finished or running run, from its RUN/profile.json (e.g. the glyph default with mnemonics)."""
    path = os.path.join(run_dir, "profile.json")
    try:
        with open(path) as f:
            phases = json.load(f)["phases"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"mnemo profile mnemonics: --run {run_dir}: no readable profile.json ({e})")
    rows = [{"phase": p["phase"], "wall_s": p["wall_s"], "exemplars_s": p["split_s"].get("exemplars", 0.0),
             "share": round(p["split_s"].get("exemplars", 0.0) / p["wall_s"], 4) if p["wall_s"] else None}
            for p in phases]
    total = sum(r["wall_s"] for r in rows)
    return {"run": run_dir, "phases": rows,
            "share_all_phases": round(sum(r["exemplars_s"] for r in rows) / total, 4) if total else None}


# ---- each exemplar objective's cost (--objectives) ----
# Cost of each exemplar objective per class, and its share of a 25-phase ImageNet-1k phase on 16 GPUs.
# 
#     mnemo profile mnemonics --objectives [--sizes 32 224] [--steps 50] [--threads 1] [--device cpu]
# 
# For every objective (`unrolled` at the recipe's T, `prototype`, `matching` of features with Θ's and with
# fresh embedders, and of gradients with fresh embedders) and image size, one outer step is timed on a
# class group like the recipes' (32 px: the CIFAR recipe's ResNet-32, a group of 10 classes; 224 px:
# ResNet-18, one class as in the 16-GPU recipe), 20 exemplars a class and a real batch of 64. The same
# process times a training step of the model (forward, backward, SGD) on a batch of 64 real images, so
# each objective's step is also given in
# *training images*: the images a training step would have processed in the same time. That ratio is what
# carries over to a GPU, where one training image of ResNet-18 at 224 px costs 1/`gpu_img_s` seconds
# (benchmarks/cluster_estimate.py's assumption, replaced by `scripts/gpu_check.sh`'s train_img_s).
# 
# Projection onto configs/slurm/imagenet1k_b500_25_2x8.yaml (B=500, 25 phases of 20 classes, groups of
# one class, 16 GPUs): a rank optimises ceil(20/16) = 2 groups an incremental phase and ceil(500/16) = 32
# in phase 0, `steps` outer steps each; the phase's own time is cluster_estimate's (allocation, job start
# included). Prints one JSON object.

OBJECTIVES = (("unrolled", {}), ("prototype", {}), ("matching", {"embedders": "current"}),
              ("matching", {"embedders": "random"}), ("matching", {"embedders": "random", "match": "gradients"}))
GROUP = {32: (10, "resnet32", "cifar"), 224: (1, "resnet18", "imagenet")}


def _timed(fn, repeats: int) -> float:
    fn()                                                      # warm-up: lazy imports, allocator
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_objective(size: int, inner_steps: int, device: torch.device, repeats: int = 2, per_class: int = 20,
            batch: int = 64) -> list[dict]:
    from exemplars.objectives.matching import MATCH_LOSSES
    from exemplars.objectives.prototype import prototype_loss
    from exemplars.objectives.unrolled import Unrolled, UnrolledSettings
    from trainer.methods.models.net import IncrementalNet

    classes, arch, preset = GROUP[size]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = IncrementalNet(arch, preset).to(device)
    model.head.grow(classes + 100)                       # 100 old classes beside the group
    ex = torch.rand(classes * per_class, 3, size, size, generator=g).to(device)
    ey = torch.arange(100, 100 + classes).repeat_interleave(per_class).to(device)
    real = [(torch.rand(batch, 3, size, size, generator=g).to(device),
             (100 + torch.arange(batch) % classes).to(device))]
    means = torch.nn.functional.normalize(torch.randn(100, model.backbone.out_dim, generator=g), dim=1)

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.train()

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(real[0][0]), real[0][1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    t_train = _timed(train_step, repeats) / batch
    model.eval()
    rows = []
    for name, extra in OBJECTIVES:
        if name == "unrolled":
            objective = Unrolled(UnrolledSettings(inner_steps=inner_steps, checkpoint=size > 32))
            loss_of = objective.loss_of(model, ey, g, None)
        elif name == "prototype":
            loss_of = prototype_loss(model, ey, means.to(device), list(range(100)), 16.0)
        else:
            match = MATCH_LOSSES[extra.get("match", "features")]
            loss_of = match(model, ey, extra["embedders"], torch.Generator(device).manual_seed(0))

        def step():
            x = ex.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_of(x, real), x)
            float(grad.abs().max())                          # wait for the device
        t = _timed(step, repeats)
        rows.append({"objective": name + (f" ({', '.join(extra.values())})" if extra else "")
                     + (f" T={inner_steps}" if name == "unrolled" else ""),
                     "size": size, "arch": arch, "classes": classes, "per_class": per_class, "batch": batch,
                     "step_s": round(t, 4), "per_class_step_s": round(t / classes, 4),
                     "train_images_per_step": round(t / t_train, 1)})
    return rows


def project_objectives(rows: list[dict], steps: int, costs: Costs) -> list[dict]:
    """Each 224 px objective's exemplar level per rank, and its share of the recipe's phase 1 and 25."""
    est = estimate(costs)
    per_rank = {"phase_0": math.ceil(costs.base / costs.gpus),
                "phase_1": math.ceil(costs.new_per_phase / costs.gpus),
                "phase_25": math.ceil(costs.new_per_phase / costs.gpus)}
    out = []
    for r in rows:
        if r["size"] != 224:
            continue
        step_s = r["train_images_per_step"] / costs.gpu_img_s
        row = {"objective": r["objective"], "gpu_step_s": round(step_s, 4)}
        for phase, groups in per_rank.items():
            level = groups * steps * step_s
            total = est[phase]["total_s"]
            row[phase] = {"exemplar_level_s": round(level, 1), "phase_s": round(total + level, 1),
                          "share": round(level / (total + level), 3)}
        out.append(row)
    return out


def profile_objectives(sizes=(32, 224), inner_steps: int = 5, steps: int = 50, device: str | None = None,
                       threads: int | None = None, repeats: int = 2) -> dict:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [r for size in sizes for r in measure_objective(size, inner_steps, dev, repeats)]
    costs = Costs()
    return {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "outer_steps_per_group": steps, "gpu_img_s_assumed": costs.gpu_img_s,
            "time_method": "fastest of `repeats` outer steps after a warm-up; train_images_per_step = step time "
                           "/ (time of one training step of 64 real images / 64), same process",
            "results": rows, "imagenet1k_b500_n25_16gpu": project_objectives(rows, steps, costs)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config, print JSON
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 5, 25, 50])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument("--checkpoint", choices=["both", "on", "off"], default="both")
    ap.add_argument("--segments", type=int, nargs="+", default=[0, 1],
                    help="checkpoint_segment values to measure with checkpointing on")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per measurement")
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--per-class", type=json.loads, default=None,
                    help='JSON {"size": exemplars per class}, e.g. \'{"224": 2}\'')
    ap.add_argument("--val-batch", type=json.loads, default=None, help='JSON {"size": batch}')
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    ap.add_argument("--verbose", action="store_true", help="each result on stderr as it comes")
    ap.add_argument("--run", action="append", default=[],
                    help="also report the share of each phase's wall time spent on exemplars in this run "
                         "directory (repeatable), e.g. a glyph-default run with exemplars.selection=optimised")
    ap.add_argument("--share-only", action="store_true", help="with --run: skip the outer-step measurements")
    ap.add_argument("--objectives", action="store_true",
                    help="instead: each exemplar objective's cost per class at --sizes, projected onto the "
                         "ImageNet-1k B500 N25 recipe on 16 GPUs (see profile_objectives)")
    ap.add_argument("--outer-steps", type=int, default=50, help="with --objectives: outer steps per class group")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_measure_one(json.loads(args.one))))
        return
    if args.objectives:
        print(json.dumps(profile_objectives(tuple(args.sizes), min(args.steps), args.outer_steps, args.device,
                                            args.threads, max(2, args.repeats))))
        return
    ck = {"both": (True, False), "on": (True,), "off": (False,)}[args.checkpoint]
    as_int = lambda d: {int(k): v for k, v in d.items()} if d else None  # noqa: E731
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose else None
    shares = [phase_share(r) for r in args.run]          # before the (long) measurements: fail fast
    grid = Grid(tuple(args.steps), tuple(args.sizes), ck, tuple(args.segments), args.classes, as_int(args.per_class),
                as_int(args.val_batch), args.repeats, args.device, args.threads)
    out = profile_mnemonics(grid, args.timeout, log) if not args.share_only else {}
    if shares:
        out["phase_share"] = shares
    print(json.dumps(out))


if __name__ == "__main__":
    main()
