"""How far do adjusted exemplars move from the pixels they had when their classes were learned?

    python -m analysis.exemplar_drift RUN [RUN ...] [--introduced 0] [--phases 1 5 10 25]
        [--threshold 32] [--out FILE.json]

Eq. 10 adjusts old exemplars in every later phase, each fold against its complement, which is itself
exemplars: no real image of an old class is seen again. This tool reads the exemplar memory sealed
with each phase (`phases/pNN/memory.pt`) and, for the classes first stored at phase `--introduced`
(default 0: the base classes), compares each later phase's pixels with those of that phase:

  mean |Δ|   mean absolute pixel change in grey levels (of 255), over all their exemplars
  > T        the share of pixels that moved by more than `--threshold` grey levels (default 32)
  max |Δ|    the largest change of one pixel

Exemplars keep their order (adjustment writes them back in place; fixed-budget trimming keeps a
prefix), so the first m exemplars of a class are compared with its first m. Next to the drift it
prints the run's accuracy on the base classes at that phase (metrics.json `accuracy_base`) when
`--introduced` is 0. A run without adjustment gives zero drift: the check that the tool reads the
memory right. Prints one Markdown table per run; `--out` writes them all as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from core.errors import UserError
from exemplars.memory import ExemplarMemory
from trainer.config import stored_config
from trainer.run.storage import sealed_phases as store


def load_bank(run: Path, phase: int) -> dict[int, torch.Tensor]:
    problem = store.phase_problem(run, phase)
    if problem:
        raise UserError(f"{run}: phase {phase} is not sealed ({problem})")
    sd = store.load_file(run, phase, "memory.pt")
    cfg = stored_config(run / "config.yaml") if (run / "config.yaml").is_file() else {}
    return ExemplarMemory.of_run(sd, cfg.get("exemplars"), (cfg.get("data") or {}).get("image_size")).view()


def sealed_phases(run: Path) -> list[int]:
    last = store.latest_sealed(run)
    return [] if last is None else [p for p in range(last + 1) if store.phase_problem(run, p) is None]


def _span(phases: list[int]) -> str:
    """'0-25' for a contiguous list, else the list itself; 'none' when empty."""
    if not phases:
        return "none"
    return f"{phases[0]}-{phases[-1]}" if phases == list(range(phases[0], phases[-1] + 1)) else str(phases)


def introduced_at(run: Path, phase: int) -> tuple[dict[int, torch.Tensor], list[int]]:
    """(the memory sealed with `phase`, the classes it stores that the phase before did not)."""
    bank = load_bank(run, phase)
    before = set(load_bank(run, phase - 1)) if phase > 0 else set()
    return bank, sorted(set(bank) - before)


def drift(reference: dict[int, torch.Tensor], bank: dict[int, torch.Tensor], classes: list[int],
          threshold: float) -> dict:
    """Pixel change of `classes` from `reference` to `bank`, in grey levels of 255."""
    diffs, exemplars = [], 0
    for c in classes:
        m = min(len(reference[c]), len(bank[c]))
        diffs.append((bank[c][:m].float() - reference[c][:m].float()).abs().flatten() * 255)
        exemplars += m
    d = torch.cat(diffs)
    return {"mean_abs": round(float(d.mean()), 3), "share_above": round(float((d > threshold).float().mean()), 4),
            "max_abs": round(float(d.max()), 1), "exemplars": exemplars}


def run_drift(run: Path, introduced: int, phases: list[int] | None, threshold: float) -> dict:
    if not (run / "metrics.json").is_file() and not (run / "phases").is_dir():
        raise UserError(f"{run}: not a run directory (no metrics.json, no phases/)")
    available = sealed_phases(run)
    if introduced not in available:
        raise UserError(f"{run}: phase {introduced} is not sealed (sealed phases: {_span(available)})")
    reference, classes = introduced_at(run, introduced)
    if not classes:
        raise UserError(f"{run}: phase {introduced} stored no new class")
    later = [p for p in available if p > introduced]
    if phases:
        missing = sorted(set(phases) - set(later))
        if missing:
            raise UserError(f"{run}: phases {missing} are not sealed phases after {introduced} "
                            f"(sealed after it: {_span(later)})")
        later = sorted(phases)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    base_acc = {p["phase"]: p.get("accuracy_base") for p in metrics.get("phases", [])}
    rows = []
    for p in later:
        bank = load_bank(run, p)
        gone = [c for c in classes if c not in bank]
        if gone:
            raise UserError(f"{run}: classes {gone} are not in phase {p}'s exemplar memory; pick earlier phases")
        row = {"phase": p, **drift(reference, bank, classes, threshold)}
        if introduced == 0:
            row["accuracy_base"] = base_acc.get(p)
        rows.append(row)
    return {"run": str(run), "introduced": introduced, "classes": classes, "threshold": threshold, "rows": rows}


def markdown(result: dict) -> str:
    t = result["threshold"]
    base = result["introduced"] == 0
    head = f"| phase | mean \\|Δ\\| (of 255) | share > {t:g} | max \\|Δ\\| |" + (" base-class acc. (%) |" if base else "")
    lines = [f"{result['run']}: the {len(result['classes'])} classes stored at phase {result['introduced']}",
             "", head, "|---:|---:|---:|---:|" + ("---:|" if base else "")]
    for r in result["rows"]:
        acc = r.get("accuracy_base")
        lines.append(f"| {r['phase']} | {r['mean_abs']:.2f} | {100 * r['share_above']:.1f} % | {r['max_abs']:.0f} |"
                     + ((f" {acc:.2f} |" if acc is not None else " – |") if base else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories")
    ap.add_argument("--introduced", type=int, default=0, help="follow the classes first stored at this phase")
    ap.add_argument("--phases", type=int, nargs="+", help="later phases to compare (default: every sealed one)")
    ap.add_argument("--threshold", type=float, default=32.0, help="grey levels for the 'moved by more than' share")
    ap.add_argument("--out", help="also write the results as one JSON object here")
    args = ap.parse_args(argv)
    try:
        results = [run_drift(Path(r), args.introduced, args.phases, args.threshold) for r in args.runs]
    except UserError as e:
        raise SystemExit(f"exemplar_drift: {e}")
    print("\n\n".join(markdown(r) for r in results))
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
