"""Per-phase time of the 25-phase ImageNet-1k recipe on a GPU cluster, from measured costs and stated assumptions.

    python -m benchmarks.cluster_estimate [--from GPU_CHECK_JSON] [--gpus 16] [--nodes 2] [--queue-wait-s 0]
                                          [--json | --inputs] [--<input> VALUE ...]

Every input is a flag with a default, and each default is marked measured (where, when) or assumed
(`--inputs` prints them as a table). `--from` reads the JSON `scripts/gpu_check.sh` writes and replaces the
assumptions it measured; a flag given explicitly wins over both. What the estimate adds up per phase:

* train: 90 epochs of the phase's images (new classes' and the old exemplars) over the GPUs at the measured
  training rate, slowed in phases 1-25 by the teacher's forward pass (`teacher_factor`), or by the shared file
  system's reads where those are slower; the host syncs; the gradient all-reduce of every step (bf16, once per
  step after the backward pass: over the inter-node link, `interconnect_gb_s`, where the job spans nodes);
* epoch_ends: every epoch's fixed cost (the buffers' average, the figures gathered from the ranks), and an
  in-stage checkpoint every `checkpoint_minutes`;
* finetune, pipelines, engines (set-up and the first step's cuDNN search), eval, exemplars (herding's decode and
  feature pass of a rank's classes, the exchange), bank (the exemplar bank to the GPUs, each stage),
  checkpoints (the memory's file in the phase, and the sealed phase's change of it), job_start (start, the
  sealed phase read, and `queue_wait_s` per job: chain mode submits one job per phase).

The protocol is configs/slurm/imagenet1k_b500_25_2x8.yaml: 500 base classes, then 25 phases of 20;
1,281 train and 50 val images per class; 90 epochs per phase, a 10-epoch balanced fine-tune on the
exemplars (`--finetune-epochs 0` leaves it out); 20 exemplars per class in float16 at 224 px.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.errors import UserError

EXEMPLAR_FP16_BYTES = 3 * 224 * 224 * 2
RESNET18_PARAMS = 11_689_512
MODEL_STATE_BYTES = RESNET18_PARAMS * 4 * 2           # fp32 weights and momentum: a sealed model and its optimizer
ASSUMED = "assumed"
CPU = "measured on CPU (docs/benchmarks.md)"
BY_DESIGN = "the recipe"


@dataclass
class Costs:
    gpus: int = 16
    nodes: int = 2
    gpu_img_s: float = 3500.0          # training img/s per GPU, no teacher (phase 0)
    teacher_factor: float = 1.3        # phases 1-25: the teacher's forward pass on every batch
    per_rank_batch: int = 64
    base: int = 500
    phases: int = 25
    new_per_phase: int = 20
    train_per_class: int = 1281
    val_per_class: int = 50
    epochs: int = 90
    finetune_epochs: int = 10
    exemplars: int = 20
    sync_cost_s: float = 50e-6         # device time lost per host sync
    syncs_per_step: float = 0.1        # two reads per epoch, at its end
    grad_comm_bytes: int = 2           # engine.grad_comm_dtype of the recipes: bf16
    interconnect_gb_s: float = 25.0    # between nodes, per node: 200 Gb/s InfiniBand
    nvlink_gb_s: float = 150.0         # within a node
    epoch_end_s: float = 0.3           # per epoch: buffers' average, figures gathered from the ranks
    checkpoint_minutes: float = 5.0    # train.checkpoint_minutes
    checkpoint_s: float = 3.0          # one in-stage checkpoint (engine state of every rank, two barriers)
    staged_gb_s: float = 10.0          # host-to-device through the reused pinned buffers
    fs_gb_s: float = 1.0               # shared file system, per job
    job_start_s: float = 90.0          # per chained job: srun, imports, rendezvous, NCCL
    queue_wait_s: float = 0.0          # per job, waiting in the queue (not in the total unless given)
    pipeline_build_s: float = 3.0
    engine_setup_s: float = 5.0
    first_step_s: float = 2.0          # per engine: the first step's cuDNN algorithm search
    nvjpeg_img_s: float = 8000.0       # per GPU
    feature_img_s: float = 10000.0     # herding's forward, per GPU
    pil_img_s: float = 150.0           # per thread: decode + resize of a ~500x375 JPEG
    decode_threads: int = 8            # data.workers of the recipe
    read_latency_s: float = 0.5e-3     # one positioned read of a sample on a shared file system
    read_threads: int = 8              # the DALI loader's readers: data.workers of the recipe, at most 8


SOURCES = {name: ASSUMED for name in (
    "gpu_img_s", "teacher_factor", "sync_cost_s", "interconnect_gb_s", "nvlink_gb_s", "epoch_end_s", "checkpoint_s",
    "staged_gb_s", "fs_gb_s", "job_start_s", "pipeline_build_s", "engine_setup_s", "first_step_s", "nvjpeg_img_s",
    "feature_img_s", "read_latency_s")}
SOURCES.update(syncs_per_step="measured on CPU (mnemo profile syncs; docs/benchmarks.md)",
               pil_img_s="measured on CPU, order only (mnemo profile loader; docs/benchmarks.md)",
               queue_wait_s="not counted unless given (a cluster's queue, not mnemo's)")


def _median(values) -> float | None:
    values = [v for v in values or [] if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def from_gpu_check(path: str | Path) -> tuple[dict, dict]:
    """(inputs, their sources) measured by scripts/gpu_check.sh in `path`."""
    try:
        report = json.loads(Path(path).read_text())
        checks = {c["check"]: c for c in report["checks"]}
        meta = report["meta"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a gpu_check result ({type(e).__name__}: {e}); write one with "
                        "`bash scripts/gpu_check.sh` (OUT=DIR puts it in DIR/gpu_check.json)") from None
    if meta.get("smoke"):
        raise UserError(f"{path} is a CPU smoke run (--smoke): its toy figures say nothing about a GPU")
    where = f"measured on {meta.get('gpu') or 'no GPU'} ({meta.get('when', '?')[:10]}, torch {meta.get('torch')})"
    got: dict = {}
    train = checks.get("train", {})
    b64 = train.get("batch_64", {})
    got["gpu_img_s"] = b64.get("img_s_without_teacher")
    got["teacher_factor"] = train.get("teacher_factor")
    got["engine_setup_s"] = b64.get("engine_setup_s")
    got["first_step_s"] = b64.get("first_step_s")
    epochs = checks.get("epochs", {})
    ends, saves = epochs.get("epoch_end_s") or [], epochs.get("save_s") or []
    if ends and saves and len(ends) == len(saves):
        got["checkpoint_s"] = _median(saves)
        got["epoch_end_s"] = _median([e - s for e, s in zip(ends, saves)])
    decode = checks.get("decode", {})
    got["nvjpeg_img_s"] = decode.get("dali_decode_img_s") or decode.get("gpu_decode_img_s")
    if decode.get("cpu_decode_img_s"):
        got["pil_img_s"] = decode["cpu_decode_img_s"] / decode.get("threads", 8)
    got["feature_img_s"] = checks.get("herding", {}).get("feature_img_s")
    got["staged_gb_s"] = checks.get("bank", {}).get("to_device_gb_s") or checks.get("copies", {}).get("staged_gb_s")
    got["syncs_per_step"] = checks.get("syncs", {}).get("syncs_per_step")
    got = {k: v for k, v in got.items() if isinstance(v, (int, float)) and v > 0}
    return got, {k: where + (" one GPU, no other rank" if k == "epoch_end_s" else "") for k in got}


def _phase(c: Costs, i: int) -> dict:
    new = c.base if i == 0 else c.new_per_phase
    old = 0 if i == 0 else c.base + (i - 1) * c.new_per_phase
    seen = new + old
    real, ex = new * c.train_per_class, old * c.exemplars
    steps_per_epoch = math.ceil((real + ex) / (c.gpus * c.per_rank_batch))
    steps = steps_per_epoch * c.epochs
    compute = c.epochs * (real + ex) / (c.gpus * c.gpu_img_s) * (c.teacher_factor if i > 0 else 1.0)
    # a step's encoded images are read ahead of it on `read_threads` threads: hidden unless slower than compute
    real_per_step = c.per_rank_batch * real / (real + ex)
    reads = steps * real_per_step * c.read_latency_s / c.read_threads
    syncs = steps * c.syncs_per_step * c.sync_cost_s
    grad_bytes = RESNET18_PARAMS * c.grad_comm_bytes
    link = c.interconnect_gb_s if c.nodes > 1 else c.nvlink_gb_s
    parties = c.nodes if c.nodes > 1 else c.gpus
    allreduce_s = 2 * (parties - 1) / parties * grad_bytes / (link * 1e9)      # a ring all-reduce, per step
    ft_epochs = c.finetune_epochs if i > 0 else 0
    ft_steps = math.ceil(seen * c.exemplars / (c.gpus * c.per_rank_batch)) * ft_epochs
    ft = ft_epochs * (seen * c.exemplars) / (c.gpus * c.gpu_img_s) * c.teacher_factor + ft_steps * allreduce_s
    train = max(compute, reads) + syncs + steps * allreduce_s
    checkpoints = math.floor(train / (60 * c.checkpoint_minutes)) if c.checkpoint_minutes > 0 else c.epochs - 1
    epoch_ends = (c.epochs + ft_epochs) * c.epoch_end_s + checkpoints * c.checkpoint_s
    stages = 2 if i > 0 else 1
    val = seen * c.val_per_class                          # each rank decodes its part through DALI (nvJPEG)
    evaluate = val / c.gpus / c.nvjpeg_img_s + val / c.gpus / c.feature_img_s
    per_rank_classes = math.ceil(new / c.gpus)            # one class per group, spread over the ranks
    imgs = per_rank_classes * c.train_per_class
    select = imgs / (c.pil_img_s * c.decode_threads) + imgs / c.feature_img_s
    memory_bytes = seen * c.exemplars * EXEMPLAR_FP16_BYTES
    new_bytes = new * c.exemplars * EXEMPLAR_FP16_BYTES
    exchange = new_bytes / (c.fs_gb_s * 1e9)
    bank = stages * old * c.exemplars * EXEMPLAR_FP16_BYTES / (c.staged_gb_s * 1e9)
    # the memory's file in the phase (whole), the sealed phase's change of it, the model and optimizer state
    writes = (memory_bytes + new_bytes + MODEL_STATE_BYTES) / (c.fs_gb_s * 1e9)
    resume_read = memory_bytes / (c.fs_gb_s * 1e9)        # rank 0 reads it and sends it to the others
    parts = {"train": train, "epoch_ends": epoch_ends, "finetune": ft, "pipelines": stages * c.pipeline_build_s,
             "engines": stages * (c.engine_setup_s + c.first_step_s), "eval": evaluate, "exemplars": select + exchange,
             "bank": bank, "checkpoints": writes, "job_start": c.job_start_s + c.queue_wait_s + resume_read}
    return {"phase": i, "seconds": {k: round(v, 1) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 1),
            "of_which_compute_s": round(compute + ft, 1), "allreduce_s": round((steps + ft_steps) * allreduce_s, 1),
            "checkpoints_in_stage": checkpoints, "steps_per_epoch": steps_per_epoch}


def estimate(c: Costs, sources: dict | None = None) -> dict:
    rows = [_phase(c, i) for i in range(c.phases + 1)]
    total = sum(r["total_s"] for r in rows)
    return {"phase_0": rows[0], "phase_1": rows[1], "phase_25": rows[-1], "total_h": round(total / 3600, 2),
            "compute_h": round(sum(r["of_which_compute_s"] for r in rows) / 3600, 2), "costs": asdict(c),
            "sources": {**{f.name: BY_DESIGN for f in fields(Costs)}, **SOURCES, **(sources or {})}}


def _table(e: dict) -> str:
    lines = ["| phase | " + " | ".join(e["phase_0"]["seconds"]) + " | total |",
             "|---|" + "---|" * (len(e["phase_0"]["seconds"]) + 1)]
    for key in ("phase_0", "phase_1", "phase_25"):
        r = e[key]
        lines.append(f"| {r['phase']} | " + " | ".join(f"{v:,.0f}" for v in r["seconds"].values())
                     + f" | {r['total_s']:,.0f} s |")
    lines.append(f"\nwhole run {e['total_h']:.2f} h of allocation, of which {e['compute_h']:.2f} h GPU compute")
    return "\n".join(lines)


def inputs_table(e: dict) -> str:
    lines = ["| input | value | source |", "|---|---|---|"]
    for name, value in e["costs"].items():
        if e["sources"][name] != BY_DESIGN:
            lines.append(f"| `{name}` | {value:g} | {e['sources'][name]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster_estimate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default=None, metavar="GPU_CHECK_JSON",
                    help="the figures scripts/gpu_check.sh measured (its --out file)")
    for f in fields(Costs):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                        help=f"default {f.default:g}" if isinstance(f.default, float) else f"default {f.default}")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inputs", action="store_true", help="print every input, marked measured or assumed")
    args = vars(ap.parse_args(argv))
    as_json, show_inputs, source = args.pop("json"), args.pop("inputs"), args.pop("source")
    try:
        measured, sources = from_gpu_check(source) if source else ({}, {})
    except UserError as e:
        print(f"cluster_estimate: error: {e}", file=sys.stderr)
        return 2
    given = {k: v for k, v in args.items() if v is not None}
    sources.update({k: "given on the command line" for k in given})
    e = estimate(Costs(**{**measured, **given}), sources)
    print(json.dumps(e) if as_json else inputs_table(e) + "\n\n" + _table(e) if show_inputs else _table(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
