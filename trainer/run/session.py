"""Everything one process holds across the phases of a run, built (and resumed) by `Session.open`.

Opening a run: join the process group, read the manifest and the protocol, build the strategy and its
model, guard and write RUN/config.yaml, then load the newest intact sealed phase (model, exemplar
memory, strategy state, metrics) so that the next phase starts where the last one ended.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from core.protocol import PhasePlan, make_plan
from core.ranks import DistInfo
from data_pipeline.loading.loaders import resolve_loader
from data_pipeline.loading.phase_images import ClassCache, PhaseImages
from data_pipeline.shards.manifest import Manifest, load_manifest
from exemplars.codecs.base import build_codec
from exemplars.memory import ExemplarMemory
from trainer.config import dump_config, stored_defaults
from trainer.config.compare import keys_read
from trainer.engine import distributed
from trainer.methods.strategies.base import REGISTRY, MethodSetup, Strategy
from trainer.run import base_from
from trainer.run.events import EventLog
from trainer.run.metrics import MetricsLog
from trainer.run.storage.run_dir import RunDir
from trainer.run.tensorboard import TensorBoardSink

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
    logging.getLogger("mnemo.progress").setLevel(logging.INFO)    # per-rank progress, on every rank


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_strategy(cfg) -> Strategy:
    """The strategy named by strategy.name, with its own settings and the run-wide values it may read."""
    cls = REGISTRY.get(cfg.strategy.name)
    t = cfg.train
    setup = MethodSetup(seed=cfg.seed, arch=cfg.model.arch, preset=cfg.data.preset, image_size=cfg.data.image_size,
                        kd_lambda=t.kd_lambda, kd_temperature=t.kd_temperature, lr_gamma=t.lr_gamma,
                        feature_batch_size=cfg.eval.batch_size)
    return cls(getattr(cfg.strategy, cls.name, None), setup)


def _event_log(cfg, run_dir: RunDir, dist: DistInfo) -> EventLog:
    if not dist.is_main:
        return EventLog(None)
    sink = TensorBoardSink(run_dir.tb_path) if cfg.logging.tensorboard else None
    events = EventLog(run_dir.events_path, sink)
    events.text("config", "```\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False) + "```")
    return events


@dataclass
class Session:
    cfg: object                    # trainer.config.Config
    run_dir: RunDir
    dist: DistInfo
    manifest: Manifest
    plan: PhasePlan
    strategy: Strategy
    model: torch.nn.Module
    memory: ExemplarMemory
    metrics: MetricsLog
    events: EventLog
    base: Path | None              # train.base_from, while this run's phase 0 is not sealed
    start: int = 0                 # the first phase still to run
    caches: dict | None = None

    @classmethod
    def open(cls, cfg, path: str | Path) -> Session:
        dist = distributed.init()
        setup_logging(dist.rank)
        if distributed.network_line():
            log.info(distributed.network_line())
        manifest = load_manifest(cfg.data.shards)
        p = cfg.protocol
        plan = make_plan(manifest.num_classes, p.base_classes, p.phases, p.class_order_seed, p.num_classes)
        strategy = build_strategy(cfg)
        log.info("data.loader=%s: training stages use the %s loader", cfg.data.loader,
                 resolve_loader(cfg.data.loader, dist.device))
        run_dir, cfg_dict, default = RunDir(path, dist), cfg.to_dict(), stored_defaults()
        # train.base_from is checked only while phase 0 is not sealed: a finished phase 0 resumes even if
        # the base run is gone
        base = base_from.check(cfg_dict, default) if run_dir.phase_problem(0) else None
        run_dir.prepare(cfg_dict, default, keys_read(cfg), lambda path: dump_config(
            cfg, path, extra={"git_sha": git_sha(), "world_size": dist.world}))
        torch.manual_seed(cfg.seed)
        session = cls(cfg, run_dir, dist, manifest, plan, strategy, strategy.build_model().to(dist.device),
                      ExemplarMemory(build_codec(cfg.exemplars), cfg.data.image_size), MetricsLog(plan.num_phases),
                      _event_log(cfg, run_dir, dist), base,
                      caches={"train": ClassCache(), "test": ClassCache()})
        session._resume()
        return session

    def _resume(self) -> None:
        sealed = self.run_dir.latest_sealed()
        if sealed is not None:
            for n in self.plan.phase_sizes[: sealed + 1]:   # per phase, as trained (BiC/LUCIR keep per-phase parts)
                self.model.head.grow(n)
            self.run_dir.resume(sealed, self.states())
            self.start = sealed + 1
            log.info("resuming %s after sealed phase %d", self.run_dir.path, sealed)
        if self.start >= self.plan.num_phases:
            log.info("run %s is already complete", self.run_dir.path)
        self.events.write(event="start", phase=self.start, world=self.dist.world, device=str(self.dist.device))

    def states(self) -> dict:
        """What a sealed phase holds, by key (RunDir.seal / resume)."""
        return {"model": self.model, "memory": self.memory, "strategy": self.strategy, "metrics": self.metrics,
                "events": self.events}

    def read(self, split: str, labels: list[int]) -> PhaseImages:
        """The images of `labels` in `split`, decoded lazily class by class (decoded classes are cached
        while they fit data.cache_max_gb)."""
        d = self.cfg.data
        return PhaseImages(self.manifest, split, self.plan.class_ids(labels), d.preset, d.image_size, d.workers,
                           d.cache_max_gb, self.caches[split])
