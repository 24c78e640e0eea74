"""Checks of the model level: training img/s with and without LwF's teacher, the epoch ends, the herding feature
pass, a full-size exemplar bank beside a training step, and the host syncs of a step."""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_check.common import Repeat, batch, clock, device, device_name, emit, engine, model, sizes, sync


def _lwf_loss(teacher, kd_lambda: float = 0.5, tau: float = 2.0):
    """The LwF step's loss (trainer.methods.strategies.lwf.eq5_loss), its teacher's forward without gradients."""
    import torch

    from trainer.methods.strategies.lwf import eq5_loss

    def loss(net, x, y):
        old = None
        if teacher is not None:
            with torch.no_grad():
                old = teacher(x).float()
        return eq5_loss(net(x).float(), y, old, 0 if old is None else old.shape[1], kd_lambda, tau)
    return loss


def check_train(smoke: bool) -> dict:
    import torch

    z, dev = sizes(smoke), device(smoke)
    out = {"arch": z["arch"], "image_size": z["size"], "device_name": device_name(dev), "torch": torch.__version__}
    for n in z["batches"]:
        net = model(z, dev)
        teacher = copy.deepcopy(net).eval().requires_grad_(False)
        t0 = clock(dev)
        eng = engine(net, n, dev)
        setup = time.perf_counter() - t0
        x, y = batch(z, n, dev)
        figures = {"engine_setup_s": round(setup, 2)}
        for name, loss_of in (("with_teacher", _lwf_loss(teacher)), ("without_teacher", _lwf_loss(None))):
            def step():
                with eng.autocast():
                    loss = loss_of(eng.module, x, y)["loss"]
                eng.step(loss)
            t0 = clock(dev)
            step()                                  # the first step of a shape: cuDNN's algorithm search
            figures.setdefault("first_step_s", round(clock(dev) - t0, 3))
            for _ in range(z["warmup"]):
                step()
            t0 = clock(dev)
            for _ in range(z["steps"]):
                step()
            figures[f"img_s_{name}"] = round(n * z["steps"] / (clock(dev) - t0), 1)
            emit(**{f"batch_{n}": dict(figures)})
        if dev.type == "cuda":
            figures["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
        out[f"batch_{n}"] = figures
        eng.close()
    b = out[f"batch_{z['batches'][0]}"]
    out["teacher_factor"] = round(b["img_s_without_teacher"] / b["img_s_with_teacher"], 3)
    return out


def _stage(smoke: bool):
    """(batch size, engine, one batch) of a short stage at the first batch size."""
    z, dev = sizes(smoke), device(smoke)
    n = z["batches"][0]
    return n, engine(model(z, dev), n, dev), batch(z, n, dev)


def check_epochs(smoke: bool) -> dict:
    """Three short epochs of the real loop; each epoch end saves the real in-stage checkpoint."""
    from core.ranks import SINGLE
    from trainer.engine.epoch_loop import StageRun, run_epochs
    from trainer.run.storage.in_phase_checkpoint import Place, engine_dir, save_in_stage

    n, eng, (x, y) = _stage(smoke)
    ends: list[dict] = []

    class Sink:
        def write(self, **event):
            if event.get("event") == "epoch_end":
                ends.append(event)
                emit(epoch_end_s=[e["seconds"] for e in ends], save_s=[e.get("save_s") for e in ends])

    with tempfile.TemporaryDirectory() as run:
        def on_epoch_end(epoch):
            t0 = time.perf_counter()
            save_in_stage(Path(run), SINGLE, eng, Place(1, 0, "train", epoch), {"strategy": {}})
            return {"checkpoint": True, "save_s": round(time.perf_counter() - t0, 4)}

        run_epochs(eng, _lwf_loss(None), Repeat(x, y, 10 if not smoke else 2),
                   StageRun("train", 1, 3, lambda e: 0.1, log_every=0, on_epoch_end=on_epoch_end), Sink())
        ckpt_mb = sum(p.stat().st_size for p in engine_dir(Path(run)).rglob("*") if p.is_file()) / 2**20
    eng.close()
    return {"steps_per_epoch": 10 if not smoke else 2, "batch": n, "epoch_end_s": [e["seconds"] for e in ends],
            "save_s": [e.get("save_s") for e in ends], "checkpoint_mb": round(ckpt_mb, 1),
            "note": "an epoch end: the buffers' average, the figures gathered from the ranks, the engine checkpoint "
                    "(one process: no barrier waits on other ranks)"}


def check_herding(smoke: bool) -> dict:
    """exemplars.features.extract_features over host uint8 images (what a class group's selection runs)."""
    import torch

    from exemplars.features import extract_features

    z, dev = sizes(smoke), device(smoke)
    net = model(z, dev)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (z["features"], 3, z["size"], z["size"]), dtype=torch.uint8, generator=g)
    extract_features(net, images[:256], dev)                       # warm-up (cuDNN, allocator)
    t0 = clock(dev)
    extract_features(net, images, dev, batch_size=256)
    img_s = z["features"] / (clock(dev) - t0)
    return {"images": z["features"], "batch": 256, "feature_img_s": round(img_s, 1),
            "note": "fp32 forward of host uint8 images, as the selection runs it"}


