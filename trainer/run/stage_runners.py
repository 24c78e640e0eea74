"""How a stage of a phase runs, one runner per kind of stage (`Stage.kind`), so the phase never asks what a stage is.

* "model": a model-level stage trains through a fresh engine on the data the stage narrows from the phase's
  (D_i and the old exemplars, or every seen class's exemplars), with its own schedule or the run's default;
  in-phase checkpoints at epoch ends every `train.checkpoint_minutes` (trainer/run/checkpoint_clock.py); phase 0's main training is taken from another
  run where `train.base_from` says so; the model is kept after the epoch a selection's snapshot asks for.
* "exemplars": the exemplar level (Algorithm 1, steps 10-17) through exemplars.update.update_memory.

`RUNNERS[stage.kind].run(phase, k, stage, resume)` returns whether the stage did anything (the phase then
saves an in-phase checkpoint saying it is complete). A new kind of stage is a class here and a name.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING

import torch

from core import faults, seeds, stop
from data_pipeline.loading.augment import AsStored
from data_pipeline.loading.batch_plan import BatchPlan
from data_pipeline.loading.loaders import resolve_loader, train_batches
from data_pipeline.shards.wds_index import mean_image_bytes
from exemplars.selections.base import SelectionContext
from exemplars.update import Collectives, PhaseClasses, update_memory
from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.engine.epoch_loop import StageRun, run_epochs
from trainer.methods.schedule import scaled_milestones, step_lr
from trainer.methods.strategies.base import Batch
from trainer.methods.strategies.stages import Stage, StageData, StageSpec
from trainer.run import base_from
from trainer.run.checkpoint_clock import CheckpointClock
from trainer.run.storage.in_phase_checkpoint import Place

if TYPE_CHECKING:
    from trainer.run.phase import Phase, Resume

log = logging.getLogger("mnemo")


def default_spec(stage: Stage, train, phase: int, method_lr: float | None = None) -> StageSpec | None:
    """The run's schedule of "train" (train.*) and "balanced_finetune" (train.finetune_*). The incremental phases'
    starting rate: train.incremental_lr where set, else the method's own (`method_lr`, Strategy.incremental_lr),
    else train.lr."""
    if stage.name == "train":
        epochs = train.base_epochs if (phase == 0 and train.base_epochs) else train.epochs
        ms = scaled_milestones(train.lr_milestones, train.epochs, epochs)
        later = train.incremental_lr if train.incremental_lr is not None else method_lr
        lr = later if (phase > 0 and later is not None) else train.lr
        return StageSpec(epochs, lr, lambda e: step_lr(lr, e, ms, train.lr_gamma, train.warmup_epochs))
    if stage.name == "balanced_finetune":
        return StageSpec(train.finetune_epochs, train.finetune_lr, lambda e: train.finetune_lr)
    return None


class ModelStage:
    """Trains a model-level stage through a fresh engine."""

    def run(self, phase: Phase, k: int, stage: Stage, resume: Resume | None) -> bool:
        s = phase.s
        if phase.index == 0 and s.base is not None and stage.main:
            base_from.load_into(s.model, s.base)             # phase-0 training is shared with the base run
            self.data(phase, stage)              # the stage's own split of D_0 is drawn as in training (BiC's)
            log.info("phase 0: reusing the trained model of %s (train.base_from)", s.base)
            s.events.write(event="base_from", run=str(s.base))
            return True
        return self.train(phase, k, stage, resume)

    @staticmethod
    def data(phase: Phase, stage: Stage) -> StageData:
        """The run's data for `stage` (D_i and the old exemplars, or every seen class's exemplars), as the
        stage narrows it."""
        s, ctx = phase.s, phase.ctx
        if not stage.rehearses:
            data = StageData(None, None, *s.memory.packed(ctx.seen_labels), ex_unpack=s.memory.unpack)
        else:
            ex = s.memory.packed(ctx.old_labels) if s.strategy.uses_exemplars else (None, None)
            data = StageData(phase.real, phase.real_labels, *ex, ex_unpack=s.memory.unpack)
        return stage.data(ctx, data)

    @staticmethod
    def batches(phase: Phase, data: StageData):
        """The stage's loader over `data` (train_batches), its epochs planned from the run's seed and the phase."""
        s, t = phase.s, phase.s.cfg.train
        plan = BatchPlan(t.batch_size, seeds.seed_of("stage_batches", s.cfg.seed, phase.index), s.dist,
                         last_batch=t.last_batch)
        # from phase 1 on: phase 0 has no old class to hide a stored form's cue from, and showing its model its
        # images as stored only costs it its base classes (docs/results-record.md); so train.base_from stays valid
        share = s.cfg.exemplars.real_as_stored if phase.index > 0 else 0.0
        return train_batches(resolve_loader(s.cfg.data.loader, s.dist.device), s.cfg.data, data, phase.real,
                             s.manifest, plan, s.plan.label_of(),
                             AsStored(share, s.memory.codec.round_trip) if share > 0 else None)

    def train(self, phase: Phase, k: int, stage: Stage, resume: Resume | None) -> bool:
        """False when there is nothing to train (then no checkpoint either)."""
        s, ctx, t = phase.s, phase.ctx, phase.s.cfg.train
        data = self.data(phase, stage)
        stage.prepare(ctx, data)
        spec = stage.spec(ctx) or default_spec(stage, t, phase.index, s.strategy.incremental_lr())
        if spec is None:
            raise RuntimeError(f"stage '{stage.name}' of strategy '{s.strategy.name}' has no spec")
        if spec.epochs <= 0 or len(data) < s.dist.world:
            return False
        batches = self.batches(phase, data)
        stage.before(ctx)
        wd = t.weight_decay if spec.weight_decay is None else spec.weight_decay
        with Engine(s.model, s.dist, t.batch_size, spec.lr, t.momentum, wd, s.cfg.engine, t.grad_clip) as engine:
            if resume is not None:
                engine.load_checkpoint(s.run_dir.engine_dir(), resume.engine_tag)

            clock = CheckpointClock(t.checkpoint_minutes)

            def on_epoch_end(epoch, engine=engine) -> dict:
                if stage.main:
                    phase.keep_snapshot(epoch, spec.epochs, engine.module)
                done = {"checkpoint": epoch + 1 < spec.epochs and clock.due()}
                if done["checkpoint"]:
                    t0 = time.perf_counter()
                    s.run_dir.save_in_stage(engine, Place(phase.index, k, stage.name, epoch), phase.point_states(False))
                    done["save_s"] = round(time.perf_counter() - t0, 4)
                    clock.saved()
                faults.maybe_fail(stage.name, phase.index, epoch)
                return done

            def on_stop(epoch: int, steps: int, engine=engine) -> None:
                """A stop at a step boundary: checkpoint that step (an epoch end checkpoints as the epoch's)."""
                whole = steps >= batches.steps_per_epoch
                # every rank stops here; the request may have reached only some of them: all log all reasons
                stop.request("; ".join(sorted({w for w in distributed.all_gather_object(stop.why()) if w})))
                place = Place(phase.index, k, stage.name, epoch if whole else epoch - 1, None if whole else steps)
                s.run_dir.save_in_stage(engine, place, phase.point_states(False))
                s.events.write(event="stop", phase=phase.index, stage=stage.name, epoch=epoch, step=steps,
                               why=stop.why())
                log.warning("phase %d %s: stopping after step %d of epoch %d (%s); saved, to resume there",
                            phase.index, stage.name, steps, epoch + 1, stop.why())

            start = 0 if resume is None else resume.epoch + 1
            run = StageRun(stage.name, phase.index, spec.epochs, spec.lr_at, start, t.log_every, on_epoch_end,
                           start_step=0 if resume is None else resume.step, on_stop=on_stop)
            try:
                figures = run_epochs(engine, lambda model, x, y: stage.loss(s.strategy, model, Batch(x, y)), batches,
                                     run, s.events)
            finally:
                batches.close()
        timings = phase.timings.value
        timings[f"{stage.name}_s"] = timings.get(f"{stage.name}_s", 0.0) + figures["seconds"]
        timings[f"{stage.name}_img_s"] = figures["img_s"]
        s.model = ctx.model = engine.module
        stage.after(ctx)
        return True


class ExemplarStage:
    """The exemplar level: select (or optimise) new exemplars, adjust old ones, trim to the budget."""

    def run(self, phase: Phase, k: int, stage: Stage, resume: Resume | None) -> bool:
        s, ctx, real = phase.s, phase.ctx, phase.real

        def group_images(labels):                      # one class group's D_i, decoded as a selection takes it
            ids = s.plan.class_ids(labels)
            return real.lazy(ids), phase.real_labels[real.span(ids)]

        counts = {label: real.counts[s.plan.order[label]] for label in ctx.new_labels}
        # what a budget image stands for, where the memory's codec counts bytes: the class's originals in the shards
        image_bytes = None
        if s.memory.codec.counts_bytes:
            image_bytes = {label: mean_image_bytes(s.manifest, "train", s.plan.order[label])
                           for label in ctx.seen_labels}
        sel = SelectionContext(s.cfg.seed, phase.index, s.dist.device, s.cfg.eval.batch_size, s.cfg.data.preset,
                               previous=s.strategy.teacher, snapshot=self.snapshot_model(phase),
                               image_size=s.cfg.data.image_size)
        t0 = time.perf_counter()
        try:
            classes = PhaseClasses(ctx.new_labels, ctx.old_labels, group_images, counts, image_bytes)
            info = update_memory(s.model, s.memory, classes,
                                 s.cfg.exemplars, sel, s.dist,
                                 Collectives(distributed.exchange_objects, distributed.exchange_tensors,
                                             lambda tag: distributed.wait_for_all(tag, stop.requested)),
                                 s.run_dir.group_results(phase.index))
        except stop.StopRequested as e:          # the finished class groups are kept: a resume takes the next
            s.events.write(event="stop", phase=phase.index, stage=stage.name, why=stop.why())
            log.warning("%s; the finished class groups are kept", e)
            raise
        s.events.write(event="exemplars", phase=phase.index, **info)
        s.events.image("exemplars/new_classes", exemplar_grid(s.memory, ctx.new_labels))
        phase.exemplar_info.value = info
        phase.timings.value["exemplars_s"] = time.perf_counter() - t0
        phase.snapshot.value = None                     # used: later checkpoints of the phase need not carry it
        return True

    @staticmethod
    def snapshot_model(phase: Phase) -> torch.nn.Module | None:
        """The kept snapshot as a copy of the phase's model (eval mode; its parameters keep the model's
        requires_grad flags, which say what the unrolled Θ' trains), or None."""
        if not phase.snapshot_at:
            return None
        if phase.snapshot.value is None:
            log.warning("phase %d: no snapshot of this phase's training to start the exemplar level from (%s); it "
                        "starts from the trained model", phase.index, "phase 0 is reused by train.base_from"
                        if phase.index == 0 and phase.s.base is not None else "nothing was trained")
            return None
        snap = copy.deepcopy(phase.s.model)
        snap.load_state_dict(phase.snapshot.value)
        return snap.eval()


def exemplar_grid(memory, labels: list[int], classes: int = 4, per_class: int = 8) -> torch.Tensor:
    """One image (C, H, W) of the first exemplars of a few classes, a row per class (TensorBoard)."""
    from torchvision.utils import make_grid

    rows = [memory.get(label)[:per_class].float() for label in labels[:classes] if label in memory.bank]
    rows = [torch.cat([r, r.new_zeros((per_class - len(r), *r.shape[1:]))]) for r in rows if len(r)]
    if not rows:
        return torch.zeros(3, 1, 1)
    return make_grid(torch.cat(rows), nrow=per_class, padding=1, pad_value=1.0)


RUNNERS = {"model": ModelStage(), "exemplars": ExemplarStage()}
