"""Host synchronisations per training step, counted on CPU: what a GPU step would wait for.

    mnemo profile syncs [--steps 20] [--batch-size 64] [--exemplars 512] [--rebuilds 3] [--size 32]
                        [--threads 2]

prints ONE JSON object. A GPU step stalls its host whenever the host needs a device value:

* `scalar`: a tensor read as a Python number (`.item()`, `bool()`, `float()`: aten._local_scalar_dense);
* `shape`: an operator whose output shape depends on the values (`nonzero`, boolean-mask indexing,
  `masked_select`, `unique`), which must wait for them;
* `device_sync`: an explicit synchronisation (DeepSpeed's accelerator.synchronize, torch.cuda.synchronize);
* a blocking host-to-device copy, e.g. a device tensor indexed with host indices. On one device there is
  none to count; `scripts/gpu_check.sh` counts every kind on a GPU (torch.cuda.set_sync_debug_mode).

On CPU nothing waits, but each of the first three is a call that can be counted. The epoch plan
(data_pipeline/loading/batch_plan.py) is host data, built once per epoch and moved to the device in one
copy, so its masks are not counted. This runs the trainer's
real epoch loop (trainer.engine.epoch_loop over a DeepSpeed Engine, PhaseBatches mixing real images
with float16 exemplar tensors, pad-crop and flip, cross-entropy) under a TorchDispatchMode that counts
them, after `--rebuilds` engines were built and closed on the same model (engines that leave hooks
behind add synchronisations to every later step). It also reports the batch assembly's own rate
(`data_path_img_s`: PhaseBatches alone, no model, the median of epochs 2-4). Run it from another checkout with PYTHONPATH to
compare commits side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

SHAPE_OPS = ("nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive",
             "is_nonzero", "equal", "allclose")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mnemo profile syncs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="counted training steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--exemplars", type=int, default=512, help="exemplar tensors mixed into the batches")
    ap.add_argument("--real", type=int, default=2048, help="real images of the phase")
    ap.add_argument("--rebuilds", type=int, default=3, help="engines built and closed before the counted one")
    ap.add_argument("--size", type=int, default=32, help="image side (cifar preset, ResNet-20)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    return ap


def _site() -> str | None:
    """The first frame of mnemo or DeepSpeed code below the dispatch (where the host asks)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        f = frame.filename
        if "torch/" in f or "syncs_profile" in f:
            continue
        if f.endswith("batch_plan.py"):
            return None                 # the host-side epoch plan: not a device read
        parts = Path(f).parts
        return f"{'/'.join(parts[-2:])}:{frame.lineno}"
    return "?"


def _counter():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.kinds: dict[str, int] = {}
            self.where: dict[str, int] = {}

        def add(self, kind: str) -> None:
            site = _site()
            if site is None:
                return
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            key = f"{kind} {site}"
            self.where[key] = self.where.get(key, 0) + 1

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.split("::")[-1]
            if name == "_local_scalar_dense":
                self.add("scalar")
            elif name in SHAPE_OPS:
                self.add("shape")
            elif name in ("index", "index_put", "index_put_", "_index_put_impl_"):
                idx = args[1] if len(args) > 1 else ()
                if any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (idx or ())):
                    self.add("shape")
            return func(*args, **(kwargs or {}))

    return Count()


def profile_syncs(steps: int = 20, batch_size: int = 64, exemplars: int = 512, real: int = 2048, rebuilds: int = 3,
                  size: int = 32, threads: int = 2) -> dict:
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "mnemo" / "torch_extensions"))
    import torch
    import torch.nn.functional as F

    from data_pipeline.loading.batch_plan import BatchPlan
    from data_pipeline.loading.phase_batches import PhaseBatches
    from data_pipeline.loading.settings import LoaderOutput
    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings, on_device_sync
    from trainer.engine.epoch_loop import StageRun, run_epochs
    from trainer.methods.models.net import IncrementalNet

    torch.set_num_threads(threads)
    info = distributed.init("cpu")
    g = torch.Generator().manual_seed(0)
    classes = 10
    real_x = torch.randint(0, 256, (real, 3, size, size), dtype=torch.uint8, generator=g)
    real_y = torch.randint(0, classes, (real,), generator=g)
    ex_x = torch.rand(exemplars, 3, size, size, generator=g).half()
    ex_y = torch.randint(0, classes, (exemplars,), generator=g)
    batches = PhaseBatches((real_x, real_y), (ex_x, ex_y), BatchPlan(batch_size, 0, info), LoaderOutput("cifar", size))

    rates = []
    for e in range(4):                 # the batch assembly alone; the first epoch warms up
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in batches.epoch(e))
        rates.append(n / (time.perf_counter() - t0))
    data_img_s = sorted(rates[1:])[1]

    torch.manual_seed(0)
    model = IncrementalNet("resnet20", "cifar").to(info.device)
    model.head.grow(classes)

    class Sink:
        def write(self, **event):
            pass

    def loss(m, x, y):
        return {"loss": F.cross_entropy(m(x).float(), y)}

    class First:                       # the first `steps` batches of an epoch
        steps_per_epoch = steps

        def epoch(self, e):
            for s, b in enumerate(batches.epoch(e)):
                if s >= steps:
                    return
                yield b

    hooks_before = len(model._forward_pre_hooks) + len(model._forward_hooks)
    for r in range(rebuilds):
        engine = Engine(model, info, batch_size, 0.1, 0.9, 5e-4, EngineSettings())
        run_epochs(engine, loss, First(), StageRun("train", 0, 1, lambda e: 0.1, log_every=0), Sink())
        if hasattr(engine, "close"):
            engine.close()
        del engine                     # what the trainer did before engines were closed
    engine = Engine(model, info, batch_size, 0.1, 0.9, 5e-4, EngineSettings())
    counter = _counter()
    undo = on_device_sync(lambda: counter.add("device_sync"))
    try:
        with counter:
            run_epochs(engine, loss, First(), StageRun("train", 0, 1, lambda e: 0.1, log_every=0), Sink())
    finally:
        undo()
    hooks = len(model._forward_pre_hooks) + len(model._forward_hooks)
    if hasattr(engine, "close"):
        engine.close()
    distributed.shutdown() if hasattr(distributed, "shutdown") else None
    total = sum(counter.kinds.values())
    return {"benchmark": "syncs", "steps": steps, "batch_size": batch_size, "exemplars": exemplars,
            "rebuilds_before": rebuilds, "syncs_per_step": round(total / steps, 2),
            "by_kind_per_step": {k: round(v / steps, 2) for k, v in sorted(counter.kinds.items())},
            "where": dict(sorted(counter.where.items(), key=lambda kv: -kv[1])[:10]),
            "module_hooks": {"before_engines": hooks_before, "while_counted": hooks},
            "data_path_img_s": round(data_img_s, 1), "threads": threads}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    print(json.dumps(profile_syncs(args.steps, args.batch_size, args.exemplars, args.real, args.rebuilds,
                                   args.size, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
