"""Every GPU check of the cluster path in one run (scripts/gpu_check.sh), each printing its figures:

    synthetic   ResNet-18 224 px bf16 training img/s through the real engine, random batch on the GPU
    syncs       host synchronisations per training step of the real epoch loop (set_sync_debug_mode)
    dali        DALI mixed (nvJPEG) decode img/s, and ResNet-18 training img/s fed by DALI
    mnemonics   one outer step of the unrolled inner loop (objective=unrolled, Eq. 10; the dearest exemplar path)
                at 224 px with the ImageNet recipe's settings: time, peak memory
    nccl        a two-process NCCL glyph run (`mnemo train --nproc-per-node 2`), where two GPUs exist

    python -m benchmarks.gpu_check [--only NAME ...] [--budget-s 460] [--out FILE]
    python -m benchmarks.gpu_check --smoke     # the same code on CPU at toy sizes (the suite runs it)

Each check runs in its own process under its share of the time budget, so one failure or hang costs
only its own figures. One JSON object per check goes to stdout as it finishes; a table and the file
`--out` come last. A check that cannot run here (no CUDA, no DALI, one GPU) says why instead.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("synthetic", "syncs", "dali", "mnemonics", "nccl")
BUDGET_S = {"synthetic": 60, "syncs": 60, "dali": 150, "mnemonics": 120, "nccl": 150}   # of 8 minutes


def _sizes(smoke: bool) -> dict:
    if smoke:
        return {"arch": "resnet20", "size": 32, "batch": 16, "steps": 3, "warmup": 1, "classes": 10}
    return {"arch": "resnet18", "size": 224, "batch": 256, "steps": 30, "warmup": 10, "classes": 1000}


def check_synthetic(smoke: bool) -> dict:
    from benchmarks.train_profile import TrainProfile, profile_train

    z = _sizes(smoke)
    out = profile_train(TrainProfile(z["arch"], z["size"], "bf16", True, z["batch"], z["steps"], z["warmup"],
                                     z["classes"], device="cpu" if smoke else "cuda"))
    return {k: out[k] for k in ("arch", "image_size", "batch_size", "precision", "img_s", "step_ms", "split_ms",
                                "peak_mem_mb", "device_name")}


class _Repeat:
    """One batch on the device, `steps` times per epoch (the loop's own cost, no data path)."""

    def __init__(self, x, y, steps):
        self.x, self.y, self.steps_per_epoch = x, y, steps

    def epoch(self, e):
        for _ in range(self.steps_per_epoch):
            yield self.x, self.y


def _engine(z: dict, device: str, precision: str = "bf16"):
    import torch

    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings
    from trainer.methods.models.net import IncrementalNet

    info = distributed.init(device)
    torch.manual_seed(0)
    model = IncrementalNet(z["arch"], "imagenet" if z["arch"] == "resnet18" else "cifar").to(info.device)
    model.head.grow(z["classes"])
    return Engine(model, info, z["batch"], 0.1, 0.9, 5e-4, EngineSettings(precision=precision)), info


def _train(engine, batches, epochs: int) -> float:
    """img/s of the last of `epochs` epochs of the real epoch loop (the first ones warm up)."""
    import torch.nn.functional as F

    from trainer.engine.epoch_loop import StageRun, run_epochs

    class Sink:
        last: dict = {}

        def write(self, **event):
            if event.get("event") == "epoch":
                Sink.last = event

    run_epochs(engine, lambda m, x, y: {"loss": F.cross_entropy(m(x).float(), y)}, batches,
               StageRun("train", 0, epochs, lambda e: 0.1, log_every=0), Sink())
    return Sink.last["img_s"]


def check_syncs(smoke: bool) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not smoke:
        return {"skipped": "needs CUDA (torch.cuda.set_sync_debug_mode)"}
    z = _sizes(smoke)
    engine, info = _engine(z, "cuda" if cuda else "cpu")
    batches = _exemplar_batches(z, info.device)
    if not cuda:                                    # the smoke run: prove the code, count nothing
        _train(engine, batches, 1)
        return {"skipped": "needs CUDA (torch.cuda.set_sync_debug_mode); the batches ran on CPU",
                "steps_run": batches.steps_per_epoch}
    x = torch.rand(z["batch"], 3, z["size"], z["size"], device=info.device)
    y = torch.randint(0, z["classes"], (z["batch"],), device=info.device)
    steps = 20
    _train(engine, _Repeat(x, y, 5), 1)                       # warm-up outside the count
    out = {"steps": steps, **_count(lambda: _train(engine, _Repeat(x, y, steps), 1), steps)}
    with_data = _count(lambda: _train(engine, batches, 1), batches.steps_per_epoch)
    out["with_exemplar_batches"] = {"steps": batches.steps_per_epoch, **with_data}
    out["note"] = ("the epoch loop reads losses at log points and epoch ends only; with_exemplar_batches "
                   "adds the host-decoded real part's copy and the on-device exemplar augmentation")
    return out


def _exemplar_batches(z: dict, device):
    """The trainer's batches: host real images mixed with float16 exemplars that live on `device`."""
    import torch

    from core.ranks import DistInfo
    from data_pipeline.loading.batch_plan import BatchPlan
    from data_pipeline.loading.phase_batches import PhaseBatches
    from data_pipeline.loading.settings import LoaderOutput

    g = torch.Generator().manual_seed(0)
    n_real, n_ex = 20 * z["batch"], 8 * z["batch"]
    real = (torch.randint(0, 256, (n_real, 3, z["size"], z["size"]), dtype=torch.uint8, generator=g),
            torch.randint(0, z["classes"], (n_real,), generator=g))
    exemplars = (torch.rand(n_ex, 3, z["size"], z["size"], generator=g).half(),
                 torch.randint(0, z["classes"], (n_ex,), generator=g))
    return PhaseBatches(real, exemplars, BatchPlan(z["batch"], 0, DistInfo(device=device)),
                        LoaderOutput("cifar", z["size"]))


def _count(run, steps: int) -> dict:
    """Synchronisations while `run()` trains `steps` steps, by call site (torch.cuda.set_sync_debug_mode)."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    where: dict[str, int] = {}                                   # call site -> syncs
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{Path(w.filename).name}:{w.lineno}"
            where[key] = where.get(key, 0) + 1
    syncs = sum(where.values())
    return {"syncs": syncs, "syncs_per_step": round(syncs / steps, 2),
            "where": dict(sorted(where.items(), key=lambda kv: -kv[1])[:8])}


def _jpeg_shards(root: Path, smoke: bool) -> Path:
    """ImageNet-shaped JPEG shards: 1000 classes x 4 (toy: 100 x 2) real photo crops of 300-500 px."""
    from benchmarks.image_trees import write_imagenet_tree
    from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet

    classes, per_class, side = (100, 2, (40, 80)) if smoke else (1000, 4, (300, 500))
    tree = write_imagenet_tree(root / "tree", classes=classes, per_class=(per_class, 1), sides=side, quirks=False,
                               quality=90)
    convert_imagenet(tree["train"], tree["val"], root / "shards", ImagenetOptions(workers=min(8, os.cpu_count() or 1)),
                     progress=lambda *a: None)
    return root / "shards"


def check_dali(smoke: bool) -> dict:
    import torch

    try:
        from data_pipeline.loading.loaders import dali_problem
        problem = dali_problem(None if smoke else 0)
    except ImportError as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        return {"skipped": f"DALI does not run here ({problem})"}
    if not smoke and not torch.cuda.is_available():
        return {"skipped": "needs CUDA"}
    from core.ranks import DistInfo
    from data_pipeline.loading.batch_plan import BatchPlan
    from data_pipeline.loading.dali_batches import DaliPhaseBatches
    from data_pipeline.loading.settings import LoaderOutput
    from data_pipeline.shards.manifest import load_manifest

    z = _sizes(smoke)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = load_manifest(_jpeg_shards(Path(tmp), smoke))
        made = time.perf_counter() - t0
        device = torch.device("cpu") if smoke else torch.device("cuda", 0)
        out = LoaderOutput("imagenet", 224 if not smoke else z["size"], layout="channels_last",
                           dtype=torch.float32 if smoke else torch.bfloat16, threads=min(8, os.cpu_count() or 1))
        batches = DaliPhaseBatches(manifest, list(range(manifest.num_classes)), BatchPlan(z["batch"], 0,
                                   DistInfo(device=device)), out)
        n = batches.n_real
        for e in range(2):                                     # the second epoch is timed
            t0 = time.perf_counter()
            for x, _ in batches.epoch(e):
                pass
            if not smoke:
                torch.cuda.synchronize()
            decode_s = time.perf_counter() - t0
        z["arch"], z["classes"] = ("resnet18", 1000) if not smoke else (z["arch"], 1000)
        engine, _ = _engine(z, "cpu" if smoke else "cuda")
        train_img_s = _train(engine, batches, 2)
    return {"images": n, "shards_s": round(made, 1), "decode": "cpu" if smoke else "mixed (nvJPEG)",
            "decode_img_s": round(n / decode_s, 1), "train_img_s_dali_fed": train_img_s,
            "note": f"{n} photo crops over {manifest.num_classes} classes, {'toy 32' if smoke else '224'} px random-resized-crop, "
                    f"{'fp32' if smoke else 'bf16'} channels_last"}


def check_mnemonics(smoke: bool) -> dict:
    import torch

    from benchmarks.mnemonics_profile import run_isolated

    if not smoke and not torch.cuda.is_available():
        return {"skipped": "needs CUDA"}
    # configs/base/imagenet.yaml: 10-class groups, 20 exemplars per class, T = 5, real batches of 64
    cfg = {"device": "cpu" if smoke else "cuda", "size": 32 if smoke else 224, "inner_steps": 2 if smoke else 5,
           "checkpoint": True, "segment": 0, "classes": 2 if smoke else 10, "per_class": 2 if smoke else 20,
           "val_batch": 4 if smoke else 64, "repeats": 2, "threads": 1 if smoke else None}
    out = run_isolated(cfg, BUDGET_S["mnemonics"])
    keys = ("size", "inner_steps", "classes", "per_class", "val_batch", "step_s", "step_s_all", "peak_mb", "error")
    return {k: out[k] for k in keys if out.get(k) is not None}


def check_nccl(smoke: bool) -> dict:
    import torch

    if smoke:
        return {"skipped": "two GPUs needed (not run in the CPU smoke test)"}
    if torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s) here; the two-process NCCL run needs two"}
    from data_pipeline.convert.imagefolder import convert_imagefolder
    from benchmarks.image_trees import write_digits_tree

    with tempfile.TemporaryDirectory() as tmp:
        train, val = write_digits_tree(Path(tmp) / "tree")
        convert_imagefolder(train, val, Path(tmp) / "shards", progress=lambda *a: None)
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                            "--run-dir", str(run), f"data.shards={Path(tmp) / 'shards'}", "protocol.base_classes=6",
                            "protocol.phases=1", "train.epochs=2", "train.base_epochs=2", "train.finetune_epochs=1",
                            "--nproc-per-node", "2"], cwd=REPO, capture_output=True, text=True,
                           timeout=BUDGET_S["nccl"] - 10)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        start = next(e for e in events if e["event"] == "start")
        epochs = [e for e in events if e["event"] == "epoch"]
        return {"world": start["world"], "device": start["device"], "wall_s": round(wall, 1),
                "img_s_last_epoch": epochs[-1]["img_s"] if epochs else None,
                "ranks_agree": [e.get("ranks") for e in events if e["event"] == "phase"]}


def _one(name: str, smoke: bool) -> dict:
    with contextlib.redirect_stdout(sys.stderr):               # DeepSpeed prints op builds on stdout
        return globals()[f"check_{name}"](smoke)


def _isolated(name: str, smoke: bool, timeout: float) -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--one", name] + (["--smoke"] if smoke else [])
    try:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        out = json.loads(lines[-1]) if r.returncode == 0 and lines else \
            {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:300]}
    except subprocess.TimeoutExpired:
        out = {"error": f"timed out after {timeout:.0f}s"}
    return {"check": name, "seconds": round(time.perf_counter() - t0, 1), **out}


def _table(results: list[dict]) -> str:
    rows = []
    for r in results:
        figures = {k: v for k, v in r.items() if k not in ("check", "seconds", "where", "note", "step_s_all")}
        rows.append(f"{r['check']:<10} {r['seconds']:>6.1f}s  " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes: proves the checks run")
    ap.add_argument("--budget-s", type=float, default=460, help="all checks together (default: under 8 minutes)")
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    ap.add_argument("--in-process", action="store_true",
                    help="run the checks in this process, one after another (the CPU smoke test: saves a torch "
                         "start-up per check; on a GPU each check gets a fresh process and its own time limit)")
    ap.add_argument("--one", choices=CHECKS, help=argparse.SUPPRESS)        # internal: run one check here
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(_one(a.one, a.smoke)))
        return 0
    scale = a.budget_s / sum(BUDGET_S[n] for n in a.only)
    results = []
    for name in a.only:
        # the smoke run proves the code, not the time: a loaded CI machine gets room (5 min a check)
        if a.in_process:
            t0 = time.perf_counter()
            results.append({"check": name, **_one(name, a.smoke)})
            results[-1] = {"check": name, "seconds": round(time.perf_counter() - t0, 1), **results[-1]}
        else:
            results.append(_isolated(name, a.smoke, 300 if a.smoke else BUDGET_S[name] * scale))
        print(json.dumps(results[-1]), flush=True)
    print(_table(results))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
