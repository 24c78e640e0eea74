"""Per-phase time of the 25-phase ImageNet-1k recipe on a GPU cluster, from measured per-step costs and
stated assumptions.

    python -m benchmarks.cluster_estimate [--gpus 16] [--gpu-img-s 3500] [--json]

Every input is a flag, so a figure measured on a real cluster (`scripts/gpu_check.sh`: `train_img_s`,
`syncs_per_step`, `decode_img_s`) replaces its assumption (`--syncs-per-step`, ...). Defaults:

* measured here (CPU, docs/benchmarks.md): host syncs per step (`mnemo profile syncs`), in-phase
  checkpoint bytes (tests/unit/trainer/test_in_phase_checkpoint.py), PIL decode + resize rate per core
  of a 224 px ImageNet-sized JPEG (`mnemo profile loader`);
* assumed (no GPU measured yet): ResNet-18 224 px bf16 channels_last training at 3,500 img/s per
  H100 (the ~56k img/s of 16 tuned GPUs), nvJPEG decode at 8,000 img/s per GPU, herding's feature pass
  at 10,000 img/s per GPU, 50 µs of lost device time per host sync at ~18 ms steps, a pageable
  host-to-device copy at 10 GB/s, 1 GB/s of shared-file-system writes per job, 0.5 ms per sample read
  and 2 ms per file open on that file system, 90 s to start a chained job (srun, imports, rendezvous,
  NCCL, the sealed phase read), 3 s to build a DALI pipeline, 5 s per DeepSpeed engine.

The protocol is configs/slurm/imagenet1k_b500_25_2x8.yaml: 500 base classes, then 25 phases of 20;
1,281 train and 50 val images per class; 90 epochs per phase, a 10-epoch balanced fine-tune on the
exemplars (where the strategy has one; `--finetune-epochs 0` leaves it out); 20 exemplars per class in
float16 at 224 px. Prints a table (or JSON with --json): per phase kind, seconds by part, and the total.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

EXEMPLAR_FP16_BYTES = 3 * 224 * 224 * 2


@dataclass
class Costs:
    gpus: int = 16
    gpu_img_s: float = 3500.0          # assumed: training img/s per GPU
    per_rank_batch: int = 64
    base: int = 500
    phases: int = 25
    new_per_phase: int = 20
    train_per_class: int = 1281
    val_per_class: int = 50
    epochs: int = 90
    finetune_epochs: int = 10
    exemplars: int = 20
    sync_cost_s: float = 50e-6         # assumed: device time lost per host sync
    pageable_gb_s: float = 10.0        # assumed
    fs_gb_s: float = 1.0               # assumed: shared file system, per job
    job_start_s: float = 90.0          # assumed: per chained job
    pipeline_build_s: float = 3.0      # assumed
    engine_setup_s: float = 5.0        # assumed
    nvjpeg_img_s: float = 8000.0       # assumed: per GPU
    feature_img_s: float = 10000.0     # assumed: herding's forward, per GPU
    pil_img_s: float = 150.0           # measured order (CPU, one core): decode + resize of a ~500x375 JPEG
    decode_threads: int = 8            # data.workers of the recipe
    syncs_per_step: float = 0.1        # measured (mnemo profile syncs): two reads per epoch, at its end
    read_latency_s: float = 0.5e-3     # assumed: one positioned read of a sample on a shared file system
    read_threads: int = 8              # the DALI loader's readers: data.workers of the recipe, at most 8


def _phase(c: Costs, i: int) -> dict:
    new = c.base if i == 0 else c.new_per_phase
    old = 0 if i == 0 else c.base + (i - 1) * c.new_per_phase
    seen = new + old
    real, ex = new * c.train_per_class, old * c.exemplars
    steps = math.ceil((real + ex) / (c.gpus * c.per_rank_batch)) * c.epochs
    compute = c.epochs * (real + ex) / (c.gpus * c.gpu_img_s)
    # a step's encoded images are read ahead of it on `read_threads` threads: hidden unless slower than compute
    real_per_step = c.per_rank_batch * real / (real + ex)
    reads = steps * real_per_step * c.read_latency_s / c.read_threads
    syncs = steps * c.syncs_per_step * c.sync_cost_s
    pipelines = 2 * c.pipeline_build_s                    # one DALI pipeline per stage (train, fine-tune)
    ft = c.finetune_epochs * (seen * c.exemplars) / (c.gpus * c.gpu_img_s) if i > 0 else 0.0
    val = seen * c.val_per_class                          # each rank decodes its part through DALI (nvJPEG)
    evaluate = val / c.gpus / c.nvjpeg_img_s + val / c.gpus / c.feature_img_s
    per_rank_classes = math.ceil(new / c.gpus)            # one class per group, spread over the ranks
    imgs = per_rank_classes * c.train_per_class
    select = imgs / (c.pil_img_s * c.decode_threads) + imgs / c.feature_img_s
    memory_bytes = (old + new) * c.exemplars * EXEMPLAR_FP16_BYTES
    exchange = new * c.exemplars * EXEMPLAR_FP16_BYTES / (c.fs_gb_s * 1e9)
    ckpt_writes = 2 * memory_bytes / (c.fs_gb_s * 1e9)    # the memory's file once in the phase, then sealed
    resume_read = memory_bytes / (c.fs_gb_s * 1e9)        # rank 0 reads it and sends it to the others
    parts = {"train": max(compute, reads) + syncs, "finetune": ft, "pipelines": pipelines,
             "engines": 2 * c.engine_setup_s, "eval": evaluate, "exemplars": select + exchange,
             "checkpoints": ckpt_writes, "job_start": c.job_start_s + resume_read}
    return {"phase": i, "seconds": {k: round(v, 1) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 1),
            "of_which_compute_s": round(compute + ft, 1), "syncs_s": round(syncs, 1), "reads_s": round(reads, 1)}


def estimate(c: Costs) -> dict:
    rows = [_phase(c, i) for i in range(c.phases + 1)]
    total = sum(r["total_s"] for r in rows)
    return {"phase_0": rows[0], "phase_1": rows[1], "phase_25": rows[-1], "total_h": round(total / 3600, 2),
            "compute_h": round(sum(r["of_which_compute_s"] for r in rows) / 3600, 2), "costs": asdict(c)}


def _table(e: dict) -> str:
    lines = ["| phase | " + " | ".join(e["phase_0"]["seconds"]) + " | total |",
             "|---|" + "---|" * (len(e["phase_0"]["seconds"]) + 1)]
    for key in ("phase_0", "phase_1", "phase_25"):
        r = e[key]
        lines.append(f"| {r['phase']} | " + " | ".join(f"{v:,.0f}" for v in r["seconds"].values())
                     + f" | {r['total_s']:,.0f} s |")
    lines.append(f"\nwhole run {e['total_h']:.2f} h of allocation, of which {e['compute_h']:.2f} h GPU compute")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster_estimate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(Costs()).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--json", action="store_true")
    args = vars(ap.parse_args(argv))
    as_json = args.pop("json")
    e = estimate(Costs(**args))
    print(json.dumps(e) if as_json else _table(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
