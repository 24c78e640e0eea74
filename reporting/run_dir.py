"""Read a run directory for reporting: config, metrics, events, throughput profile, sealed phases.

A run that is still going, crashed, or lost files is read as far as it goes; what is missing becomes a
note for report.md (never an exception). A path that is not a run directory at all is a UserError.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.errors import UserError
from trainer.config.migrate import migrate
from trainer.run.run_profile import build_profile, read_events

STRATEGY_NAMES = {"lwf": "LwF", "icarl": "iCaRL", "bic": "BiC", "lucir": "LUCIR", "lwm": "LwM",
                  "finetune": "Fine-tune", "joint": "Joint (upper bound)"}


@dataclass
class RunInfo:
    path: Path
    name: str
    config: dict
    metrics: dict
    events: list[dict]
    profile: dict
    sealed: list[int]                         # phases whose sealed directory is intact
    phases_total: int | None
    notes: list[str] = field(default_factory=list)

    # -- what the run is ---------------------------------------------------------------------
    def section(self, key: str) -> dict:
        return self.config.get(key) or {}

    @property
    def strategy(self) -> str:
        return self.section("strategy").get("name", "?")

    @property
    def uses_exemplars(self) -> bool:
        phases = self.metrics.get("phases") or []
        if phases:
            return any(p.get("exemplars_total") for p in phases)
        return self.strategy not in ("finetune", "joint")

    @property
    def selection(self) -> str:
        return self.section("exemplars").get("selection", "?")

    @property
    def adjust_old(self) -> bool:
        return bool(self.section("exemplars").get("adjust_old", False))

    @property
    def method(self) -> str:
        """Table 1 row name: 'LwF w/ herding', 'LwF w/ mnemonics (adj.)', 'Fine-tune'."""
        s = STRATEGY_NAMES.get(self.strategy, self.strategy)
        if not self.uses_exemplars:
            return s
        return f"{s} w/ {self.selection}" + (" (adj.)" if self.adjust_old else "")

    @property
    def exemplar_variant(self) -> str:
        """Table 2 row name: 'random w/o adj.', 'mnemonics', ..."""
        return self.selection + ("" if self.adjust_old else " w/o adj.")

    @property
    def dataset(self) -> str:
        shards = self.section("data").get("shards")
        if not shards:
            return "?"
        try:
            return json.loads((Path(shards) / "manifest.json").read_text())["dataset"]
        except (OSError, ValueError, KeyError):
            return Path(shards).name

    @property
    def setting(self) -> str:
        """Table column: 'digits B=4 N=3'."""
        p = self.section("protocol")
        return f"{self.dataset} B={p.get('base_classes', '?')} N={p.get('phases', '?')}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.method})"

    @property
    def phases(self) -> list[dict]:
        return self.metrics.get("phases") or []

    def summary(self, key: str) -> float | None:
        """Ā or F (CNN or NME) recomputed from the finished phases (trainer.run.metrics), as metrics.json defines them:
        average_accuracy, forgetting, average_accuracy_nme, forgetting_nme."""
        from trainer.run.metrics import average_accuracy, forgetting

        nme = key.endswith("_nme")
        if key.startswith("average_accuracy"):
            return average_accuracy(self.phases, "accuracy_nme" if nme else "accuracy")
        if key.startswith("forgetting"):
            return forgetting(self.phases, "accuracy_base_nme" if nme else "accuracy_base")
        return self.metrics.get(key)

    @property
    def complete(self) -> bool:
        return self.phases_total is not None and len(self.phases) >= self.phases_total


def _read_json(path: Path, notes: list[str], what: str) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        notes.append(f"{what} is unreadable ({e}); ignored")
        return {}


def _phase_dirs(run_dir: Path) -> list[int]:
    root = run_dir / "phases"
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir() if p.is_dir() and p.name[:1] == "p" and p.name[1:].isdigit())


def load_run(path: str | Path, name: str | None = None) -> RunInfo:
    run_dir = Path(path)
    if not run_dir.exists():
        raise UserError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory (it is a file): "
                        "pass directories made by mnemo train --run-dir")
    if not any((run_dir / n).exists() for n in ("config.yaml", "metrics.json", "phases")):
        raise UserError(f"{run_dir} is not a run directory (no config.yaml, metrics.json or phases/): "
                        "pass directories made by mnemo train --run-dir")
    from trainer.run.storage import sealed_phases  # torch: imported once the path is known to be a run

    notes: list[str] = []
    config: dict = {}
    if (run_dir / "config.yaml").is_file():
        try:
            config = migrate(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})   # today's names
        except yaml.YAMLError as e:
            notes.append(f"config.yaml is unreadable ({str(e).splitlines()[0]}); labels use the directory name")
    else:
        notes.append("no config.yaml: method and data set are unknown")
    metrics = _read_json(run_dir / "metrics.json", notes, "metrics.json")
    if not metrics:
        notes.append("no phase has finished (no metrics.json): no accuracy figures")
    events = read_events(run_dir / "events.jsonl")
    if not events:
        notes.append("no events.jsonl: no throughput figures")
    proto = config.get("protocol") or {}
    total = metrics.get("phases_total")
    if total is None and isinstance(proto.get("phases"), int):
        total = proto["phases"] + 1
    done = [p["phase"] for p in metrics.get("phases") or []]
    if metrics and total is not None and len(done) < total:
        missing = [p for p in range(total) if p not in done]
        notes.append(f"partial run: {len(done)} of {total} phases finished (phase{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(map(str, missing))} not yet); Ā and F below cover the finished phases only")
    sealed = []
    for ph in sorted(set(done) | set(_phase_dirs(run_dir))):
        problem = sealed_phases.phase_problem(run_dir, ph)
        if problem is None:
            sealed.append(ph)
        else:
            notes.append(f"phase {ph}: sealed directory phases/p{ph:02d} is unusable ({problem}); "
                         "its t-SNE and exemplar images are skipped")
    profile = build_profile(run_dir, metrics, events) if events else {}
    return RunInfo(run_dir, name or run_dir.name, config, metrics, events, profile, sealed, total, notes)


def load_runs(paths: list[str | Path]) -> list[RunInfo]:
    """Runs named by their directory, or parent/directory where two share a name."""
    paths = [Path(p) for p in paths]
    names = [p.resolve().name for p in paths]
    out = []
    for p, n in zip(paths, names):
        if names.count(n) > 1:
            n = f"{p.resolve().parent.name}/{n}"
        out.append(load_run(p, n))
    return out


def load_sealed(run: RunInfo, phase: int):
    """(model with the sealed weights in eval mode, memory bank {label: float16 images at the model's side, decoded
    from the run's stored form}, state dict)."""
    from trainer.methods.models.net import IncrementalNet
    from trainer.run.storage import sealed_phases

    model_sd, memory_sd, state = sealed_phases.load_phase(run.path, phase)
    data = run.section("data")
    model = IncrementalNet(run.section("model").get("arch", "resnet32"), data.get("preset", "glyphs"))
    # Only the backbone is needed for features, so any head type (linear, cosine, ...) works.
    backbone = {k: v for k, v in model_sd.items() if not k.startswith("head.")}
    missing, _ = model.load_state_dict(backbone, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing:
        raise UserError(f"{run.path}: phases/p{phase:02d}/model.pt does not fit model.arch "
                        f"{run.section('model').get('arch')} (missing {missing[0]}, ...)")
    model.eval()
    from exemplars.memory import ExemplarMemory

    memory = ExemplarMemory.of_run({"bank": memory_sd.get("bank", {})}, run.section("exemplars"),
                                   data.get("image_size"))
    return model, memory.view(), state
