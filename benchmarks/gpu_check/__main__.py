"""python -m benchmarks.gpu_check: run the checks (see benchmarks/gpu_check/__init__.py)."""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_check import BUDGET_S, CHECKS
from benchmarks.gpu_check import __doc__ as DOC
from benchmarks.gpu_check.common import PARTIAL_ENV

REPO = Path(__file__).resolve().parents[2]


def _check(name: str):
    from benchmarks.gpu_check import data_checks, model_checks, run_checks

    for module in (model_checks, data_checks, run_checks):
        if hasattr(module, f"check_{name}"):
            return getattr(module, f"check_{name}")
    raise KeyError(name)


def _one(name: str, smoke: bool) -> dict:
    with contextlib.redirect_stdout(sys.stderr):               # DeepSpeed prints op builds on stdout
        return _check(name)(smoke)


def _partial(path: Path) -> dict:
    """The figures a check wrote before it ended (later lines update earlier ones)."""
    out: dict = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.update(json.loads(line))
    return out


def _isolated(name: str, smoke: bool, timeout: float) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        partial = Path(tmp) / "partial.jsonl"
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--one", name] + (["--smoke"] if smoke else [])
        try:
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, PARTIAL_ENV: str(partial)})
            lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
            out = json.loads(lines[-1]) if r.returncode == 0 and lines else \
                {**_partial(partial), "error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:300]}
        except subprocess.TimeoutExpired:
            out = {**_partial(partial), "error": f"timed out after {timeout:.0f}s (figures above were measured)"}
    return {"check": name, "seconds": round(time.perf_counter() - t0, 1), **out}


def _meta(smoke: bool, budget_s: float) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "smoke": smoke,
            "gpu": gpu, "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "budget_s": budget_s, "host": platform.node()}


def _table(results: list[dict]) -> str:
    rows = []
    for r in results:
        figures = {k: v for k, v in r.items() if k not in ("check", "seconds", "where", "note")}
        rows.append(f"{r['check']:<10} {r['seconds']:>6.1f}s  " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes: proves the checks run")
    ap.add_argument("--budget-s", type=float, default=300, help="all checks together (default: 5 minutes)")
    ap.add_argument("--out", default=None, help="write the results as JSON here, after every check")
    ap.add_argument("--in-process", action="store_true",
                    help="run the checks in this process, one after another (the CPU smoke test: saves a torch "
                         "start-up per check; on a GPU each check gets a fresh process and its own time limit)")
    ap.add_argument("--one", choices=CHECKS, help=argparse.SUPPRESS)        # internal: run one check here
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(_one(a.one, a.smoke)))
        return 0
    scale = a.budget_s / sum(BUDGET_S[n] for n in a.only)
    report = {"meta": _meta(a.smoke, a.budget_s), "checks": []}
    for name in a.only:
        if a.in_process:
            t0 = time.perf_counter()
            try:
                got = _one(name, a.smoke)
            except Exception as e:  # one check's failure costs its own figures only
                got = {"error": f"{type(e).__name__}: {e}"[:300]}
            report["checks"].append({"check": name, "seconds": round(time.perf_counter() - t0, 1), **got})
        else:
            # the smoke run proves the code, not the time: a loaded CI machine gets room (5 min a check)
            report["checks"].append(_isolated(name, a.smoke, 300 if a.smoke else BUDGET_S[name] * scale))
        print(json.dumps(report["checks"][-1]), flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps(report, indent=1))
    print(_table(report["checks"]))
    return 0 if all(not r.get("error") for r in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
