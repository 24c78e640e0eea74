"""Do two sets of runs end on the same metrics? The check that a refactor changed nothing.

    python -m analysis.same_metrics BEFORE AFTER        # run dirs, or folders of run dirs matched by name

Compares each pair's metrics.json with its timings left out (`wall_s`, `timings` of every phase) and prints
one line per pair: `same`, or the first keys that differ. Exit status 1 when any pair differs or is missing.
Figures compare exactly only on one machine (float kernels differ between CPU kinds in the last bits).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TIMING_KEYS = ("wall_s", "timings")


def comparable(metrics: dict) -> dict:
    """metrics.json without what depends on the machine's speed."""
    return {**metrics, "phases": [{k: v for k, v in p.items() if k not in TIMING_KEYS}
                                  for p in metrics.get("phases", [])]}


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted paths where `a` and `b` differ (lists by index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]


def pairs(before: Path, after: Path) -> list[tuple[str, Path, Path]]:
    if (before / "metrics.json").is_file() or (after / "metrics.json").is_file():
        return [(after.name, before, after)]
    names = sorted({p.name for root in (before, after) for p in root.iterdir() if (p / "metrics.json").is_file()})
    return [(name, before / name, after / name) for name in names]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.same_metrics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    bad = 0
    for name, a, b in pairs(args.before, args.after):
        missing = [str(p) for p in (a, b) if not (p / "metrics.json").is_file()]
        if missing:
            print(f"{name}: missing {', '.join(missing)}")
            bad += 1
            continue
        diff = differences(*(comparable(json.loads((p / "metrics.json").read_text())) for p in (a, b)))
        print(f"{name}: " + ("same" if not diff else f"{len(diff)} differences, e.g. " + "; ".join(diff[:3])))
        bad += bool(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
