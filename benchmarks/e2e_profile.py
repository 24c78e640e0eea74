"""A short real run, end to end: where the time goes per phase, and training img/s.

    mnemo profile e2e --shards DIR [--config configs/glyphs.yaml] [--phases 1] [--epochs 1]
                      [--run-dir DIR] [key=value ...]

prints ONE JSON object. Runs `trainer.run.driver.run` in this process on the shard set (the recipe's
model, strategy and exemplar selection; by default phase 0 on half of the classes, then `--phases`
incremental phases, `--epochs` epochs per stage), then reports RUN/profile.json: the wall time split
into model-level training, exemplar work, balanced fine-tune, evaluation and the rest, per phase
and in total, and per stage img/s, data-wait share and the forward/backward/optimizer split.
Without --run-dir the run goes to a temporary directory that is removed afterwards.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mnemo profile e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True, help="shard directory (holds manifest.json)")
    ap.add_argument("--config", default=str(REPO / "configs" / "glyphs.yaml"), help="recipe to start from")
    ap.add_argument("--phases", type=int, default=1, help="incremental phases after phase 0")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of every training stage")
    ap.add_argument("--run-dir", default=None, help="keep the run here (must not exist yet)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="further config overrides")
    return ap


def _protocol(num_classes: int, phases: int) -> list[str]:
    """Phase 0 on half of the classes, the rest in `phases` equal steps (dropping a remainder)."""
    base = num_classes // 2
    step = (num_classes - base) // max(1, phases)
    if step < 1:
        return [f"protocol.base_classes={num_classes}", "protocol.phases=0"]
    return [f"protocol.base_classes={base}", f"protocol.phases={phases}",
            f"protocol.num_classes={base + step * phases}"]


def profile_e2e(shards: str, config: str, phases: int = 1, epochs: int = 1, run_dir: str | None = None,
                overrides: list[str] = ()) -> dict:
    from core.errors import UserError
    from data_pipeline.shards.manifest import load_manifest
    from trainer.config import load_config
    from trainer.run.driver import run
    from trainer.run.run_profile import build_profile

    if phases < 0 or epochs < 1:
        raise UserError("--phases must be >= 0 and --epochs >= 1")
    manifest = load_manifest(shards)
    keys = {o.split("=", 1)[0] for o in overrides}
    base = [f"data.shards={shards}", f"train.epochs={epochs}", f"train.base_epochs={epochs}",
            f"train.finetune_epochs={epochs}", *_protocol(manifest.num_classes, phases)]
    cfg = load_config(config, [o for o in base if o.split("=", 1)[0] not in keys] + list(overrides))
    tmp = None
    if run_dir is None:
        tmp = tempfile.mkdtemp(prefix="mnemo-e2e-")
        run_dir = str(Path(tmp) / "run")
    elif Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        raise UserError(f"--run-dir {run_dir} already holds a run (it would be resumed, not profiled): "
                        "give a new directory")
    try:
        summary = run(cfg, run_dir)
        prof = build_profile(Path(run_dir))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    totals = prof["totals"]
    wall = totals["wall_s"]
    stage_keys = ("img_s", "img_s_per_rank", "data_wait_share", "data_ms", "forward_ms", "backward_ms",
                  "optimizer_ms", "peak_mem_mb")
    return {
        "target": "e2e", "shards": str(shards), "dataset": manifest.dataset, "config": config,
        "arch": cfg.model.arch, "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size,
        "strategy": cfg.strategy.name, "selection": cfg.exemplars.selection, "epochs": epochs,
        "phases": len(prof["phases"]), "device": prof["device"], "world": prof["world"],
        "run_dir": None if tmp else str(run_dir),
        "wall_s": wall, "split_s": totals["split_s"],
        "split_share": {k: round(v / wall, 3) if wall else None for k, v in totals["split_s"].items()},
        "stages": {s: {k: f.get(k) for k in stage_keys} for s, f in totals["stages"].items()},
        "per_phase": [{"phase": p["phase"], "wall_s": p["wall_s"], "split_s": p["split_s"],
                       "img_s": {s: f.get("img_s") for s, f in p["stages"].items()}} for p in prof["phases"]],
        "average_accuracy": summary.get("average_accuracy"),
    }


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):      # DeepSpeed prints op-build lines on stdout
        out = profile_e2e(a.shards, a.config, a.phases, a.epochs, a.run_dir, a.overrides)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
