"""Checkpoints inside a phase (RUN/ckpt/), so a crash loses at most `train.checkpoint_minutes` of training.

Two kinds, both described by RUN/ckpt/state.json, which is replaced last and is the commit point:
  * after a stage completes: model weights, strategy state, timings (extra.pt);
  * at an epoch end inside a training stage, when one is due (trainer/run/checkpoint_clock.py): a DeepSpeed engine checkpoint (model + optimizer, all
    ranks call it) under RUN/ckpt/engine/<tag>/ plus extra.pt (strategy state, timings).
The exemplar memory (3-6 GB at ImageNet-1k) has a file of its own, memory-<version>.pt, written only
when the memory changed since the file the last pointer named (it changes at the exemplar level, not
inside a training stage), so an epoch's checkpoint does not grow with it.
A checkpoint belongs to one phase; it is only used when that phase is the next one to run.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from core import atomic
from core.errors import UserError
from trainer.engine import distributed
from trainer.run.storage import checkpoint_io

log = logging.getLogger(__name__)


@dataclass
class StagePoint:
    """An in-phase checkpoint: `pointer` is state.json as read (what other ranks load: load_pointer),
    `extra` the states it names."""
    pointer: dict
    extra: dict

    @property
    def phase(self) -> int:
        return self.pointer["phase"]

    @property
    def stage_index(self) -> int:
        return self.pointer["stage_index"]

    @property
    def stage(self) -> str:
        return self.pointer["stage"]

    @property
    def epoch(self) -> int | None:
        """The last finished epoch of an interrupted stage; None: the stage is complete."""
        return self.pointer["epoch"]

    @property
    def engine_tag(self) -> str | None:
        return self.pointer["engine_tag"]

    @property
    def step(self) -> int | None:
        """Steps of the epoch after `epoch` trained before a stop at a step boundary (None: none)."""
        return self.pointer.get("step")


def _root(run_dir: Path) -> Path:
    return run_dir / "ckpt"


def _write_pointer(run_dir: Path, point: dict, extra: dict, memory=None) -> dict:
    """Write extra.pt (and the memory's file, if it changed), then state.json; returns the bytes written."""
    root = _root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"extra-p{point['phase']:02d}-s{point['stage_index']}-e{point['epoch']}" + \
        (f"-t{point['step']}" if point.get("step") else "") + ".pt"
    checkpoint_io.save(root / name, extra)
    written = {"extra": (root / name).stat().st_size, "memory": 0}
    point = {**point, "extra": name}
    if memory is not None:
        point["memory"] = f"memory-{memory.version}.pt"
        if not (root / point["memory"]).is_file():
            checkpoint_io.save(root / point["memory"], memory.state_dict())
            written["memory"] = (root / point["memory"]).stat().st_size
    atomic.write_json(root / "state.json", point, indent=None)
    keep = {name, point.get("memory")}
    for p in root.iterdir():                       # drop what the new pointer no longer names
        if p.name.startswith(("extra-", "memory-")) and p.name not in keep:
            p.unlink(missing_ok=True)
    eng = root / "engine"
    if eng.is_dir():
        for p in eng.iterdir():
            if p.is_dir() and p.name != point.get("engine_tag"):
                shutil.rmtree(p, ignore_errors=True)
    return written


class Place(NamedTuple):
    """Where in a run a checkpoint is taken: the phase, the stage's index and name, and the last finished epoch
    of an interrupted stage (None: the stage is complete), and where it stopped at a step boundary, the steps of
    the next epoch it had trained."""
    phase: int
    stage_index: int
    stage: str
    epoch: int | None = None
    step: int | None = None

    def pointer(self, engine_tag: str | None) -> dict:
        out = {**self._asdict(), "engine_tag": engine_tag}
        if self.step is None:
            out.pop("step")                  # the pointer of an epoch end, as before steps were kept
        return out


def save_stage_done(run_dir: Path, dist_info, place: Place, extra: dict, memory=None) -> None:
    if dist_info.is_main:
        _write_pointer(run_dir, place.pointer(None), extra, memory)
    distributed.barrier()


def save_in_stage(run_dir: Path, dist_info, engine, place: Place, extra: dict, memory=None) -> None:
    tag = f"p{place.phase:02d}-s{place.stage_index}-e{place.epoch}" + (f"-t{place.step}" if place.step else "")
    engine.save_checkpoint(_root(run_dir) / "engine", tag)       # collective: every rank calls it
    distributed.barrier()
    if dist_info.is_main:
        _write_pointer(run_dir, place.pointer(tag), extra, memory)
    distributed.barrier()


def load(run_dir: Path, phase: int) -> StagePoint | None:
    """The in-phase checkpoint of `phase`, or None (none, another phase's, or damaged: then a warning)."""
    root = _root(run_dir)
    pointer = root / "state.json"
    if not pointer.is_file():
        return None
    try:
        st = json.loads(pointer.read_text())
        if st["phase"] != phase:
            return None
        if st["engine_tag"] and not (root / "engine" / st["engine_tag"]).is_dir():
            raise FileNotFoundError(f"engine checkpoint {st['engine_tag']} is missing")
        if st["engine_tag"]:
            checkpoint_io.check_engine_checkpoint(root / "engine" / st["engine_tag"])
        return load_pointer(run_dir, st)
    except UserError:
        raise                   # not damage: a file mnemo did not write (checkpoint_io)
    except Exception as e:  # any damage: fall back to the sealed phase
        log.warning("in-phase checkpoint %s is unusable (%s); restarting phase %d from its beginning",
                    root, e, phase)
        return None


def load_pointer(run_dir: Path, st: dict, with_memory: bool = True) -> StagePoint:
    """The checkpoint that state.json `st` names (another rank chose it: any error here is raised);
    `with_memory=False` leaves out the memory's own file (rank 0 sends it: RunDir.stage_point)."""
    extra = checkpoint_io.load(_root(run_dir) / st["extra"])
    if st.get("memory") and with_memory:
        extra["memory"] = checkpoint_io.load(_root(run_dir) / st["memory"])
    return StagePoint(st, extra)


def clear(run_dir: Path, dist_info) -> None:
    distributed.barrier()
    if dist_info.is_main:
        shutil.rmtree(_root(run_dir), ignore_errors=True)
    distributed.barrier()


def engine_dir(run_dir: Path) -> Path:
    return _root(run_dir) / "engine"
