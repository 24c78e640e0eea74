"""What the checks share: the sizes (full or the CPU smoke test's toy ones), the device, the model and the engine,
and `emit`, which writes a figure the moment it is measured."""
from __future__ import annotations

import json
import os
import time

PARTIAL_ENV = "MNEMO_GPU_CHECK_PARTIAL"       # the file a check's figures go to as it measures them


def emit(**figures) -> None:
    """Append `figures` to the check's partial file (the runner keeps them if the check is cut off)."""
    path = os.environ.get(PARTIAL_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(figures) + "\n")


def sizes(smoke: bool) -> dict:
    if smoke:
        return {"arch": "resnet20", "preset": "cifar", "size": 32, "batches": (8, 16), "steps": 2, "warmup": 1,
                "classes": 10, "bank": 100, "features": 64, "copy_mb": 8}
    return {"arch": "resnet18", "preset": "imagenet", "size": 224, "batches": (64, 128), "steps": 20, "warmup": 5,
            "classes": 1000, "bank": 20_000, "features": 4096, "copy_mb": 1024}


def device(smoke: bool):
    import torch

    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (use --smoke on a CPU)")
    return torch.device("cuda", 0)


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def clock(dev) -> float:
    """A wall-clock reading after the device has finished its queued work."""
    sync(dev)
    return time.perf_counter()


def device_name(dev) -> str:
    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    from benchmarks.train_profile import _cpu_name

    return _cpu_name()


def model(z: dict, dev, classes: int | None = None):
    import torch

    from trainer.methods.models.net import IncrementalNet

    torch.manual_seed(0)
    net = IncrementalNet(z["arch"], z["preset"])
    net.head.grow(classes or z["classes"])
    return net.to(dev)


def engine(net, batch: int, dev):
    """The trainer's engine (DeepSpeed, bf16 autocast on a GPU) over `net`, one process."""
    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings

    info = distributed.init(dev.type)
    return Engine(net, info, batch, 0.1, 0.9, 5e-4, EngineSettings(precision="bf16"))


def batch(z: dict, n: int, dev):
    import torch

    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, 3, z["size"], z["size"], generator=g).to(dev).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, z["classes"], (n,), generator=g).to(dev)


class Repeat:
    """One batch on the device, `steps` times per epoch (the loop's own cost, no data path)."""

    def __init__(self, x, y, steps: int):
        self.x, self.y, self.steps_per_epoch = x, y, steps

    def epoch(self, e):
        for _ in range(self.steps_per_epoch):
            yield self.x, self.y

    def close(self) -> None:
        pass
