"""Throughput profiling and `mnemo report` on small real runs (digits), through the real CLI.

Two runs, made once for the module: LwF with herding exemplars, made by `mnemo profile e2e` (which
also checks that benchmark), and fine-tuning without exemplars, made by `mnemo train`.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from reporting.build import ReportOptions, build_report

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.image_size=16", "train.batch_size=32", "eval.batch_size=64", "exemplars.per_class=4",
        "protocol.base_classes=4", "protocol.num_classes=6", "protocol.phases=1"]
FIGURES = ("accuracy_curves.png", "tsne.png", "exemplars.png", "time_split.png", "throughput.png")


def mnemo(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mnemo.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def last_json(stdout: str) -> dict:
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got: {stdout[-2000:]}"
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_shards):
    root = tmp_path_factory.mktemp("report_runs")
    herding, finetune = root / "herding", root / "finetune"
    r = mnemo("profile", "e2e", "--shards", digits_shards, "--run-dir", herding, "--phases", "1", "--epochs", "1",
              *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    e2e = last_json(r.stdout)
    r = mnemo("train", "--config", "configs/glyphs.yaml", "--run-dir", finetune, f"data.shards={digits_shards}",
              "train.epochs=1", "train.base_epochs=1", "strategy.name=finetune", *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    return herding, finetune, e2e


def check_figures(out: Path, names) -> str:
    md = (out / "report.md").read_text()
    for name in names:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200, name
        assert f"]({name})" in md, f"{name} is not embedded in report.md"
    return md


def test_e2e_profile_reports_the_time_split(runs):
    _, _, e2e = runs
    assert e2e["target"] == "e2e" and e2e["phases"] == 2 and e2e["strategy"] == "lwf"
    split = e2e["split_s"]
    assert set(split) == {"train", "exemplars", "balanced_finetune", "eval", "engine_setup", "other"}
    assert sum(split.values()) == pytest.approx(e2e["wall_s"], abs=0.05)
    assert e2e["stages"]["train"]["img_s"] > 0 and e2e["stages"]["balanced_finetune"]["img_s"] > 0
    assert [p["phase"] for p in e2e["per_phase"]] == [0, 1]


def test_every_run_writes_step_split_and_profile_json(runs):
    herding, _, _ = runs
    epochs = [json.loads(l) for l in (herding / "events.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["event"] == "epoch"]
    assert {e["stage"] for e in epochs} == {"train", "balanced_finetune"}
    for e in epochs:
        parts_s = sum(e[f"{p}_ms"] for p in ("data", "forward", "backward", "optimizer", "other")) * e["steps"] / 1000
        assert e["forward_ms"] > 0 and e["backward_ms"] > 0 and e["optimizer_ms"] > 0
        assert parts_s <= e["seconds"] * 1.05 + 0.01
        assert e["img_s_per_rank"] == [e["img_s"]] and len(e["peak_mem_mb_per_rank"]) == 1
    prof = json.loads((herding / "profile.json").read_text())
    assert [p["phase"] for p in prof["phases"]] == [0, 1]
    p1 = prof["phases"][1]
    assert set(p1["split_s"]) == {"train", "exemplars", "balanced_finetune", "eval", "engine_setup", "other"}
    assert p1["stages"]["train"]["clock"] == "host" and p1["exemplars"]["selection"] == "herding"
    metrics = json.loads((herding / "metrics.json").read_text())
    assert p1["wall_s"] == metrics["phases"][1]["wall_s"]


def test_report_of_one_run(runs):
    herding, _, _ = runs
    r = mnemo("report", herding, "--tsne-per-class", 15)            # one run: RUN/report by default
    assert r.returncode == 0, r.stderr[-3000:]
    out = herding / "report"
    md = check_figures(out, FIGURES)
    m = json.loads((herding / "metrics.json").read_text())
    assert f"{m['average_accuracy']:.2f}" in md and "| LwF w/ herding |" in md
    assert "paper Table 2 layout" in md and "herding w/o adj." in md
    assert "### Notes" not in md                                      # a complete run has nothing to flag


def test_report_of_several_runs(runs, tmp_path):
    herding, finetune, _ = runs
    out = tmp_path / "cmp"
    build_report([herding, finetune], out, ReportOptions(tsne_per_class=15, tsne_phases=[0, 1]))   # in-process
    md = check_figures(out, FIGURES)
    for name in ("`herding`", "`finetune`", "| Fine-tune |", "| LwF w/ herding |"):
        assert name in md
    assert md.count("### `finetune`") == 2                           # per-phase accuracy and time split


def test_partial_damaged_and_unfinished_runs_are_noted_not_fatal(runs, tmp_path):
    herding, finetune, _ = runs
    partial, damaged, fresh = tmp_path / "partial", tmp_path / "damaged", tmp_path / "fresh"
    shutil.copytree(herding, partial, ignore=shutil.ignore_patterns("report"))
    m = json.loads((partial / "metrics.json").read_text())           # as after a crash in phase 1
    m["phases"], m["acc_matrix"], m["status"], m["phases_done"] = m["phases"][:1], m["acc_matrix"][:1], "running", 1
    (partial / "metrics.json").write_text(json.dumps(m))
    shutil.rmtree(partial / "phases" / "p01")
    shutil.copytree(finetune, damaged, ignore=shutil.ignore_patterns("report"))
    (damaged / "phases" / "p01" / "DONE").unlink()
    fresh.mkdir()
    shutil.copy(herding / "config.yaml", fresh / "config.yaml")      # started, no phase finished
    out = tmp_path / "out"
    build_report([partial, damaged, fresh], out, ReportOptions(tsne_per_class=10))
    md = check_figures(out, ("accuracy_curves.png", "tsne.png", "time_split.png"))
    assert "`partial`: partial run: 1 of 2 phases finished (phase 1 not yet)" in md
    assert "`damaged`: phase 1: sealed directory phases/p01 is unusable (no DONE marker)" in md
    assert "`fresh`: no phase has finished (no metrics.json)" in md
    assert "| 1 | – | not run |" in md                               # the partial run's missing phase


@pytest.mark.parametrize("make,needle", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "is not a run directory (no config.yaml, metrics.json or phases/)"),
])
def test_a_path_that_is_not_a_run_is_a_one_line_error(tmp_path, make, needle):
    path = make(tmp_path / "nope")
    r = mnemo("report", path, "--out", tmp_path / "out", timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("mnemo: error: ") and needle in lines[0], r.stderr


def test_profile_train_prints_json_and_writes_a_trace(tmp_path):
    r = mnemo("profile", "train", "--arch", "resnet32", "--size", 32, "--batch-size", 8, "--steps", 2, "--warmup", 1,
              "--trace", tmp_path / "trace", "--trace-steps", 1)
    assert r.returncode == 0, r.stderr[-3000:]
    out = last_json(r.stdout)
    for key in ("img_s", "step_ms", "split_ms", "split_share", "peak_mem_mb", "precision", "memory_format",
                "device", "threads", "batch_size", "image_size", "arch"):
        assert key in out, key
    assert out["arch"] == "resnet32" and out["image_size"] == 32 and out["img_s"] > 0
    assert set(out["split_ms"]) == {"forward", "backward", "optimizer"} and all(v > 0 for v in out["split_ms"].values())
    trace = json.loads(Path(out["trace"]).read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert "train_step" in names and any(str(n).startswith("aten::conv") for n in names)


def test_exemplar_transfer_compares_exemplar_sets_on_one_theta(runs, tmp_path, capsys):
    """analysis/exemplar_transfer.py on a real sealed phase: rows per run x split x BN regime x T',
    identical exemplars give identical rows, T' = 0 does not depend on the exemplars, and training
    Θ' on the exemplars changes its loss."""
    from analysis.exemplar_transfer import main as transfer

    herding, finetune, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(herding, copy)
    out = tmp_path / "transfer.json"
    assert transfer([str(herding), str(copy), "--horizons", "0", "3", "--inner-lr", "0.1",
                     "--bn", "batch", "running", "--out", str(out)]) == 0
    assert "| held-out | running | 0.1 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * 2 * 2
    key = lambda r: (r["split"], r["bn"], r["T"])  # noqa: E731
    a = {key(r): r for r in rows if r["run"] == str(herding)}
    b = {key(r): r for r in rows if r["run"] == str(copy)}
    assert a == {k: {**v, "run": str(herding)} for k, v in b.items()}
    assert {r["images"] for r in rows if r["split"] == "seen"} == {4 * 40}       # 4 base classes, digits
    assert {r["images"] for r in rows if r["split"] == "held-out"} == {4 * 10}
    for split in ("seen", "held-out"):
        for bn in ("batch", "running"):
            assert 0.0 <= a[split, bn, 0]["acc"] <= a[split, bn, 0]["acc_in_group"] <= 100.0
            assert a[split, bn, 3]["ce"] != pytest.approx(a[split, bn, 0]["ce"], rel=1e-6)
    assert a["seen", "batch", 0]["ce"] != pytest.approx(a["seen", "running", 0]["ce"], rel=1e-6)
    # a run without exemplars: a one-line error naming it, exit 2
    assert transfer([str(herding), str(finetune)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(finetune) in err[0], err


def test_exemplar_quality_trains_on_the_memory_alone(runs, tmp_path, capsys):
    """analysis/exemplar_quality.py on a real sealed phase 1: a fresh network and Θ_0 trained on the
    memory, scored on held-out images of every seen class; the same memory gives the same rows, and a
    run without exemplars is a one-line error."""
    from analysis.exemplar_quality import main as quality

    herding, finetune, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(herding, copy)
    out = tmp_path / "quality.json"
    assert quality([str(herding), str(copy), "--phase", "1", "--epochs", "2", "--out", str(out)]) == 0
    assert "| previous |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["run"]) for r in rows] == [(m, str(run)) for run in (herding, copy)
                                                      for m in ("fresh", "previous")]
    strip = lambda r: {k: v for k, v in r.items() if k != "run"}  # noqa: E731
    assert [strip(r) for r in rows[:2]] == [strip(r) for r in rows[2:]]
    for r in rows:
        assert 0.0 <= r["acc"] <= 100.0 and r["acc_old"] is not None
    assert rows[1]["acc_old"] != rows[0]["acc_old"]            # Θ_0 knows the old classes, a fresh net does not
    assert quality([str(finetune), "--phase", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(finetune) in err[0], err


def test_objective_cost_times_every_objective_and_projects_it():
    from benchmarks.cluster_estimate import Costs
    from benchmarks.mnemonics_profile import OBJECTIVES
    from benchmarks.mnemonics_profile import measure_objective as measure
    from benchmarks.mnemonics_profile import project_objectives as project

    rows = measure(32, 1, torch.device("cpu"), repeats=1, per_class=2, batch=8)
    assert len(rows) == len(OBJECTIVES)
    assert all(r["step_s"] > 0 and r["train_images_per_step"] > 0 for r in rows)
    fake = [{**r, "size": 224} for r in rows]
    projected = project(fake, 100_000, Costs())
    assert len(projected) == len(OBJECTIVES)
    for p in projected:
        assert 0 < p["phase_1"]["share"] < 1 and p["phase_0"]["exemplar_level_s"] > p["phase_1"]["exemplar_level_s"]
