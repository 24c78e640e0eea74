"""RUN/profile.json: where each phase's time went, derived from events.jsonl and metrics.json.

Per phase: the wall time split into model-level training, exemplar work, the balanced fine-tune,
evaluation, building the DeepSpeed engines and the rest (reading shards, teacher copies), and per
training stage the img/s
(global and per rank), data-wait share, per-step milliseconds of data/forward/backward/optimizer
(trainer.engine.step_timer), peak memory, and the epoch ends' cost (`epoch_end_s`: the buffers' average, the
figures gathered from every rank and the in-stage checkpoints, of which `checkpoints` were saved in
`checkpoint_s`). Derived rather than accumulated in memory, so a resumed run
(events.jsonl is appended to) gets the same file: for an epoch logged twice (a crash, then a rerun),
the later line wins.

    {"device": "cpu", "world": 1,
     "phases": [{"phase": 0, "wall_s": 12.3, "split_s": {"train": 9.1, "exemplars": 0.4, ...},
                 "stages": {"train": {"img_s": ..., "img_s_per_rank": [...], "data_wait_share": ...,
                                      "forward_ms": ..., ...}},
                 "exemplars": {"select_s": ..., "adjust_s": ..., "selection": "herding", ...}}],
     "totals": {"wall_s": ..., "split_s": {...}, "stages": {"train": {"img_s": ..., ...}}}}
"""
from __future__ import annotations

import json
from pathlib import Path

from core import atomic

PARTS = ("data", "forward", "backward", "optimizer", "other")
SPLIT_ORDER = ("train", "exemplars", "balanced_finetune", "eval")


def read_events(path: Path) -> list[dict]:
    """events.jsonl lines; a torn last line (a crash while writing) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def split_of(timings: dict, wall_s: float, engine_setup_s: float | None = None) -> dict[str, float]:
    """{"train": s, "exemplars": s, "balanced_finetune": s, "eval": s, <other stages>: s,
    "engine_setup": s (building DeepSpeed engines, when known), "other": s (the rest of the wall time)}."""
    parts = {k[:-2]: float(v) for k, v in timings.items() if k.endswith("_s") and not k.endswith("_img_s")}
    ordered = {k: round(parts.pop(k), 3) for k in SPLIT_ORDER if k in parts}
    ordered.update({k: round(v, 3) for k, v in sorted(parts.items())})
    if engine_setup_s is not None:
        ordered["engine_setup"] = round(engine_setup_s, 3)
    ordered["other"] = round(max(0.0, wall_s - sum(ordered.values())), 3)
    return ordered


def combine_epochs(epochs: list[dict]) -> dict:
    """One stage's figures from its epoch lines (each written by trainer.engine.step_timer)."""
    images = sum(e.get("images", 0) for e in epochs)
    # an epoch's global time is that of its slowest rank (images / img_s); "seconds" is rank 0's clock
    seconds = sum(e["images"] / e["img_s"] if e.get("img_s") and e.get("images") else e.get("seconds", 0.0)
                  for e in epochs)
    out = {"epochs": len(epochs), "images": images, "seconds": round(seconds, 3),
           "img_s": round(images / seconds, 1) if seconds > 0 else None,
           "data_wait_share": round(sum(e.get("data_wait_share", 0.0) * e.get("seconds", 0.0) for e in epochs)
                                    / seconds, 4) if seconds > 0 else 0.0,
           "peak_mem_mb": max((e.get("peak_mem_mb", 0.0) for e in epochs), default=0.0)}
    timed = [e for e in epochs if "forward_ms" in e]
    if timed:
        steps = sum(e.get("steps", 0) for e in timed)
        for p in PARTS:
            out[f"{p}_ms"] = round(sum(e[f"{p}_ms"] * e.get("steps", 0) for e in timed) / max(1, steps), 3)
        out["steps"] = steps
        out["clock"] = timed[-1].get("clock", "host")
        ranks = len(timed[0].get("img_s_per_rank", []))
        if ranks and all(len(e.get("images_per_rank", [])) == ranks for e in timed):
            per_rank = []
            for r in range(ranks):
                imgs = sum(e["images_per_rank"][r] for e in timed)
                secs = sum(e["images_per_rank"][r] / e["img_s_per_rank"][r] for e in timed
                           if e["img_s_per_rank"][r] and e["img_s_per_rank"][r] > 0)
                per_rank.append(round(imgs / secs, 1) if secs > 0 else None)
            out["img_s_per_rank"] = per_rank
            out["peak_mem_mb_per_rank"] = [max(e["peak_mem_mb_per_rank"][r] for e in timed) for r in range(ranks)]
    return out


