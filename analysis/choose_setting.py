"""Pick the winning setting of a validation search: the run with the highest Ā (ties: lower F).

    python -m analysis.choose_setting runs/mnemonics_select --not-candidate herding random
    python -m analysis.choose_setting runs/lwm_select --glob 'b*_g*' --guard-reference '*_g0'

Reads every run dir (metrics.json) directly under DIR whose name matches --glob, ranks the complete
ones and prints one line per run, then the choice. Incomplete runs are listed and never chosen;
runs named by --not-candidate (globs: references such as herding) are ranked but never chosen.

--guard-reference GLOB: a run may only win if it still learns the new classes, i.e. its mean
new-class accuracy over the incremental phases is at least --guard-fraction (default 0.5) of the
best reference run's (the runs matching GLOB, e.g. LwM's γ = 0, LwF-MC). Without that guard a
setting that refuses every new class "wins" with the frozen phase-0 model's Ā (docs/results.md,
LwM's search). If no run passes the guard, the best run overall is chosen and the line says so.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

from analysis.collect_table import find_runs


def new_class_accuracy(metrics: dict) -> float:
    """Mean accuracy on each incremental phase's new classes (phases 1..N)."""
    later = [p["accuracy_new"] for p in metrics.get("phases", [])[1:] if p.get("accuracy_new") is not None]
    return sum(later) / len(later) if later else 0.0


def load_runs(root: Path, pattern: str) -> list[tuple[str, dict]]:
    if not root.is_dir():
        raise SystemExit(f"choose_setting: {root} is not a directory of run dirs")
    runs = [(d.name, json.loads((d / "metrics.json").read_text())) for d in find_runs([str(root)])
            if fnmatch.fnmatch(d.name, pattern)]
    if not runs:
        raise SystemExit(f"choose_setting: no run dir matching '{pattern}' with metrics.json under {root}")
    return runs


def choose(runs: list[tuple[str, dict]], reference: str | None = None, fraction: float = 0.5,
           not_candidate: tuple[str, ...] = ()) -> tuple[str | None, float, list[str]]:
    """(chosen run name or None, the guard's floor, one report line per run, best first)."""
    def candidate(name: str) -> bool:
        return not any(fnmatch.fnmatch(name, g) for g in not_candidate)

    complete = [(n, m) for n, m in runs if m.get("status") == "complete"]
    new = {n: new_class_accuracy(m) for n, m in complete}
    refs = [new[n] for n, _ in complete if reference and fnmatch.fnmatch(n, reference)]
    floor = fraction * max(refs) if refs else 0.0
    key = lambda r: (r[1]["average_accuracy"], -r[1]["forgetting"])  # noqa: E731
    ranked = sorted(complete, key=key, reverse=True)
    lines = [f"  {n}: validation Ā {m['average_accuracy']:.2f} %, F {m['forgetting']:.2f} %, mean new-class "
             f"accuracy {new[n]:.1f} %" + ("" if new[n] >= floor else "  (below the guard)")
             + ("" if candidate(n) else "  (reference, not a candidate)") for n, m in ranked]
    lines += [f"  {n}: incomplete ({m.get('phases_done')}/{m.get('phases_total')} phases), not ranked"
              for n, m in runs if m.get("status") != "complete"]
    if reference and not refs:
        lines.append(f"  (no complete run matches the guard reference '{reference}': the guard is off)")
    candidates = [r for r in ranked if candidate(r[0])]
    passing = [r for r in candidates if new[r[0]] >= floor]
    best = (passing or candidates or [(None, None)])[0][0]
    return best, floor, lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="the search's output directory (one run dir per setting)")
    ap.add_argument("--glob", default="*", help="only run dirs whose name matches (default: all)")
    ap.add_argument("--guard-reference", help="run dirs (glob) whose new-class accuracy sets the guard's floor")
    ap.add_argument("--guard-fraction", type=float, default=0.5,
                    help="a winner's mean new-class accuracy must reach this share of the reference's")
    ap.add_argument("--not-candidate", nargs="+", default=[], metavar="GLOB",
                    help="runs shown for reference (e.g. herding random) but never chosen")
    args = ap.parse_args(argv)
    runs = load_runs(Path(args.dir), args.glob)
    best, floor, lines = choose(runs, args.guard_reference, args.guard_fraction, tuple(args.not_candidate))
    print("\n".join(lines))
    if best is None:
        raise SystemExit("choose_setting: no complete candidate run to choose from (rerun the search to finish "
                         "its runs)")
    m = dict(runs)[best]
    guard = f"; guard: mean new-class accuracy >= {floor:.1f} %" if args.guard_reference else ""
    fallback = " (no run passed the guard: best overall)" if args.guard_reference and \
        new_class_accuracy(m) < floor else ""
    print(f"chosen on the validation split: {best} (validation Ā {m['average_accuracy']:.2f} %, "
          f"F {m['forgetting']:.2f} %{guard}){fallback}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
