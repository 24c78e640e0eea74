"""The model step ceiling: training steps on synthetic tensors through the real Engine (DeepSpeed).

    mnemo profile train [--arch resnet18] [--size 224] [--precision fp32] [--channels-last]
                        [--batch-size 32] [--steps 10] [--warmup 2] [--trace DIR --trace-steps 3]

prints ONE JSON object. No data loading, no augmentation: one random batch (already on the device,
in the chosen memory format) is reused for every step, so img/s is what the model, the precision and
the optimizer allow, an upper bound for `mnemo profile e2e` and real runs. A step is plain
cross-entropy through `IncrementalNet` (the trainer's model: input normalisation, backbone, linear
head with `--classes` outputs), then `Engine.step` (backward + SGD step with momentum and weight
decay, as in training). `--warmup` steps run first and are not timed.

Timing: img/s = batch x steps / wall time of the timed steps (CUDA: one synchronisation at the
end). The forward/backward/optimizer split comes from trainer.engine.step_timer (host clock on CPU, CUDA
events on GPU). `--trace DIR` runs `--trace-steps` further steps under torch.profiler and writes a
Chrome trace (open it in https://ui.perfetto.dev or chrome://tracing); the timed steps are not
profiled.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SIZE = {"resnet18": 224, "resnet32": 32, "resnet20": 32}
PRESET = {"resnet18": "imagenet", "resnet32": "cifar", "resnet20": "cifar"}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mnemo profile train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(DEFAULT_SIZE), default="resnet18")
    ap.add_argument("--size", type=int, default=None, help="image side in px (default: 224 for resnet18, 32 else)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                    help="engine precision (bf16/fp16 need a GPU; on CPU the engine falls back to fp32)")
    ap.add_argument("--channels-last", action="store_true",
                    help="input already in channels_last (the net computes channels_last either way)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--classes", type=int, default=100, help="head outputs")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--trace", default=None, metavar="DIR", help="write a torch.profiler Chrome trace here")
    ap.add_argument("--trace-steps", type=int, default=3, help="steps recorded in the trace")
    return ap


@dataclass(frozen=True)
class TrainProfile:
    """What `profile_train` measures: the command line's options (see _parser)."""
    arch: str = "resnet18"
    size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    batch_size: int = 32
    steps: int = 10
    warmup: int = 2
    classes: int = 100
    threads: int | None = None
    device: str = "auto"
    trace: str | None = None
    trace_steps: int = 3


def profile_train(spec: TrainProfile = TrainProfile()) -> dict:
    arch, size, precision, channels_last = spec.arch, spec.size, spec.precision, spec.channels_last
    batch_size, steps, warmup, classes, threads = spec.batch_size, spec.steps, spec.warmup, spec.classes, spec.threads
    device, trace, trace_steps = spec.device, spec.trace, spec.trace_steps
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "mnemo" / "torch_extensions"))
    import torch
    import torch.nn.functional as F

    from core.errors import UserError
    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings
    from trainer.engine.step_timer import StepTimer
    from trainer.methods.models.net import IncrementalNet

    for name, v in (("--batch-size", batch_size), ("--steps", steps), ("--classes", classes)):
        if v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    if warmup < 0 or trace_steps < 1:
        raise UserError("--warmup must be >= 0 and --trace-steps >= 1")
    size = size or DEFAULT_SIZE[arch]
    if threads:
        torch.set_num_threads(threads)
    dist_info = distributed.init(device)
    dev = dist_info.device
    torch.manual_seed(0)
    model = IncrementalNet(arch, PRESET[arch])
    model.head.grow(classes)
    model = model.to(dev)
    engine = Engine(model, dist_info, batch_size * dist_info.world, lr=0.01, momentum=0.9, weight_decay=5e-4,
                    settings=EngineSettings(precision=precision))
    model = engine.module
    model.train()
    # The net always computes channels_last (trainer/methods/models/net.py); --channels-last gives it
    # its input in that layout already (as the DALI loader does), sparing the per-step conversion.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(batch_size, 3, size, size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch_size,), device=dev)
    cuda = dev.type == "cuda"

    def one_step(timer):
        timer.mark("data")
        with engine.autocast():                         # bf16/fp16: autocast, weights stay fp32
            loss = F.cross_entropy(model(x).float(), y)
        timer.mark("forward")
        engine.step(loss, mark=timer.mark)
        timer.mark("other")

    warm = StepTimer(dev, enabled=False)
    for _ in range(warmup):
        one_step(warm)
    if cuda:
        torch.cuda.synchronize(dev)
    timer = StepTimer(dev)                              # resets the CUDA peak after the warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step(timer)
    if cuda:
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    timer.end_epoch(batch_size * steps)
    s = timer.summary()

    trace_path = None
    if trace:
        from torch.profiler import ProfilerActivity, profile, record_function

        out_dir = Path(trace)
        out_dir.mkdir(parents=True, exist_ok=True)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        quiet = StepTimer(dev, enabled=False)
        with profile(activities=acts) as prof:
            for _ in range(trace_steps):
                with record_function("train_step"):
                    one_step(quiet)
                prof.step()
            if cuda:
                torch.cuda.synchronize(dev)
        trace_path = out_dir / (f"train_{arch}_{size}px_{engine.precision}_"
                                f"{'channels_last' if channels_last else 'contiguous'}_b{batch_size}.json")
        prof.export_chrome_trace(str(trace_path))

    split = {p: s[f"{p}_ms"] for p in ("forward", "backward", "optimizer")}
    total_ms = sum(split.values())
    return {
        "target": "train", "arch": arch, "image_size": size, "batch_size": batch_size, "classes": classes,
        "precision": engine.precision, "precision_requested": precision,
        "memory_format": "channels_last",                       # the net's compute layout
        "input_layout": "channels_last" if channels_last else "contiguous",
        "engine_setup_s": round(getattr(engine, "setup_s", 0.0), 2),
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if cuda else _cpu_name(),
        "world": dist_info.world, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "steps": steps, "warmup": warmup,
        "img_s": round(batch_size * steps * dist_info.world / wall, 1),
        "step_ms": round(1000 * wall / steps, 2),
        "split_ms": split,
        "split_share": {p: round(v / total_ms, 3) if total_ms else None for p, v in split.items()},
        "clock": s["clock"], "peak_mem_mb": s["peak_mem_mb"],
        "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "trace": str(trace_path) if trace_path else None,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} logical cores)"


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):      # DeepSpeed prints op-build lines on stdout
        spec = TrainProfile(**{k: v for k, v in vars(a).items() if k in TrainProfile.__dataclass_fields__})
        out = profile_train(spec)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