def add_epoch_ends(figures: dict, ends: list[dict]) -> dict:
    """`figures` (combine_epochs') with the cost of the stage's epoch ends (epoch_end events)."""
    if ends:
        figures["epoch_end_s"] = round(sum(e.get("seconds", 0.0) for e in ends), 3)
        figures["checkpoints"] = sum(1 for e in ends if e.get("checkpoint"))
        figures["checkpoint_s"] = round(sum(e.get("save_s", 0.0) for e in ends), 3)
    return figures


def _stages(epochs: dict[tuple, dict], ends: dict[tuple, dict], keep) -> dict[str, dict]:
    """{stage: its figures} over the epochs whose phase `keep(phase)` accepts, in epoch order."""
    by_stage: dict[str, list] = {}
    for key in sorted((k for k in epochs if keep(k[0])), key=lambda k: (k[0], k[2])):
        by_stage.setdefault(key[1], []).append(key)
    return {s: add_epoch_ends(combine_epochs([epochs[k] for k in keys]), [ends[k] for k in keys if k in ends])
            for s, keys in by_stage.items()}


def build_profile(run_dir: Path, metrics: dict | None = None, events: list[dict] | None = None) -> dict:
    run_dir = Path(run_dir)
    if metrics is None:
        mpath = run_dir / "metrics.json"
        metrics = json.loads(mpath.read_text()) if mpath.is_file() else {}
    events = read_events(run_dir / "events.jsonl") if events is None else events
    start = next((e for e in reversed(events) if e.get("event") == "start"), {})
    epochs: dict[tuple, dict] = {}
    ends: dict[tuple, dict] = {}
    exemplars: dict[int, dict] = {}
    phase_events: dict[int, dict] = {}
    setup: dict[tuple, float] = {}
    for e in events:
        kind = e.get("event")
        if kind == "epoch":
            epochs[(e["phase"], e["stage"], e["epoch"])] = e
        elif kind == "epoch_end":
            ends[(e["phase"], e["stage"], e["epoch"])] = e
        elif kind == "exemplars":
            exemplars[e["phase"]] = {k: v for k, v in e.items() if k not in ("event", "phase", "time")}
        elif kind == "phase":
            phase_events[e["phase"]] = e
        elif kind == "stage" and "engine_setup_s" in e:
            setup[(e["phase"], e["stage"])] = e["engine_setup_s"]
    records = metrics.get("phases") or [
        {"phase": p, "wall_s": e.get("wall_s", 0.0),
         "timings": {k: v for k, v in e.items() if k.endswith("_s") and k != "wall_s"}}
        for p, e in sorted(phase_events.items())]
    phases = []
    for rec in records:
        ph = rec["phase"]
        phases.append({"phase": ph, "classes_seen": rec.get("classes_seen"), "wall_s": rec.get("wall_s", 0.0),
                       "split_s": split_of(rec.get("timings", {}), rec.get("wall_s", 0.0),
                                           sum(v for (p, _), v in setup.items() if p == ph)
                                           if any(p == ph for p, _ in setup) else None),
                       "stages": _stages(epochs, ends, lambda p, ph=ph: p == ph),
                       "exemplars": exemplars.get(ph)})
    totals_split: dict[str, float] = {}
    for p in phases:
        for k, v in p["split_s"].items():
            totals_split[k] = round(totals_split.get(k, 0.0) + v, 3)
    listed = {q["phase"] for q in phases}
    return {"device": start.get("device"), "world": start.get("world"), "phases": phases,
            "totals": {"wall_s": round(sum(p["wall_s"] for p in phases), 3), "split_s": totals_split,
                       "stages": _stages(epochs, ends, lambda p: p in listed)}}


def write_profile(run_dir: Path) -> Path:
    """Rewrite RUN/profile.json (atomically) from the run's events and metrics."""
    run_dir = Path(run_dir)
    path = run_dir / "profile.json"
    atomic.write_json(path, build_profile(run_dir), indent=1)
    return path
