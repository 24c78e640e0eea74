"""benchmarks/gpu_check.py (scripts/gpu_check.sh) runs every check's code on CPU at toy sizes, so the
prepared GPU script cannot fail on a lent GPU for a reason a CPU could have shown."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_check_smoke_runs_every_check_and_prints_figures_or_why_not(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--in-process", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = {c["check"]: c for c in json.loads(out.read_text())}
    assert list(results) == ["synthetic", "syncs", "dali", "mnemonics", "nccl"]
    assert results["synthetic"]["img_s"] > 0 and results["synthetic"]["peak_mem_mb"] > 0
    assert results["syncs"]["skipped"].startswith("needs CUDA")
    dali = results["dali"]
    assert dali.get("skipped", "").startswith("DALI does not run") or (dali["decode_img_s"] > 0
                                                                       and dali["train_img_s_dali_fed"] > 0)
    assert results["mnemonics"]["step_s"] > 0 and "error" not in results["mnemonics"]
    assert "two GPUs" in results["nccl"]["skipped"]
    assert "synthetic" in r.stdout and "img_s=" in r.stdout          # the table


def test_on_a_gpu_each_check_runs_in_a_process_of_its_own(tmp_path):
    """The GPU run isolates every check (a crash or a hang costs that check only): one quick check
    through that path."""
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--only", "nccl", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (nccl,) = json.loads(out.read_text())
    assert nccl["check"] == "nccl" and "two GPUs" in nccl["skipped"] and nccl["seconds"] > 0
