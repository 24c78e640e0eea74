"""Checks that run mnemo itself: a glyph run killed and resumed on the GPU beside the CPU's, a mnemonics outer step
at 224 px, and a two-process NCCL run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_check import BUDGET_S
from benchmarks.gpu_check.common import emit

REPO = Path(__file__).resolve().parents[2]
RUN = ["protocol.base_classes=6", "protocol.phases=1", "train.epochs=2", "train.base_epochs=2",
       "train.finetune_epochs=1", "exemplars.per_class=5", "data.image_size=16", "train.batch_size=32",
       "eval.batch_size=64", "train.checkpoint_minutes=0", "logging.tensorboard=false"]


def _digits(root: Path) -> Path:
    from benchmarks.image_trees import write_digits_tree
    from data_pipeline.convert.imagefolder import convert_imagefolder

    train, val = write_digits_tree(root / "tree")
    convert_imagefolder(train, val, root / "shards", progress=lambda *a: None)
    return root / "shards"


def _train(run: Path, shards: Path, env: dict | None = None, extra: tuple = (), wait: bool = True):
    cmd = [sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir", str(run),
           f"data.shards={shards}", *RUN, *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if wait:
        proc.communicate()
    return proc


def _result(run: Path) -> dict | None:
    path = run / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    for p in m["phases"]:
        p.pop("wall_s", None), p.pop("timings", None)
    return m


def check_resume(smoke: bool) -> dict:
    """Uninterrupted and killed-then-resumed on the GPU (on the CPU in the smoke test), an uninterrupted CPU run
    beside them: their Ā, and whether the resumed run's metrics equal the uninterrupted one's."""
    import torch

    if not smoke and not torch.cuda.is_available():
        return {"skipped": "needs CUDA"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = _digits(tmp)
        cpu = None if smoke else _train(tmp / "cpu", shards, {"CUDA_VISIBLE_DEVICES": ""}, wait=False)
        t0 = time.perf_counter()
        ref = _train(tmp / "ref", shards)
        out = {"device": "cpu" if smoke else "cuda", "uninterrupted_s": round(time.perf_counter() - t0, 1)}
        emit(**out)
        killed = _train(tmp / "run", shards, {"MNEMO_FAULT": "train:1:0"})
        resumed = _train(tmp / "run", shards)
        if ref.returncode or resumed.returncode:
            bad = ref if ref.returncode else resumed
            return {**out, "error": (bad.stderr or "").strip().splitlines()[-1:] or f"exit {bad.returncode}"}
        a, b = _result(tmp / "ref"), _result(tmp / "run")
        out.update(killed=killed.returncode == -signal.SIGKILL, average_accuracy=a["average_accuracy"],
                   resumed_average_accuracy=b["average_accuracy"], resumed_equals_uninterrupted=a == b)
        emit(**out)
        if cpu is not None:
            cpu.communicate()
            c = _result(tmp / "cpu")
            out["cpu_average_accuracy"] = c["average_accuracy"] if c else None
    return out


def check_mnemonics(smoke: bool) -> dict:
    import torch

    from benchmarks.mnemonics_profile import run_isolated

    if not smoke and not torch.cuda.is_available():
        return {"skipped": "needs CUDA"}
    # configs/base/imagenet.yaml: 10-class groups, 20 exemplars per class, T = 5, real batches of 64
    cfg = {"device": "cpu" if smoke else "cuda", "size": 32 if smoke else 224, "inner_steps": 2 if smoke else 5,
           "checkpoint": True, "segment": 0, "classes": 2 if smoke else 10, "per_class": 2 if smoke else 20,
           "val_batch": 4 if smoke else 64, "repeats": 1, "threads": 1 if smoke else None}
    out = run_isolated(cfg, BUDGET_S["mnemonics"] * 4)
    keys = ("size", "inner_steps", "classes", "per_class", "val_batch", "step_s", "peak_mb", "error")
    return {k: out[k] for k in keys if out.get(k) is not None}


def check_nccl(smoke: bool) -> dict:
    import torch

    if smoke:
        return {"skipped": "two GPUs needed (not run in the CPU smoke test)"}
    if torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s) here; the two-process NCCL run needs two"}
    with tempfile.TemporaryDirectory() as tmp:
        shards = _digits(Path(tmp))
        t0 = time.perf_counter()
        r = _train(Path(tmp) / "run", shards, extra=("--nproc-per-node", "2"))
        if r.returncode:
            return {"error": (r.stderr or "").strip().splitlines()[-1:] or f"exit {r.returncode}"}
        events = [json.loads(line) for line in (Path(tmp) / "run" / "events.jsonl").read_text().splitlines()]
        start = next(e for e in events if e["event"] == "start")
        return {"world": start["world"], "device": start["device"], "wall_s": round(time.perf_counter() - t0, 1)}
