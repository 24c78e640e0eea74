"""One phase of Algorithm 1: grow the model, run the strategy's stages (model-level training, the
exemplar level, the balanced fine-tune, a method's own stages), evaluate on all seen classes, seal.

A phase resumes from RUN/ckpt/ when that holds a checkpoint of this phase: stages finished before a
crash are skipped, an interrupted training stage continues after its last checkpointed epoch.
"""
from __future__ import annotations

import copy
import logging
import time

import torch

from core import faults, seeds
from data_pipeline.loading.augment import FLIP
from data_pipeline.loading.batch_plan import BatchPlan
from data_pipeline.loading.loaders import eval_batches, resolve_loader, train_batches
from exemplars.memory import STORE_DTYPE
from exemplars.selections.base import SelectionContext
from exemplars.update import Collectives, PhaseClasses, snapshot_epoch, update_memory
from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.engine.epoch_loop import StageRun, run_epochs
from trainer.methods.models import weight_transfer
from trainer.methods.schedule import scaled_milestones, step_lr
from trainer.methods.strategies.base import Batch, PhaseContext
from trainer.methods.strategies.stages import Stage, StageData, StageSpec, Train
from trainer.run import base_from
from trainer.run.evaluate import EvalOptions, evaluate
from trainer.run.session import Session
from trainer.run.storage import sealed_phases
from trainer.run.storage.run_dir import Value

log = logging.getLogger("mnemo")


def default_spec(stage: Stage, train, phase: int) -> StageSpec | None:
    """The run's schedule of "train" (train.*) and "balanced_finetune" (train.finetune_*)."""
    if stage.name == "train":
        epochs = train.base_epochs if (phase == 0 and train.base_epochs) else train.epochs
        ms = scaled_milestones(train.lr_milestones, train.epochs, epochs)
        lr = train.incremental_lr if (phase > 0 and train.incremental_lr is not None) else train.lr
        return StageSpec(epochs, lr, lambda e: step_lr(lr, e, ms, train.lr_gamma, train.warmup_epochs))
    if stage.name == "balanced_finetune":
        return StageSpec(train.finetune_epochs, train.finetune_lr, lambda e: train.finetune_lr)
    return None


def exemplar_grid(memory, labels: list[int], classes: int = 4, per_class: int = 8) -> torch.Tensor:
    """One image (C, H, W) of the first exemplars of a few classes, a row per class (TensorBoard)."""
    from torchvision.utils import make_grid

    rows = [memory.get(label)[:per_class].float() for label in labels[:classes] if label in memory.bank]
    rows = [torch.cat([r, r.new_zeros((per_class - len(r), *r.shape[1:]))]) for r in rows if len(r)]
    if not rows:
        return torch.zeros(3, 1, 1)
    return make_grid(torch.cat(rows), nrow=per_class, padding=1, pad_value=1.0)


