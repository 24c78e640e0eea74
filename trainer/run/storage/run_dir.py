"""RunDir: everything a run keeps on disk, behind one object.

    RUN/config.yaml      resolved config + git sha (guarded: a resumed run refuses a config that changes
                         what it reads: trainer/config/compare.py)
    RUN/metrics.json     rewritten after every phase            RUN/events.jsonl   one line per epoch/stage
    RUN/profile.json     where each phase's time went           RUN/phases/pNN/    sealed phases (DONE last)
    RUN/tb/              TensorBoard event files (tensorboard.py)
    RUN/ckpt/            checkpoints inside the phase in progress (in_phase_checkpoint.py), and the exemplar
                         level's finished class groups (ckpt/groups/: group_results.py)

What is saved is named by key: `seal(phase, states)` and `resume(phase, states)` take a mapping of
objects with `state_dict`/`load_state_dict`. In a sealed phase "model" and "memory" have files of their
own (model.pt, memory.pt: what changed since the phase sealed or resumed before, sealed_phases.memory_delta);
every other key goes into state.pt, beside the plain `info` values. Inside a
phase every key goes into one extra-*.pt. Everything is read as data only (checkpoint_io.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

from core.ranks import DistInfo
from trainer.engine.distributed import barrier, broadcast_object, exchange_tensors
from trainer.run import run_profile
from trainer.run.metrics import MetricsLog
from trainer.run.storage import group_results, in_phase_checkpoint, sealed_phases
from trainer.run.storage.in_phase_checkpoint import Place, StagePoint

OWN_FILES = ("model", "memory")          # keys of a sealed phase with a file of their own


class Stateful(Protocol):
    def state_dict(self): ...

    def load_state_dict(self, sd) -> None: ...


class Value:
    """A plain value (a dict of timings, a record) saved under a key like any other state."""

    def __init__(self, value=None):
        self.value = value

    def state_dict(self):
        return self.value

    def load_state_dict(self, sd) -> None:
        self.value = sd


def _states_of(states: Mapping[str, Stateful]) -> dict:
    return {key: obj.state_dict() for key, obj in states.items()}


def _memory_apart(states: Mapping[str, Stateful]) -> tuple[dict, Stateful | None]:
    """The exemplar memory (saved in a file of its own while its `version` holds) and everything else."""
    memory = states.get("memory")
    if memory is None or not hasattr(memory, "version"):
        return dict(states), None
    return {k: v for k, v in states.items() if k != "memory"}, memory


def _load_states(states: Mapping[str, Stateful], saved: Mapping) -> None:
    for key, obj in states.items():
        if key in saved or not getattr(obj, "optional_state", False):
            obj.load_state_dict(saved[key])


class RunDir:
    def __init__(self, path: str | Path, dist: DistInfo):
        self.path, self.dist = Path(path), dist
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.json"
        self.events_path = self.path / "events.jsonl"
        self.tb_path = self.path / "tb"
        self._sealed_bank: tuple[int, dict] | None = None   # (phase, its memory's bank): what the next seal changes

    # -- sealed phases -----------------------------------------------------------------------
    # Where to resume is decided by rank 0 and broadcast: on a shared file system ranks can see
    # different listings for a while (attribute caches), and ranks resuming different phases would
    # train different models.
    def latest_sealed(self) -> int | None:
        return broadcast_object(sealed_phases.latest_sealed(self.path) if self.dist.is_main else None)

    def phase_problem(self, phase: int) -> str | None:
        return broadcast_object(sealed_phases.phase_problem(self.path, phase) if self.dist.is_main else None)

    def seal(self, phase: int, states: Mapping[str, Stateful], info: dict) -> None:
        """Seal `phase` (rank 0 writes; DONE last), then rewrite metrics.json and profile.json."""
        if not self.dist.is_main:
            return
        saved = _states_of(states)
        rest = {**info, **{k: v for k, v in saved.items() if k not in OWN_FILES}}
        earlier = self._sealed_bank is not None and self._sealed_bank[0] < phase
        previous_phase, previous = self._sealed_bank if earlier else (None, None)
        memory = sealed_phases.memory_delta(saved["memory"]["bank"], previous, previous_phase)
        sealed_phases.seal_phase(self.path, phase, saved["model"], memory, rest)
        self._sealed_bank = (phase, dict(saved["memory"]["bank"]))

    def resume(self, phase: int, states: Mapping[str, Stateful]) -> dict:
        """Load sealed `phase` into `states`; returns state.pt (its plain values too)."""
        model_sd, rest = (sealed_phases.load_file(self.path, phase, name) for name in ("model.pt", "state.pt"))
        memory_sd = self._memory_from_main(lambda: sealed_phases.load_file(self.path, phase, "memory.pt"))
        _load_states(states, {**rest, "model": model_sd, "memory": memory_sd})
        self._sealed_bank = (phase, dict(memory_sd["bank"]))
        return rest

    def _memory_from_main(self, load):
        """The exemplar memory's state as rank 0 reads it (`load()`), sent to the other ranks as tensors:
        one read of the 3-6 GB of an ImageNet-1k memory from the shared file system, not one per rank."""
        if self.dist.world == 1:
            return load()
        sd = load() if self.dist.is_main else None
        if not broadcast_object(sd is not None):
            return None
        bank, _ = exchange_tensors(sd["bank"] if self.dist.is_main else {})
        return {"bank": bank}

    # -- inside a phase ----------------------------------------------------------------------
    def stage_point(self, phase: int) -> StagePoint | None:
        """The in-phase checkpoint to resume `phase` from, as rank 0 sees it (every rank loads the same one)."""
        point = in_phase_checkpoint.load(self.path, phase) if self.dist.is_main else None
        pointer = broadcast_object(None if point is None else point.pointer)
        if point is None and pointer is not None:
            point = in_phase_checkpoint.load_pointer(self.path, pointer, with_memory=False)
        if pointer is not None and pointer.get("memory"):        # a file of its own: rank 0 read it
            point.extra["memory"] = self._memory_from_main(lambda: point.extra["memory"])
        return point

    def restore_point(self, point: StagePoint, states: Mapping[str, Stateful]) -> None:
        _load_states({k: v for k, v in states.items() if k in point.extra}, point.extra)

    def save_stage_done(self, place: Place, states: Mapping[str, Stateful]) -> None:
        """A checkpoint after a complete stage (`place.epoch` None)."""
        rest, memory = _memory_apart(states)
        in_phase_checkpoint.save_stage_done(self.path, self.dist, place, _states_of(rest), memory)

    def save_in_stage(self, engine, place: Place, states: Mapping[str, Stateful]) -> None:
        """A checkpoint inside a model-level stage after epoch `place.epoch`, with the engine's own."""
        rest, memory = _memory_apart(states)
        in_phase_checkpoint.save_in_stage(self.path, self.dist, engine, place, _states_of(rest), memory)

    def engine_dir(self) -> Path:
        return in_phase_checkpoint.engine_dir(self.path)

    def clear_points(self) -> None:
        in_phase_checkpoint.clear(self.path, self.dist)

    def group_results(self, phase: int) -> group_results.GroupStore:
        """Where this phase's exemplar level keeps its finished class groups (every rank writes its own)."""
        return group_results.GroupStore(self.path, phase)

    def clear_groups(self) -> None:
        """Forget kept class groups (a phase starting from its beginning trains the model they came from anew)."""
        barrier()
        if self.dist.is_main:
            group_results.clear(self.path)
        barrier()

    # -- bookkeeping -------------------------------------------------------------------------
    def prepare(self, cfg_dict: dict, defaults: dict, keys: list[str], write_config) -> None:
        """Create the directory and write config.yaml (rank 0), after every rank checked the config guard over
        the keys the run reads (`keys`)."""
        if self.dist.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            sealed_phases.guard_config(self.path, cfg_dict, defaults, keys)
            write_config(self.config_path)
        barrier()
        sealed_phases.guard_config(self.path, cfg_dict, defaults, keys)     # every rank refuses, not only rank 0

    def write_results(self, metrics: MetricsLog) -> None:
        if self.dist.is_main:
            metrics.write(self.metrics_path)
            run_profile.write_profile(self.path)      # per-phase time split and stage throughput