def check_bank(smoke: bool) -> dict:
    """A full exemplar bank moved to the device through the staging buffers, then a training step beside it."""
    import torch

    from data_pipeline.loading.on_device import ExemplarBank

    z, dev = sizes(smoke), device(smoke)
    bank = torch.empty(z["bank"], 3, z["size"], z["size"], dtype=torch.float16)
    for i in range(0, z["bank"], 1000):                              # filled in slices: no float32 copy
        bank[i: i + 1000].uniform_()
    labels = torch.arange(z["bank"]) % z["classes"]
    gb = bank.numel() * 2 / 1e9
    emit(bank_gb=round(gb, 2))
    t0 = clock(dev)
    on = ExemplarBank(bank, labels, dev)
    moved = clock(dev) - t0
    emit(bank_gb=round(gb, 2), to_device_s=round(moved, 2))
    del bank
    n = z["batches"][0]
    eng = engine(model(z, dev), n, dev)
    idx = torch.randint(0, z["bank"], (n,), device=dev)
    x, y = on.take(idx)
    with eng.autocast():
        loss = torch.nn.functional.cross_entropy(eng.module(x.contiguous(memory_format=torch.channels_last)).float(), y)
    eng.step(loss)
    sync(dev)
    out = {"bank_gb": round(gb, 2), "to_device_s": round(moved, 2), "to_device_gb_s": round(gb / moved, 2),
           "step_ok": bool(torch.isfinite(loss).item())}
    if dev.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)
        stats = torch.cuda.host_memory_stats() if hasattr(torch.cuda, "host_memory_stats") else {}
        out["pinned_host_mb"] = round(stats.get("allocated_bytes.current", 0) / 2**20, 1) if stats else None
    eng.close()
    return out


def check_syncs(smoke: bool) -> dict:
    from trainer.engine.epoch_loop import StageRun, run_epochs

    _, eng, (x, y) = _stage(smoke)

    class Sink:
        def write(self, **event):
            pass

    def train(steps):
        run_epochs(eng, _lwf_loss(None), Repeat(x, y, steps), StageRun("train", 0, 1, lambda e: 0.1, log_every=0),
                   Sink())
    train(2)
    if eng.device.type != "cuda":
        return {"skipped": "needs CUDA (torch.cuda.set_sync_debug_mode); the loop ran on CPU", "steps_run": 2}
    steps = 20
    return {"steps": steps, **_count(lambda: train(steps), steps)}


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
    where: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{Path(w.filename).name}:{w.lineno}"
            where[key] = where.get(key, 0) + 1
    syncs = sum(where.values())
    return {"syncs": syncs, "syncs_per_step": round(syncs / steps, 2),
            "where": dict(sorted(where.items(), key=lambda kv: -kv[1])[:8])}
