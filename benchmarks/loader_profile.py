"""Input pipeline throughput: DALI (CPU pipelines here) vs the torch fallback, same shards, same transforms.

    mnemo profile loader --shards DIR [--images 3000] [--threads 2] [--batch-size 64] [--size 224]
                         [--split train] [--skip-inmemory]

prints ONE JSON object. Both sides read the first classes of `--split` until `--images` samples,
straight from the shards, and produce float [0,1] NCHW batches:

* train transform: decode, random-resized-crop S (area 0.08-1, aspect 3/4-4/3), random flip;
* eval transform: decode, resize the short side to 256/224 S, centre crop S.

`dali_cpu`: data_pipeline/dali_batches.py (the trainer's DALI loader: index-file reads, external
source, DALI CPU operators with `--threads` threads). `--read-latency-ms` makes every sample read of the DALI loader wait first, as on a shared file system
(reads ahead on threads hide it; reads in the training thread add it to every step). `torch_fallback`: webdataset + PIL +
torchvision transforms in a torch DataLoader with `--threads` worker processes (spawned; one torch
thread each). `torch_inmemory` (unless --skip-inmemory): the trainer's data.loader=torch path, i.e. decode the
phase once into memory (shard_reader.read_classes, one process) and then augment in torch every epoch
(augment.py, `--threads` torch threads); its per-epoch rate is what repeats in training.

Timing: img/s over the whole pass after the first batch (pipeline start-up and worker spawn are not
counted); `per_thread` divides by `--threads`. Run it on an otherwise idle machine for figures you
publish; the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mnemo profile loader", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True,
                    help="shard directory (manifest.json), e.g. from `mnemo shards imagenet`")
    ap.add_argument("--split", default="train")
    ap.add_argument("--images", type=int, default=3000, help="samples read (first classes until this many)")
    ap.add_argument("--threads", type=int, default=2, help="DALI threads = DataLoader workers = torch threads")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=224, help="output side S")
    ap.add_argument("--fallback-workers", type=int, default=None,
                    help="DataLoader workers of the torch fallback (default: --threads; 0: the main process)")
    ap.add_argument("--skip-inmemory", action="store_true", help="do not time the in-memory torch loader")
    ap.add_argument("--skip-fallback", action="store_true", help="do not time the webdataset + PIL fallback")
    ap.add_argument("--read-latency-ms", type=float, default=0.0,
                    help="emulate a shared file system: every positioned read (os.pread, the DALI loader's "
                         "sample reads) waits this long first")
    return ap


def _rate(batches) -> tuple[float, int]:
    """img/s after the first batch, and the images counted."""
    n, t0 = 0, None
    for x in batches:
        if t0 is None:
            t0 = time.perf_counter()
            continue
        n += len(x)
    return (n / (time.perf_counter() - t0) if t0 and n else float("nan")), n


def _classes_for(manifest, split: str, images: int) -> list[int]:
    chosen, count = [], 0
    for c in range(manifest.num_classes):
        if count >= images:
            break
        n = manifest.count(split, [c])
        if n:
            chosen.append(c)
            count += n
    return chosen


def _dali(manifest, split, classes, args) -> dict:
    from data_pipeline.loading.batch_plan import BatchPlan
    from data_pipeline.loading.dali_batches import DaliPhaseBatches, dali_eval_batches
    from data_pipeline.loading.settings import LoaderOutput

    out = LoaderOutput("imagenet", args.size, threads=args.threads)
    train = DaliPhaseBatches(manifest, classes, BatchPlan(args.batch_size, seed=0), out, split=split)
    tr, n = _rate(x for x, _ in train.epoch(0))
    ev, _ = _rate(x for x, _ in dali_eval_batches(manifest, split, classes, args.batch_size, out))
    return {"train_img_s": round(tr, 1), "eval_img_s": round(ev, 1), "images_timed": n,
            "train_img_s_per_thread": round(tr / args.threads, 1), "eval_img_s_per_thread": round(ev / args.threads, 1)}


def _worker_init(_):
    import torch

    torch.set_num_threads(1)


class _Decode:
    """webdataset sample -> (transformed tensor, label); a class so spawned workers can unpickle it."""

    def __init__(self, tf, ext: str):
        self.tf, self.ext = tf, ext

    def __call__(self, sample):
        from data_pipeline.shards.image_codec import open_rgb

        return self.tf(open_rgb(sample[self.ext])), int.from_bytes(sample["lbl"], "little")


def _torch_stream(manifest, split, classes, args) -> dict:
    import torch
    import webdataset as wds
    from torchvision import transforms

    urls = [str(manifest.path(s)) for s in manifest.shards(split, classes)]
    s = args.size
    tfs = {"train": transforms.Compose([transforms.RandomResizedCrop(s), transforms.RandomHorizontalFlip(),
                                        transforms.ToTensor()]),
           "eval": transforms.Compose([transforms.Resize(round(s * 256 / 224)), transforms.CenterCrop(s),
                                       transforms.ToTensor()])}
    ext = manifest.encoding
    out = {"workers": args.threads if args.fallback_workers is None else args.fallback_workers}
    for name, tf in tfs.items():
        ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None,
                            workersplitter=wds.split_by_worker).map(_Decode(tf, ext))
        workers = args.threads if args.fallback_workers is None else args.fallback_workers
        dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=workers,
                                         worker_init_fn=_worker_init if workers else None,
                                         multiprocessing_context="spawn" if workers else None)
        rate, n = _rate(x for x, _ in dl)
        out[f"{name}_img_s"] = round(rate, 1)
        out[f"{name}_img_s_per_thread"] = round(rate / args.threads, 1)
        out["images_timed"] = n
    return out


def _inmemory(manifest, split, classes, args) -> dict:
    import torch

    from data_pipeline.loading.augment import augment_real
    from data_pipeline.shards.reader import read_classes

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    d = read_classes(manifest, split, classes, "imagenet", args.size, cache_max_gb=None)
    decode = len(d) / (time.perf_counter() - t0)
    g = torch.Generator().manual_seed(0)
    batches = (augment_real(d.images[i: i + args.batch_size].float().div_(255), "imagenet", args.size, g)
               for i in range(0, len(d), args.batch_size))
    rate, n = _rate(batches)
    return {"decode_once_img_s": round(decode, 1), "decode_processes": 1, "train_augment_img_s": round(rate, 1),
            "train_augment_img_s_per_thread": round(rate / args.threads, 1), "images_timed": n,
            "note": "decode happens once per phase; the augment rate repeats every epoch"}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from data_pipeline.loading.loaders import dali_problem
    from data_pipeline.shards.manifest import load_manifest

    m = load_manifest(args.shards)
    classes = _classes_for(m, args.split, args.images)
    shards = m.shards(args.split, classes)
    load_before = os.getloadavg()
    result = {"shards": str(m.root), "split": args.split, "encoding": m.encoding, "classes": len(classes),
              "images": sum(s.samples for s in shards),
              "mean_image_kb": round(sum(s.bytes for s in shards) / max(1, sum(s.samples for s in shards)) / 1024, 1),
              "size": args.size, "batch_size": args.batch_size, "threads": args.threads,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_before": load_before}}
    if not args.skip_fallback:
        result["torch_fallback"] = _torch_stream(m, args.split, classes, args)
    if args.read_latency_ms:
        real_pread, wait = os.pread, args.read_latency_ms / 1000
        os.pread = lambda fd, n, offset: (time.sleep(wait), real_pread(fd, n, offset))[1]
        result["read_latency_ms"] = args.read_latency_ms
    problem = dali_problem()
    result["dali_cpu"] = {"unavailable": problem} if problem else _dali(m, args.split, classes, args)
    if not args.skip_inmemory:
        result["torch_inmemory"] = _inmemory(m, args.split, classes, args)
    if not problem and not args.skip_fallback:
        for k in ("train", "eval"):
            dali, fallback = result["dali_cpu"][f"{k}_img_s"], result["torch_fallback"][f"{k}_img_s"]
            result[f"dali_speedup_{k}"] = round(dali / fallback, 2)
    result["machine"]["load_avg_after"] = os.getloadavg()
    import torch
    import torchvision

    result["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    if not problem:
        from data_pipeline.loading.dali_pipeline import DALI_VERSION

        result["versions"]["dali"] = DALI_VERSION
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
