"""End-to-end class-incremental runs on a small real data set (digits), through the real CLI path."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.epochs=1", "train.base_epochs=2", "train.finetune_epochs=1", "protocol.base_classes=4",
        "protocol.phases=3", "exemplars.per_class=5", "data.image_size=16", "train.batch_size=32", "eval.batch_size=64"]


def train(run_dir, shards, *extra):
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                        "--run-dir", str(run_dir), f"data.shards={shards}", *FAST, *extra],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def herding_run(tmp_path_factory, digits_shards):
    run = tmp_path_factory.mktemp("runs") / "herding"
    r = train(run, digits_shards)
    return run, r


def test_run_directory_layout_and_metrics_schema(herding_run):
    run, r = herding_run
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "complete" and m["phases_done"] == 4
    assert [p["phase"] for p in m["phases"]] == [0, 1, 2, 3]
    assert [p["classes_seen"] for p in m["phases"]] == [4, 6, 8, 10]
    for p in m["phases"]:
        for key in ("accuracy", "accuracy_nme", "accuracy_base", "accuracy_new"):
            assert 0.0 <= p[key] <= 100.0
        assert p["exemplars_per_class"] == 5
    assert m["phases"][-1]["exemplars_total"] == 50
    assert [len(row) for row in m["acc_matrix"]] == [1, 2, 3, 4]
    assert m["average_accuracy"] == pytest.approx(sum(p["accuracy"] for p in m["phases"]) / 4, abs=1e-3)
    assert m["forgetting"] == pytest.approx(m["phases"][0]["accuracy_base"] - m["phases"][-1]["accuracy_base"], abs=1e-3)
    for ph in range(4):
        assert (run / "phases" / f"p{ph:02d}" / "DONE").is_file()
    events = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert {e["stage"] for e in epochs} == {"train", "balanced_finetune"}
    assert all(e["img_s"] > 0 and 0 <= e["data_wait_share"] <= 1 for e in epochs)
    cfg = (run / "config.yaml").read_text()
    assert "git_sha" in cfg and "class_order_seed: 1993" in cfg
    assert "average incremental accuracy" in r.stderr


def test_rerun_is_a_no_op_and_resume_reproduces_the_last_phase(herding_run, digits_shards, tmp_path):
    run, _ = herding_run
    before = json.loads((run / "metrics.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "phases" / "p03")
    r = train(copy, digits_shards)
    assert "resuming" in r.stderr and "after sealed phase 2" in r.stderr
    after = json.loads((copy / "metrics.json").read_text())
    for a, b in zip(before["phases"], after["phases"]):
        a, b = dict(a), dict(b)
        for x in (a, b):
            x.pop("wall_s"), x.pop("timings")
        assert a == b
    assert before["average_accuracy"] == after["average_accuracy"]


def test_resume_refuses_a_changed_protocol(herding_run, digits_shards):
    run, _ = herding_run
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                        "--run-dir", str(run), f"data.shards={digits_shards}", *FAST, "protocol.phases=6"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "protocol.phases (3 -> 6)" in r.stderr


@pytest.mark.parametrize("extra,expect_nme,total", [
    (["strategy.name=finetune"], False, 0),
    (["strategy.name=joint"], False, 0),
    (["exemplars.selection=random", "exemplars.budget=30"], True, 30),
])
def test_bounds_and_memory_modes(tmp_path, digits_shards, extra, expect_nme, total):
    run = tmp_path / "run"
    train(run, digits_shards, "protocol.phases=1", "protocol.base_classes=6", *extra)
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "complete"
    assert (m["phases"][-1].get("accuracy_nme") is not None) == expect_nme
    assert m["phases"][-1]["exemplars_total"] == total
    if total:
        assert [p["exemplars_per_class"] for p in m["phases"]] == [5, 3]     # 30 // 6, then 30 // 10


def _strip(phases):
    out = []
    for p in phases:
        p = dict(p)
        p.pop("wall_s"), p.pop("timings")
        out.append(p)
    return out


def test_base_from_reuses_phase_0_and_reproduces_the_base_run(herding_run, digits_shards, tmp_path):
    """train.base_from: the same config started from the base run's phase 0 equals the base run
    (later phases never depend on RNG state left by earlier ones); phase-0 training is skipped."""
    run, _ = herding_run
    before = json.loads((run / "metrics.json").read_text())
    r = train(tmp_path / "shared", digits_shards, f"train.base_from={run}")
    assert "reusing the trained model" in r.stderr
    after = json.loads((tmp_path / "shared" / "metrics.json").read_text())
    assert _strip(after["phases"]) == _strip(before["phases"])
    assert "train_s" not in after["phases"][0]["timings"] and "train_s" in before["phases"][0]["timings"]
    # a different exemplar level may share the base: phase 0's network accuracy is the base's
    r = train(tmp_path / "random", digits_shards, f"train.base_from={run}", "exemplars.selection=random")
    other = json.loads((tmp_path / "random" / "metrics.json").read_text())
    assert other["phases"][0]["accuracy"] == before["phases"][0]["accuracy"]
    import torch
    bank = lambda d: torch.load(d / "phases" / "p00" / "memory.pt", weights_only=False)["bank"]  # noqa: E731
    a, b = bank(run), bank(tmp_path / "random")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


def test_base_from_refuses_a_base_trained_differently(herding_run, digits_shards, tmp_path):
    run, _ = herding_run
    cmd = [sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir",
           str(tmp_path / "x"), f"data.shards={digits_shards}", *FAST]
    r = subprocess.run(cmd + [f"train.base_from={run}", "seed=3"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "seed (0 there, 3 here)" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
    r = subprocess.run(cmd + [f"train.base_from={tmp_path / 'nowhere'}"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 2 and "its phase 0 is not usable" in r.stderr


def test_a_run_past_phase_0_resumes_without_its_base(herding_run, digits_shards, tmp_path):
    run, _ = herding_run
    base = tmp_path / "base"
    shutil.copytree(run, base)
    child = tmp_path / "child"
    train(child, digits_shards, f"train.base_from={base}")
    shutil.rmtree(child / "phases" / "p03")
    shutil.rmtree(base)                                 # the base is gone: phase 0 of the child is sealed
    r = train(child, digits_shards, f"train.base_from={base}")
    assert "after sealed phase 2" in r.stderr
