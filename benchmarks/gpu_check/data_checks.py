"""Checks of the data path: JPEG decode on the GPU and the loader's CPU side, and host-to-device copies."""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.gpu_check.common import clock, device, emit, sizes

THREADS = 8                      # data.workers of the cluster recipes


def _jpeg_shards(root: Path, smoke: bool) -> Path:
    """ImageNet-shaped JPEG shards: 500 classes x 2 (toy: 50 x 2) photo crops of 300-500 px (toy: 40-80)."""
    from benchmarks.image_trees import write_imagenet_tree
    from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet

    classes, side = (50, (40, 80)) if smoke else (500, (300, 500))
    tree = write_imagenet_tree(root / "tree", classes=classes, per_class=(2, 1), sides=side, quirks=False, quality=90)
    options = ImagenetOptions(workers=min(THREADS, os.cpu_count() or 1))
    convert_imagenet(tree["train"], tree["val"], root / "shards", options, progress=lambda *a: None)
    return root / "shards"


def _encoded(manifest) -> list[bytes]:
    import webdataset as wds

    urls = [str(manifest.path(s)) for s in manifest.shards("train", range(manifest.num_classes))]
    return [s[manifest.encoding] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False,
                                                          nodesplitter=None, workersplitter=None)]


def _torchvision_gpu_decode(encoded: list[bytes], dev, size: int) -> float:
    """img/s of torchvision.io.decode_jpeg on `dev` (nvJPEG on a GPU) plus a random-resized crop per image."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
    g = torch.Generator().manual_seed(0)

    def run():
        out = []
        for i in range(0, len(data), 128):
            for img in decode_jpeg(data[i: i + 128], device=dev):
                h, w = img.shape[-2:]
                s = max(8, int(min(h, w) * (0.3 + 0.7 * torch.rand(1, generator=g).item())))
                top = int(torch.randint(0, h - s + 1, (1,), generator=g))
                left = int(torch.randint(0, w - s + 1, (1,), generator=g))
                crop = img[None, :, top: top + s, left: left + s].float()
                out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=False))
        return out
    run()                                                         # warm-up: the decoder's set-up
    t0 = clock(dev)
    run()
    return len(data) / (clock(dev) - t0)


def check_decode(smoke: bool) -> dict:
    from data_pipeline.shards.manifest import load_manifest
    from data_pipeline.shards.reader import decode_image

    z, dev = sizes(smoke), device(smoke)
    size = z["size"] if smoke else 224
    out: dict = {"threads": THREADS}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = load_manifest(_jpeg_shards(Path(tmp), smoke))
        out["shards_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        encoded = _encoded(manifest)
        out["images"] = len(encoded)
        out["read_img_s"] = round(len(encoded) / (time.perf_counter() - t0), 1)
        emit(**out)
        with ThreadPoolExecutor(THREADS) as pool:                 # PIL releases the GIL while it decodes
            t0 = time.perf_counter()
            list(pool.map(lambda b: decode_image(b, "imagenet", size, "train"), encoded))
            out["cpu_decode_img_s"] = round(len(encoded) / (time.perf_counter() - t0), 1)
        emit(**out)
        out["gpu_decode_img_s"] = round(_torchvision_gpu_decode(encoded, dev, size), 1)
        out["gpu_decoder"] = f"torchvision.io.decode_jpeg on {dev.type} + crop + bilinear resize"
        emit(**out)
        out.update(_dali(manifest, dev, smoke, size))
    return out


def _dali(manifest, dev, smoke: bool, size: int) -> dict:
    """DALI's own rate (mixed nvJPEG decode, the trainer's pipeline) where DALI runs here."""
    import torch

    from data_pipeline.loading.loaders import dali_problem

    problem = dali_problem(None if smoke else dev.index or 0)
    if problem:
        return {"dali": f"does not run here ({problem}): gpu_decode_img_s stands in for it"}
    from core.ranks import DistInfo
    from data_pipeline.loading.batch_plan import BatchPlan
    from data_pipeline.loading.dali_batches import DaliPhaseBatches
    from data_pipeline.loading.settings import LoaderOutput

    out = LoaderOutput("imagenet", size, layout="channels_last", dtype=torch.float32 if smoke else torch.bfloat16,
                       threads=THREADS)
    batches = DaliPhaseBatches(manifest, list(range(manifest.num_classes)), BatchPlan(64, 0, DistInfo(device=dev)), out)
    for e in range(2):                                            # the second epoch is timed
        t0 = clock(dev)
        for _ in batches.epoch(e):
            pass
        seconds = clock(dev) - t0
    batches.close()
    return {"dali_decode_img_s": round(batches.n_real / seconds, 1)}


def check_copies(smoke: bool) -> dict:
    """Host-to-device GB/s: pageable, pinned, and through the reused staging buffers (on_device.staged_copy)."""
    import torch

    from data_pipeline.loading.on_device import staged_copy

    z, dev = sizes(smoke), device(smoke)
    n = z["copy_mb"] << 20
    host = torch.empty(n, dtype=torch.uint8).fill_(7)
    out = {"mb": z["copy_mb"]}
    staged_copy(host[: 1 << 20], dev)                             # the staging buffers are made once
    t0 = clock(dev)
    staged_copy(host, dev)
    out["staged_gb_s"] = round(n / 1e9 / (clock(dev) - t0), 2)
    emit(**out)
    if dev.type != "cuda":
        return {**out, "skipped": "pinned and pageable copies need CUDA; the staged copy ran on the CPU"}
    for name, src in (("pageable", host), ("pinned", host.pin_memory())):
        src.to(dev, non_blocking=True)
        t0 = clock(dev)
        src.to(dev, non_blocking=True)
        out[f"{name}_gb_s"] = round(n / 1e9 / (clock(dev) - t0), 2)
        emit(**out)
    return out


def check_stored(smoke: bool) -> dict:
    """Real images shown as the memory stores them (`exemplars.real_as_stored`): the round trip of a training batch
    on the device for `png` and `lowres` x1/2 (img/s), and how far it is from the host's (levels of 1/255)."""
    import torch

    from exemplars.codecs.lowres import Lowres, LowresSettings
    from exemplars.codecs.png import Png

    z, dev = sizes(smoke), device(smoke)
    n = z["batches"][-1]
    host = torch.rand(n, 3, z["size"], z["size"], generator=torch.Generator().manual_seed(0))
    x = host.to(dev)
    out: dict = {"batch": n}
    for codec in (Png(), Lowres(LowresSettings(factor=2))):
        key = codec.name
        got = codec.round_trip(x)                                 # warm-up, and the figure checked against the host
        levels = (got.float().cpu() - codec.round_trip(host)).abs().mul(255)
        t0 = clock(dev)
        for _ in range(z["steps"]):
            codec.round_trip(x)
        out[f"{key}_img_s"] = round(z["steps"] * n / (clock(dev) - t0), 1)
        out[f"{key}_max_levels_off_host"] = round(float(levels.max()), 3)
        out[f"{key}_share_off_host"] = float((levels > 0.5).float().mean())
        emit(**out)
    return out