class Phase:
    def __init__(self, session: Session, index: int):
        self.s, self.index = session, index
        self.timings, self.exemplar_info = Value({}), Value(None)
        self.snapshot = Value(None)         # the model's state early in the train stage, when the selection asks
        self.snapshot_at = snapshot_epoch(session.cfg.exemplars) if session.strategy.uses_exemplars else 0
        self.ctx = PhaseContext(index, session.plan, session.model, session.dist.device, session.memory)

    def point_states(self, with_model: bool) -> dict:
        """What an in-phase checkpoint holds, by key."""
        s = self.s
        out = {"memory": s.memory, "strategy": s.strategy, "timings": self.timings,
               "exemplar_info": self.exemplar_info, "events": s.events, "snapshot": self.snapshot}
        return {**out, "model": s.model} if with_model else out

    def run(self) -> torch.nn.Module:
        t_phase = time.perf_counter()
        self.begin()
        point = self.s.run_dir.stage_point(self.index)
        if point is not None:
            self.s.run_dir.restore_point(point, self.point_states(with_model=True))
            log.info("phase %d: resuming from %s (stage %s, %s)", self.index, self.s.run_dir.path / "ckpt",
                     point.stage, "complete" if point.epoch is None else f"after epoch {point.epoch + 1}")
        for k, stage in enumerate(self.s.strategy.stages(self.ctx)):
            if point is not None and (k < point.stage_index or (k == point.stage_index and point.epoch is None)):
                continue                                   # finished before the crash
            resume_epoch = point.epoch if point is not None and k == point.stage_index else None
            self.run_stage(k, stage, resume_epoch, point.engine_tag if resume_epoch is not None else None)
        weight_transfer.fold(self.s.model.backbone)   # plain weights again (no-op without weight transfer)
        self.s.strategy.after_phase(self.ctx)
        self.finish(t_phase)
        return self.s.model

    def begin(self) -> None:
        s, ctx = self.s, self.ctx
        s.strategy.before_phase(ctx)
        s.model.to(s.dist.device)
        if s.cfg.train.weight_transfer and self.index > 0:   # scale/shift over frozen Θ_{i-1} convs, folded at phase end
            weight_transfer.apply(s.model.backbone)
        log.info("phase %d/%d: %d new classes, %d seen, strategy %s, exemplars %s", self.index,
                 s.plan.num_phases - 1, len(ctx.new_labels), len(ctx.seen_labels), s.strategy.name,
                 s.cfg.exemplars.selection if s.strategy.uses_exemplars else "none")
        self.real = s.read("train", s.strategy.train_labels(ctx))     # decoded lazily, class by class
        self.real_labels = s.plan.labels_of(self.real.class_ids)

    def run_stage(self, k: int, stage: Stage, resume_epoch: int | None, engine_tag: str | None) -> None:
        s = self.s
        if not stage.trains:
            self.update_exemplars()
        elif self.index == 0 and s.base is not None and isinstance(stage, Train):
            base_from.load_into(s.model, s.base)             # phase-0 training is shared with the base run
            log.info("phase 0: reusing the trained model of %s (train.base_from)", s.base)
            s.events.write(event="base_from", run=str(s.base))
        elif not self.train(k, stage, resume_epoch, engine_tag):
            return                                           # nothing to train: no checkpoint either
        s.run_dir.save_stage_done(self.index, k, stage.name, self.point_states(with_model=True))

    def update_exemplars(self) -> None:
        s, ctx, real = self.s, self.ctx, self.real

        def group_images(labels):                      # one class group's D_i, decoded as a selection takes it
            ids = s.plan.class_ids(labels)
            return real.lazy(ids), self.real_labels[real.span(ids)]

        counts = {label: real.counts[s.plan.order[label]] for label in ctx.new_labels}
        sel = SelectionContext(s.cfg.seed, self.index, s.dist.device, s.cfg.eval.batch_size, s.cfg.data.preset,
                               previous=s.strategy.teacher, snapshot=self.snapshot_model(),
                               image_size=s.cfg.data.image_size)
        t0 = time.perf_counter()
        info = update_memory(s.model, s.memory, PhaseClasses(ctx.new_labels, ctx.old_labels, group_images, counts),
                             s.cfg.exemplars, sel, s.dist,
                             Collectives(distributed.exchange_objects, distributed.exchange_tensors))
        s.events.write(event="exemplars", phase=self.index, **info)
        s.events.image("exemplars/new_classes", exemplar_grid(s.memory, ctx.new_labels))
        self.exemplar_info.value = info
        self.timings.value["exemplars_s"] = time.perf_counter() - t0
        self.snapshot.value = None                      # used: later checkpoints of the phase need not carry it

    def keep_snapshot(self, stage: Stage, epoch: int, epochs: int, module: torch.nn.Module) -> None:
        """Keep the model's state (on the CPU) after epoch `snapshot_at` of the train stage (its last epoch
        when the stage is shorter), for a selection that starts from it."""
        if self.snapshot_at and isinstance(stage, Train) and epoch + 1 == min(self.snapshot_at, epochs):
            self.snapshot.value = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            log.info("phase %d: kept the model after epoch %d of %d for the exemplar level", self.index, epoch + 1,
                     epochs)

    def snapshot_model(self) -> torch.nn.Module | None:
        """The kept snapshot as a copy of the phase's model (eval mode; its parameters keep the model's
        requires_grad flags, which say what the unrolled Θ' trains), or None."""
        if not self.snapshot_at:
            return None
        if self.snapshot.value is None:
            log.warning("phase %d: no snapshot of this phase's training to start the exemplar level from (%s); it "
                        "starts from the trained model", self.index, "phase 0 is reused by train.base_from"
                        if self.index == 0 and self.s.base is not None else "nothing was trained")
            return None
        snap = copy.deepcopy(self.s.model)
        snap.load_state_dict(self.snapshot.value)
        return snap.eval()

    def stage_data(self, stage: Stage) -> StageData:
        """The run's data for `stage` (D_i and the old exemplars, or every seen class's exemplars), as the
        stage narrows it."""
        s, ctx = self.s, self.ctx
        if not stage.rehearses:
            data = StageData(None, None, *s.memory.tensors(ctx.seen_labels, STORE_DTYPE))
        else:
            ex = s.memory.tensors(ctx.old_labels, STORE_DTYPE) if s.strategy.uses_exemplars else (None, None)
            data = StageData(self.real, self.real_labels, *ex)
        return stage.data(ctx, data)

    def train(self, k: int, stage: Stage, resume_epoch: int | None, engine_tag: str | None) -> bool:
        """Train a model-level stage through a fresh engine; False when there is nothing to train."""
        s, ctx, t = self.s, self.ctx, self.s.cfg.train
        data = self.stage_data(stage)
        stage.prepare(ctx, data)
        spec = stage.spec(ctx) or default_spec(stage, t, self.index)
        if spec is None:
            raise RuntimeError(f"stage '{stage.name}' of strategy '{s.strategy.name}' has no spec")
        if spec.epochs <= 0 or len(data) < s.dist.world:
            return False
        plan = BatchPlan(t.batch_size, seeds.seed_of("stage_batches", s.cfg.seed, self.index), s.dist)
        batches = train_batches(resolve_loader(s.cfg.data.loader, s.dist.device), s.cfg.data, data, self.real,
                                s.manifest, plan, s.plan.label_of())
        stage.before(ctx)
        wd = t.weight_decay if spec.weight_decay is None else spec.weight_decay
        with Engine(s.model, s.dist, t.batch_size, spec.lr, t.momentum, wd, s.cfg.engine) as engine:
            if resume_epoch is not None:
                engine.load_checkpoint(s.run_dir.engine_dir(), engine_tag)

            def on_epoch_end(epoch, engine=engine):
                self.keep_snapshot(stage, epoch, spec.epochs, engine.module)
                every = t.checkpoint_every
                if every and (epoch + 1) % every == 0 and epoch + 1 < spec.epochs:
                    s.run_dir.save_in_stage(engine, self.index, k, stage.name, epoch, self.point_states(False))
                faults.maybe_fail(stage.name, self.index, epoch)

            start = 0 if resume_epoch is None else resume_epoch + 1
            run = StageRun(stage.name, self.index, spec.epochs, spec.lr_at, start, t.log_every, on_epoch_end)
            try:
                figures = run_epochs(engine, lambda model, x, y: stage.loss(s.strategy, model, Batch(x, y)), batches,
                                     run, s.events)
            finally:
                batches.close()
        timings = self.timings.value
        timings[f"{stage.name}_s"] = timings.get(f"{stage.name}_s", 0.0) + figures["seconds"]
        timings[f"{stage.name}_img_s"] = figures["img_s"]
        s.model = ctx.model = engine.module
        stage.after(ctx)
        return True

    def finish(self, t_phase: float) -> None:
        """Evaluate on every seen class, check that ranks agree, record, seal, clear RUN/ckpt/."""
        s, ctx = self.s, self.ctx
        t_eval = time.perf_counter()
        test = s.read("test", ctx.seen_labels)              # streamed in class chunks over data.cache_max_gb
        options = EvalOptions(s.cfg.eval.batch_size, s.cfg.eval.nme, FLIP[s.cfg.data.preset],
                              decoded=eval_batches(resolve_loader(s.cfg.data.loader, s.dist.device), s.cfg.data,
                                                   s.manifest, s.dist.device))
        result = evaluate(s.model, s.strategy, test, s.plan, self.index,
                          s.memory if s.strategy.uses_exemplars else None, options, s.dist)
        self.timings.value["eval_s"] = time.perf_counter() - t_eval
        digests = distributed.all_gather_object(sealed_phases.weights_digest(s.model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"phase {self.index}: ranks hold different weights ({digests}); data-parallel "
                               "sync is broken")
        info = self.exemplar_info.value
        record = {"phase": self.index, "classes_seen": len(ctx.seen_labels),
                  **{k: v for k, v in result.items() if not k.startswith("acc_row")},
                  "exemplars_per_class": info["per_class"] if info else 0, "exemplars_total": len(s.memory),
                  "wall_s": round(time.perf_counter() - t_phase, 2),
                  "timings": {k: round(v, 3) for k, v in self.timings.value.items()}}
        s.metrics.add(record, result["acc_row"], result.get("acc_row_nme"))
        self.log_result(result, record["wall_s"])
        so_far = s.metrics.summary()
        s.events.write(event="phase", **{k: v for k, v in record.items() if k != "timings"}, **record["timings"],
                       average_accuracy_so_far=so_far["average_accuracy"], forgetting_so_far=so_far["forgetting"],
                       weights_digest=digests[0], ranks=len(digests))
        s.run_dir.seal(self.index, s.states(), {"num_classes": s.model.num_classes, "plan": list(s.plan.order)})
        s.run_dir.write_results(s.metrics)
        s.run_dir.clear_points()

    def log_result(self, result: dict, wall_s: float) -> None:
        nme = result.get("accuracy_nme")
        old = result["accuracy_old"]
        log.info("phase %d: CNN acc %.2f%%%s (base %.2f%%, old %s, new %.2f%%) in %.0fs", self.index,
                 result["accuracy"], f", NME acc {nme:.2f}%" if nme is not None else "", result["accuracy_base"],
                 "-" if old is None else f"{old:.2f}%", result["accuracy_new"], wall_s)
