"""One phase of Algorithm 1: grow the model, run the strategy's stages (model-level training, the
exemplar level, the balanced fine-tune, a method's own stages; each through the runner of its kind,
stage_runners.py), evaluate on all seen classes, seal.

A phase resumes from RUN/ckpt/ when that holds a checkpoint of this phase: stages finished before a
crash are skipped, an interrupted training stage continues after its last checkpointed epoch.
"""
from __future__ import annotations

import logging
import time
from typing import NamedTuple

import torch

from data_pipeline.loading.augment import FLIP
from data_pipeline.loading.loaders import eval_batches, resolve_loader
from exemplars.update import snapshot_epoch
from trainer.engine import distributed
from trainer.methods.models import weight_transfer
from trainer.methods.strategies.base import PhaseContext
from trainer.run.evaluate import EvalOptions, evaluate
from trainer.run.session import Session
from trainer.run.stage_runners import RUNNERS
from trainer.run.storage import sealed_phases
from trainer.run.storage.in_phase_checkpoint import Place
from trainer.run.storage.run_dir import Value

log = logging.getLogger("mnemo")


class Resume(NamedTuple):
    """Where an interrupted model-level stage continues: after `epoch` (and `step` steps of the next one, where
    it stopped at a step boundary), from the engine checkpoint `engine_tag`."""
    epoch: int
    engine_tag: str
    step: int = 0


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
        if point is None:
            self.s.run_dir.clear_groups()
        else:
            self.s.run_dir.restore_point(point, self.point_states(with_model=True))
            log.info("phase %d: resuming from %s (stage %s, %s)", self.index, self.s.run_dir.path / "ckpt",
                     point.stage, "complete" if point.epoch is None else f"after epoch {point.epoch + 1}"
                     + (f" and {point.step} step(s) of the next" if point.step else ""))
        for k, stage in enumerate(self.s.strategy.stages(self.ctx)):
            if point is not None and (k < point.stage_index or (k == point.stage_index and point.epoch is None)):
                continue                                   # finished before the crash
            resume = Resume(point.epoch, point.engine_tag, point.step or 0) \
                if point is not None and k == point.stage_index else None
            if RUNNERS[stage.kind].run(self, k, stage, resume):
                self.s.run_dir.save_stage_done(Place(self.index, k, stage.name), self.point_states(with_model=True))
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

    def keep_snapshot(self, epoch: int, epochs: int, module: torch.nn.Module) -> None:
        """Keep the model's state (on the CPU) after epoch `snapshot_at` of the phase's main training (its last
        epoch when the stage is shorter), for a selection that starts from it."""
        if self.snapshot_at and epoch + 1 == min(self.snapshot_at, epochs):
            self.snapshot.value = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            log.info("phase %d: kept the model after epoch %d of %d for the exemplar level", self.index, epoch + 1,
                     epochs)

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
                  **({k: info[k] for k in ("held_min", "held_mean", "held_max", "bytes", "budget_bytes")}
                     if info and "bytes" in info else {}),
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
