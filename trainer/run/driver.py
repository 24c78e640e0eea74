"""The phase driver: `run(cfg, run_dir)` is the single entry point every launcher calls.

It always resumes: the newest intact sealed phase of `run_dir` is loaded and training continues
with the next phase. Per phase (Algorithm 1 of the mnemonics paper): grow the model, train it on
D_i ∪ E_{0:i-1} (model level), update the exemplar memory (exemplar level), fine-tune on the
balanced exemplars, evaluate on all seen classes, seal the phase, rewrite metrics.json.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import torch

from core import faults
from core.errors import UserError
from core.protocol import make_plan
from data_pipeline.loading.augment import FLIP
from data_pipeline.loading.loaders import resolve_loader, train_batches
from data_pipeline.loading.phase_images import ClassCache, PhaseImages
from data_pipeline.shards.manifest import load_manifest
from exemplars.memory import ExemplarMemory
from exemplars.update import update_memory
from trainer.config import Config, dump_config
from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.engine.epoch_loop import run_stage
from trainer.methods.models import weight_transfer
from trainer.methods.schedule import scaled_milestones, step_lr
from trainer.methods.strategies import registry
from trainer.methods.strategies.base import PhaseContext, StageData, StageSpec
from trainer.run import base_from as base_model
from trainer.run import in_phase_checkpoint as stage_checkpoint
from trainer.run import sealed_phases as checkpoint
from trainer.run.evaluate import evaluate
from trainer.run.events import EventLog
from trainer.run.metrics import MetricsLog
from trainer.run.run_profile import write_profile

log = logging.getLogger("mnemo")


def setup_logging(rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    root = logging.getLogger()
    if not any(getattr(h, "_mnemo", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s" if rank == 0 else
                                         f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
        h._mnemo = True
        root.addHandler(h)
    root.setLevel(level)


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _default_stage_spec(stage: str, cfg: Config, phase: int) -> StageSpec:
    t = cfg.train
    if stage == "train":
        epochs = t.base_epochs if (phase == 0 and t.base_epochs) else t.epochs
        ms = scaled_milestones(t.lr_milestones, t.epochs, epochs)
        lr = t.incremental_lr if (phase > 0 and t.incremental_lr is not None) else t.lr
        return StageSpec(epochs, lr, lambda e: step_lr(lr, e, ms, t.lr_gamma, t.warmup_epochs))
    if stage == "balanced_finetune":
        return StageSpec(t.finetune_epochs, t.finetune_lr, lambda e: t.finetune_lr)
    raise UserError(f"strategy '{cfg.strategy.name}' asks for stage '{stage}' without a stage_spec")


def _default_stage_data(stage: str, ctx: PhaseContext, strategy, images, labels, memory) -> StageData:
    if stage == "balanced_finetune":
        ex_x, ex_y = memory.tensors(ctx.seen_labels)
        return StageData(None, None, ex_x, ex_y)
    ex_x, ex_y = memory.tensors(ctx.old_labels) if strategy.uses_exemplars else (None, None)
    return StageData(images, labels, ex_x, ex_y)


def run(cfg: Config, run_dir: str | Path, stop_after_phase: int | None = None) -> dict:
    """Train (resuming) up to the last phase, or only up to `stop_after_phase` (one job per phase)."""
    run_dir = Path(run_dir)
    dist_info = distributed.init()
    setup_logging(dist_info.rank)
    device = dist_info.device
    manifest = load_manifest(cfg.data.shards)
    p = cfg.protocol
    plan = make_plan(manifest.num_classes, p.base_classes, p.phases, p.class_order_seed, p.num_classes)
    strategy = registry.get(cfg.strategy.name)(cfg)
    # data.loader (issue 5): dali | torch | auto; data_pipeline/loaders.py picks and builds the loader
    log.info("data.loader=%s: training stages use the %s loader", cfg.data.loader,
             resolve_loader(cfg.data.loader, device))

    cfg_dict = cfg.to_dict()
    # train.base_from: reuse another run's phase 0 (checked only while this run's phase 0 is not sealed,
    # so a finished phase 0 resumes even if the base run is gone)
    base = base_model.check(cfg_dict, Config().to_dict()) if checkpoint.phase_problem(run_dir, 0) else None
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.guard_config(run_dir, cfg_dict, Config().to_dict())
        dump_config(cfg, run_dir / "config.yaml", extra={"git_sha": git_sha(), "world_size": dist_info.world})
    distributed.barrier()
    checkpoint.guard_config(run_dir, cfg_dict, Config().to_dict())        # every rank refuses, not only rank 0

    torch.manual_seed(cfg.seed)
    model = strategy.build_model(cfg).to(device)
    memory = ExemplarMemory()
    metrics = MetricsLog(plan.num_phases)
    events = EventLog(run_dir / "events.jsonl" if dist_info.is_main else None)
    start = 0
    sealed = checkpoint.latest_sealed(run_dir)
    if sealed is not None:
        model_sd, memory_sd, state = checkpoint.load_phase(run_dir, sealed)
        for n in plan.phase_sizes[: sealed + 1]:          # per phase, as trained (BiC/LUCIR keep per-phase parts)
            model.head.grow(n)
        model.load_state_dict(model_sd)
        memory.load_state_dict(memory_sd)
        strategy.load_state_dict(state["strategy"])
        metrics.load_state_dict(state["metrics"])
        start = sealed + 1
        log.info("resuming %s after sealed phase %d", run_dir, sealed)
    # The engine trains the model channels_last; keep that layout from the start, so a resumed run's
    # teacher copy has the same layout (and bit-identical outputs) as an uninterrupted run's.
    model.to(memory_format=torch.channels_last)
    if start >= plan.num_phases:
        log.info("run %s is already complete", run_dir)
    events.write(event="start", phase=start, world=dist_info.world, device=str(device))

    caches = {"train": ClassCache(), "test": ClassCache()}       # decoded classes, kept while they fit
    read = lambda split, labels: PhaseImages(manifest, split, plan.class_ids(labels), cfg.data.preset,  # noqa: E731
                                             cfg.data.image_size, cfg.data.workers, cfg.data.cache_max_gb,
                                             caches[split])
    last = plan.num_phases if stop_after_phase is None else min(plan.num_phases, stop_after_phase + 1)
    for phase in range(start, last):
        caches["train"].images.clear()                # a phase's train classes are never read again
        model = _run_phase(phase, cfg, run_dir, plan, manifest, strategy, model, memory, metrics, events,
                           dist_info, read, base)
    if dist_info.is_main:
        metrics.write(run_dir / "metrics.json")
        log.info("results for %s\n%s", run_dir, metrics.table())
    events.write(event="end")
    return metrics.summary()


def _run_phase(phase, cfg, run_dir, plan, manifest, strategy, model, memory, metrics, events, dist_info, read,
               base=None):
    """One phase of Algorithm 1, resuming from RUN/ckpt/ when it holds a checkpoint of this phase."""
    device = dist_info.device
    t_phase = time.perf_counter()
    ctx = PhaseContext(phase=phase, plan=plan, model=model, cfg=cfg, device=device, memory=memory)
    strategy.before_phase(ctx)
    model.to(device)
    if cfg.train.weight_transfer and phase > 0:      # scale/shift over frozen Θ_{i-1} convs, folded at phase end
        weight_transfer.apply(model.backbone)
    log.info("phase %d/%d: %d new classes, %d seen, strategy %s, exemplars %s", phase, plan.num_phases - 1,
             len(ctx.new_labels), len(ctx.seen_labels), strategy.name,
             cfg.exemplars.selection if strategy.uses_exemplars else "none")
    real = read("train", strategy.train_labels(ctx))     # decoded lazily, class by class (phase_images.py)
    real_labels = plan.labels_of(real.class_ids)
    timings: dict[str, float] = {}
    exemplar_info = None
    resume = stage_checkpoint.load(run_dir, phase)
    if resume is not None:
        memory.load_state_dict(resume.extra["memory"])
        strategy.load_state_dict(resume.extra["strategy"])
        timings.update(resume.extra["timings"])
        exemplar_info = resume.extra["exemplar_info"]
        if resume.epoch is None:
            model.load_state_dict(resume.extra["model"])
        log.info("phase %d: resuming from %s (stage %s, %s)", phase, run_dir / "ckpt", resume.stage,
                 "complete" if resume.epoch is None else f"after epoch {resume.epoch + 1}")

    def extra(with_model: bool) -> dict:
        out = {"memory": memory.state_dict(), "strategy": strategy.state_dict(), "timings": dict(timings),
               "exemplar_info": exemplar_info}
        if with_model:
            out["model"] = model.state_dict()
        return out

    for k, stage in enumerate(strategy.stages(ctx)):
        if resume is not None and (k < resume.stage_index or (k == resume.stage_index and resume.epoch is None)):
            continue                                   # finished before the crash
        if stage == "exemplars":
            def group_images(labels, real=real):        # one class group's D_i, decoded on demand
                ids = plan.class_ids(labels)
                return real.classes(ids), real_labels[real.span(ids)]

            counts = {l: real.counts[plan.order[l]] for l in ctx.new_labels}
            t0 = time.perf_counter()
            exemplar_info = update_memory(model, memory, ctx.new_labels, ctx.old_labels, group_images, counts,
                                          cfg, phase, dist_info, events)
            timings["exemplars_s"] = time.perf_counter() - t0
            stage_checkpoint.save_stage_done(run_dir, dist_info, phase, k, stage, extra(True))
            continue
        if stage == "train" and phase == 0 and base is not None:
            base_model.load_into(model, base)         # phase-0 training is shared with the base run
            log.info("phase 0: reusing the trained model of %s (train.base_from)", base)
            events.write(event="base_from", run=str(base))
            stage_checkpoint.save_stage_done(run_dir, dist_info, phase, k, stage, extra(True))
            continue
        data = _default_stage_data(stage, ctx, strategy, real, real_labels, memory)
        data = strategy.stage_data(stage, ctx, data)
        spec = strategy.stage_spec(stage, ctx) or _default_stage_spec(stage, cfg, phase)
        if spec.epochs <= 0 or len(data) < dist_info.world:
            continue
        # data.loader (issue 5): DALI from the shards or in-memory torch batches, one epoch plan for both
        batches = train_batches(resolve_loader(cfg.data.loader, dist_info.device), cfg, data, real, manifest,
                                plan, dist_info, cfg.seed * 100 + phase)
        strategy.before_stage(stage, ctx)
        engine = Engine(model, dist_info, cfg.train.batch_size, spec.lr, cfg.train.momentum,
                        cfg.train.weight_decay if spec.weight_decay is None else spec.weight_decay,
                        cfg.engine.zero_stage, cfg.engine.precision,
                        cfg.engine.micro_batch_size)
        start_epoch = 0
        if resume is not None and k == resume.stage_index and resume.epoch is not None:
            engine.load_checkpoint(stage_checkpoint.engine_dir(run_dir), resume.engine_tag)
            start_epoch = resume.epoch + 1
        every = cfg.train.checkpoint_every

        def on_epoch_end(epoch, k=k, stage=stage, engine=engine, epochs=spec.epochs):
            if every and (epoch + 1) % every == 0 and epoch + 1 < epochs:
                stage_checkpoint.save_in_stage(run_dir, dist_info, engine, phase, k, stage, epoch, extra(False))
            faults.maybe_fail(stage, phase, epoch)

        figures = run_stage(engine, strategy, batches, spec.epochs, spec.lr_at, stage, phase, events,
                            dist_info.world, cfg.train.log_every, start_epoch, on_epoch_end)
        timings[f"{stage}_s"] = timings.get(f"{stage}_s", 0.0) + figures["seconds"]
        timings[f"{stage}_img_s"] = figures["img_s"]
        model = engine.module
        ctx.model = model
        del engine
        strategy.after_stage(stage, ctx)
        stage_checkpoint.save_stage_done(run_dir, dist_info, phase, k, stage, extra(True))
    weight_transfer.fold(model.backbone)             # plain weights again (no-op without weight transfer)
    strategy.after_phase(ctx)

    t_eval = time.perf_counter()
    test = read("test", ctx.seen_labels)              # streamed in class chunks once over data.cache_max_gb
    result = evaluate(model, strategy, test, plan.labels_of(test.class_ids), plan, phase,
                      memory if strategy.uses_exemplars else None, device, cfg.eval.batch_size, cfg.eval.nme,
                      FLIP[cfg.data.preset], dist_info)
    timings["eval_s"] = time.perf_counter() - t_eval
    digests = distributed.all_gather_object(checkpoint.weights_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"phase {phase}: ranks hold different weights ({digests}); data-parallel sync is broken")
    record = {"phase": phase, "classes_seen": len(ctx.seen_labels),
              **{k: v for k, v in result.items() if not k.startswith("acc_row")},
              "exemplars_per_class": exemplar_info["per_class"] if exemplar_info else 0,
              "exemplars_total": len(memory),
              "wall_s": round(time.perf_counter() - t_phase, 2),
              "timings": {k: round(v, 3) for k, v in timings.items()}}
    metrics.add(record, result["acc_row"], result.get("acc_row_nme"))
    log.info("phase %d: CNN acc %.2f%%%s (base %.2f%%, old %s, new %.2f%%) in %.0fs", phase, result["accuracy"],
             f", NME acc {result['accuracy_nme']:.2f}%" if result.get("accuracy_nme") is not None else "",
             result["accuracy_base"], "-" if result["accuracy_old"] is None else f"{result['accuracy_old']:.2f}%",
             result["accuracy_new"], record["wall_s"])
    events.write(event="phase", **{k: v for k, v in record.items() if k != "timings"}, **record["timings"],
                 weights_digest=digests[0], ranks=len(digests))
    if dist_info.is_main:
        checkpoint.seal_phase(run_dir, phase, model.state_dict(), memory.state_dict(),
                              {"num_classes": model.num_classes, "strategy": strategy.state_dict(),
                               "metrics": metrics.state_dict(), "plan": list(plan.order)})
        metrics.write(run_dir / "metrics.json")
        write_profile(run_dir)                  # RUN/profile.json: per-phase time split and stage throughput
    stage_checkpoint.clear(run_dir, dist_info)
    return model
