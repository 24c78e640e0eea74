"""Cost of each exemplar objective per class, and its share of a 25-phase ImageNet-1k phase on 16 GPUs.

    mnemo profile mnemonics --objectives [--sizes 32 224] [--steps 50] [--threads 1] [--device cpu]

For every objective (`unrolled` at the recipe's T, `prototype`, `matching` with Θ's and with fresh
embedders) and image size, one outer step is timed on a class group like the recipes' (32 px: the
CIFAR recipe's ResNet-32, a group of 10 classes; 224 px: ResNet-18, one class as in the 16-GPU
recipe), 20 exemplars a class and a real batch of 64. The same process times a training step of the
model (forward, backward, SGD) on a batch of 64 real images, so each objective's step is also given in
*training images*: the images a training step would have processed in the same time. That ratio is what
carries over to a GPU, where one training image of ResNet-18 at 224 px costs 1/`gpu_img_s` seconds
(benchmarks/cluster_estimate.py's assumption, replaced by `scripts/gpu_check.sh`'s train_img_s).

Projection onto configs/slurm/imagenet1k_b500_25_2x8.yaml (B=500, 25 phases of 20 classes, groups of
one class, 16 GPUs): a rank optimises ceil(20/16) = 2 groups an incremental phase and ceil(500/16) = 32
in phase 0, `steps` outer steps each; the phase's own time is cluster_estimate's (allocation, job start
included). Prints one JSON object.
"""
from __future__ import annotations

import math
import time

import torch

from benchmarks.cluster_estimate import Costs, estimate

OBJECTIVES = (("unrolled", {}), ("prototype", {}), ("matching", {"embedders": "current"}),
              ("matching", {"embedders": "random"}))
GROUP = {32: (10, "resnet32", "cifar"), 224: (1, "resnet18", "imagenet")}


def _timed(fn, repeats: int) -> float:
    fn()                                                      # warm-up: lazy imports, allocator
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(size: int, inner_steps: int, device: torch.device, repeats: int = 2, per_class: int = 20,
            batch: int = 64) -> list[dict]:
    from exemplars.mnemonics import MnemonicsSettings, unrolled_loss
    from exemplars.objectives.matching import matching_loss
    from exemplars.objectives.prototype import prototype_loss
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
        settings = MnemonicsSettings(inner_steps=inner_steps, checkpoint=size > 32)
        if name == "unrolled":
            loss_of = unrolled_loss(model, ey, settings, g, None)
        elif name == "prototype":
            loss_of = prototype_loss(model, ey, means.to(device), list(range(100)), 16.0)
        else:
            loss_of = matching_loss(model, ey, extra["embedders"], torch.Generator(device).manual_seed(0))

        def step():
            x = ex.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_of(x, real), x)
            float(grad.abs().max())                          # wait for the device
        t = _timed(step, repeats)
        rows.append({"objective": name + (f" ({extra['embedders']})" if extra else "")
                     + (f" T={inner_steps}" if name == "unrolled" else ""),
                     "size": size, "arch": arch, "classes": classes, "per_class": per_class, "batch": batch,
                     "step_s": round(t, 4), "per_class_step_s": round(t / classes, 4),
                     "train_images_per_step": round(t / t_train, 1)})
    return rows


def project(rows: list[dict], steps: int, costs: Costs) -> list[dict]:
    """Each 224 px objective's exemplar level per rank, and its share of the recipe's phase 1 and 25."""
    est = estimate(costs)["now"]
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
    rows = [r for size in sizes for r in measure(size, inner_steps, dev, repeats)]
    costs = Costs()
    return {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "outer_steps_per_group": steps, "gpu_img_s_assumed": costs.gpu_img_s,
            "time_method": "fastest of `repeats` outer steps after a warm-up; train_images_per_step = step time "
                           "/ (time of one training step of 64 real images / 64), same process",
            "results": rows, "imagenet1k_b500_n25_16gpu": project(rows, steps, costs)}
