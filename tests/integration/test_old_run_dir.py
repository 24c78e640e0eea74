"""A run directory written before the layout change (trainer/ as one flat package, checkpoints read with
the full unpickler) still resumes, mid-phase, and ends on the recorded metrics of that resume.

tests/fixtures/old_layout_run was written by commit ddcb3a5 on the digits fixture (this file's FIX), killed
by MNEMO_FAULT=train:1:0 after epoch 1 of phase 1: a sealed phase 0, an in-phase DeepSpeed checkpoint and
extra-*.pt of phase 1 (made on a 2 vCPU AMD EPYC). The float kernels, and so the last digits of a run, depend
on the CPU kind, so the end metrics are recorded per kind in tests/fixtures/old_layout_run.expected/:
- amd-epyc.json: the same command at ddcb3a5 without the kill, on the EPYC: the old code's own numbers.
- intel-amx.json: this resume at e32c598 on a 2 vCPU Intel Xeon with AMX (the CI kind from stop 29 on).
  There ddcb3a5's own resume of the fixture and the layout refactor's (36af3bf) end on identical metrics;
  d231578 (the cluster issue: parameters in the default layout, channels_last input) changes which oneDNN
  kernels run, phase 1's epoch-2 loss 0.9544 -> 0.9545 and its NME accuracy by a point, and d231578 and
  e32c598 again end identical. On the EPYC the layout change moved none of these metrics.
On a CPU kind with no recording the resume still has to complete with phase 0 read back unchanged; the
exact comparison is then skipped, naming the kind (record it with this command on a quiet machine of it)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "old_layout_run"
EXPECTED = ROOT / "tests" / "fixtures" / "old_layout_run.expected"
FIX = ["train.epochs=2", "train.base_epochs=2", "train.finetune_epochs=1", "protocol.base_classes=4",
       "protocol.phases=1", "exemplars.per_class=3", "data.image_size=16", "train.batch_size=32", "eval.batch_size=64",
       "exemplars.selection=mnemonics", "exemplars.adjust_old=true", "exemplars.mnemonics.epochs=1",
       "exemplars.mnemonics.inner_steps=1"]
# What that run's exemplar level was, now that selection=mnemonics defaults to the recommended objective and Eq. 10
# has its own outer loop (issue 20): the paper's objective at glyphs.yaml's β1 of then, Eq. 10 on Eq. 9's loop.
THEN = ["exemplars.mnemonics.objective=unrolled", "exemplars.mnemonics.lr=10", "exemplars.mnemonics.init=random",
        "exemplars.mnemonics.momentum=0", "exemplars.mnemonics.augment=false", "exemplars.mnemonics.steps_per_epoch=1",
        "exemplars.mnemonics.adjust_epochs=null", "exemplars.mnemonics.adjust_steps_per_epoch=null",
        "exemplars.mnemonics.adjust_lr_halve_every=null"]


def cpu_kind(cpuinfo: str) -> str:
    """The recording's name for this CPU ('amd-epyc', 'intel-amx'), else '<vendor> <model name>'."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    vendor, model, flags = fields.get("vendor_id", "?"), fields.get("model name", "?"), fields.get("flags", "").split()
    if vendor == "AuthenticAMD" and "EPYC" in model:
        return "amd-epyc"
    if vendor == "GenuineIntel" and "amx_tile" in flags:
        return "intel-amx"
    return f"{vendor} {model}"


def comparable(m: dict) -> dict:
    return {**m, "phases": [{k: v for k, v in p.items() if k not in ("wall_s", "timings")} for p in m["phases"]]}


def test_cpu_kind_names_the_recorded_kinds():
    epyc = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n"
    amx = "vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f amx_tile\n"
    plain = "vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7\nflags\t\t: avx2\n"
    assert (cpu_kind(epyc), cpu_kind(amx), cpu_kind(plain)) == ("amd-epyc", "intel-amx", "GenuineIntel Intel(R) Core(TM) i7")


def test_an_old_layout_run_directory_resumes_mid_phase_to_the_same_metrics(tmp_path, digits_shards):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)

    def train(*extra):
        return subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                               "--run-dir", str(run), f"data.shards={digits_shards}", *FIX, *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    # the same command now means another exemplar level: refused, naming what to restore, nothing written
    refused = train()
    assert refused.returncode == 2 and "exemplars.mnemonics.objective ('unrolled' -> 'prototype')" in refused.stderr
    assert "Traceback" not in refused.stderr and not (run / "phases" / "p01").exists()
    r = train(*THEN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "phase 1: resuming from" in r.stderr and "after epoch 1" in r.stderr
    got = comparable(json.loads((run / "metrics.json").read_text()))
    sealed = comparable(json.loads((FIXTURE / "metrics.json").read_text()))
    assert got["status"] == "complete" and [p["phase"] for p in got["phases"]] == [0, 1]
    assert got["phases"][0] == sealed["phases"][0]          # phase 0 is read back, not recomputed

    kind = cpu_kind(Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "")
    recorded = EXPECTED / f"{kind}.json"
    if not recorded.exists():
        pytest.skip(f"no recorded metrics for CPU kind {kind!r} (recorded: "
                    f"{sorted(p.stem for p in EXPECTED.glob('*.json'))}); the resume completed")
    expected = comparable(json.loads(recorded.read_text()))
    assert got == expected, (f"differs from the recorded resume on {kind}\n{got['phases']}\n{expected['phases']}")
