"""benchmarks/gpu_check (scripts/gpu_check.sh) runs every check's code on CPU at toy sizes, so the prepared GPU
script cannot fail on a lent GPU for a reason a CPU could have shown, and the cluster estimate reads what it
writes (`--from`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--in-process", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500, env=ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out, r.stdout


def test_the_smoke_run_runs_every_check_and_prints_every_input_of_the_estimate(smoke):
    out, stdout = smoke
    report = json.loads(out.read_text())
    assert report["meta"]["smoke"] and report["meta"]["torch"]
    c = {check["check"]: check for check in report["checks"]}
    assert list(c) == ["train", "epochs", "decode", "herding", "stored", "copies", "bank", "syncs", "resume",
                       "mnemonics", "nccl"]
    for batch in ("batch_8", "batch_16"):
        t = c["train"][batch]
        assert t["img_s_with_teacher"] > 0 and t["img_s_without_teacher"] > 0 and t["engine_setup_s"] >= 0
        assert t["first_step_s"] > 0
    assert c["train"]["teacher_factor"] > 0
    assert len(c["epochs"]["epoch_end_s"]) == 3 and all(s > 0 for s in c["epochs"]["save_s"])
    assert all(e >= s for e, s in zip(c["epochs"]["epoch_end_s"], c["epochs"]["save_s"]))
    assert c["epochs"]["checkpoint_mb"] > 0
    d = c["decode"]
    assert d["read_img_s"] > 0 and d["cpu_decode_img_s"] > 0 and d["gpu_decode_img_s"] > 0 and d["images"] == 100
    assert "dali_decode_img_s" in d or d["dali"].startswith("does not run here")
    assert c["herding"]["feature_img_s"] > 0 and c["copies"]["staged_gb_s"] > 0
    s = c["stored"]
    assert s["png_img_s"] > 0 and s["lowres_img_s"] > 0
    assert s["png_max_levels_off_host"] == 0 and s["lowres_max_levels_off_host"] == 0     # the same device here
    assert c["bank"]["step_ok"] and c["bank"]["to_device_gb_s"] > 0
    assert c["syncs"]["skipped"].startswith("needs CUDA")
    r = c["resume"]
    assert r["killed"] and r["resumed_equals_uninterrupted"] and r["average_accuracy"] == r["resumed_average_accuracy"]
    assert c["mnemonics"]["step_s"] > 0 and "error" not in c["mnemonics"]
    assert "two GPUs" in c["nccl"]["skipped"]
    assert "train" in stdout and "img_s_with_teacher" in stdout                # the table


def test_the_estimate_reads_a_gpu_check_and_marks_what_it_measured(smoke, tmp_path):
    from benchmarks.cluster_estimate import main

    out, _ = smoke
    report = json.loads(out.read_text())
    # the smoke run's figures stand in for a GPU's: the estimate refuses them as they are (toy sizes)
    assert main(["--from", str(out)]) == 2
    report["meta"].update(smoke=False, gpu="a stand-in for a GPU (CPU smoke figures)")
    report["checks"] = [{**c, "batch_64": c.get("batch_8")} if c["check"] == "train" else c
                        for c in report["checks"]]
    stand_in = tmp_path / "gpu_check.json"
    stand_in.write_text(json.dumps(report))
    r = subprocess.run([sys.executable, "-m", "benchmarks.cluster_estimate", "--from", str(stand_in), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert e["costs"]["gpu_img_s"] == checks["train"]["batch_8"]["img_s_without_teacher"]
    assert e["costs"]["teacher_factor"] == checks["train"]["teacher_factor"]
    assert e["costs"]["feature_img_s"] == checks["herding"]["feature_img_s"]
    assert e["costs"]["pil_img_s"] == checks["decode"]["cpu_decode_img_s"] / 8
    for name in ("gpu_img_s", "teacher_factor", "engine_setup_s", "first_step_s", "checkpoint_s", "epoch_end_s",
                 "nvjpeg_img_s", "pil_img_s", "feature_img_s", "staged_gb_s"):
        assert e["sources"][name].startswith("measured on a stand-in"), (name, e["sources"][name])
    assert e["sources"]["job_start_s"] == "assumed"
    r = subprocess.run([sys.executable, "-m", "benchmarks.cluster_estimate", "--from", str(tmp_path / "none.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a gpu_check result" in r.stderr


def test_the_estimate_adds_the_teacher_the_epoch_ends_the_all_reduce_and_the_queue():
    from benchmarks.cluster_estimate import Costs, estimate

    base = estimate(Costs())
    assert estimate(Costs(teacher_factor=1.0))["phase_1"]["seconds"]["train"] < base["phase_1"]["seconds"]["train"]
    assert estimate(Costs(teacher_factor=1.0))["phase_0"]["seconds"]["train"] == base["phase_0"]["seconds"]["train"]
    assert base["phase_1"]["seconds"]["epoch_ends"] > 0 and base["phase_1"]["allreduce_s"] > 0
    one_node = estimate(Costs(nodes=1))
    assert one_node["phase_1"]["allreduce_s"] < base["phase_1"]["allreduce_s"]
    queued = estimate(Costs(queue_wait_s=600))
    assert queued["total_h"] == pytest.approx(base["total_h"] + 26 * 600 / 3600, abs=0.02)


def test_on_a_gpu_each_check_runs_in_a_process_of_its_own_and_a_cut_off_check_keeps_its_figures(tmp_path):
    """The GPU run isolates every check (a crash or a hang costs that check only); a check cut off by its time limit
    ends in an error that says so, beside the figures it had written (merged from its partial file)."""
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--only", "nccl", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (nccl,) = json.loads(out.read_text())["checks"]
    assert nccl["check"] == "nccl" and "two GPUs" in nccl["skipped"] and nccl["seconds"] > 0
    from benchmarks.gpu_check.__main__ import _isolated, _partial
    from benchmarks.gpu_check.common import PARTIAL_ENV, emit

    cut = _isolated("resume", True, timeout=5)             # three glyph runs: far over 5 s
    assert cut["check"] == "resume" and cut["error"].startswith("timed out after 5s")

    partial = tmp_path / "partial.jsonl"
    os.environ[PARTIAL_ENV] = str(partial)
    try:
        emit(images=100, read_img_s=5.0)
        emit(images=100, read_img_s=5.0, cpu_decode_img_s=7.0)
    finally:
        del os.environ[PARTIAL_ENV]
    assert _partial(partial) == {"images": 100, "read_img_s": 5.0, "cpu_decode_img_s": 7.0}
