"""`mnemo train ... data.loader=dali` end to end on the digits shards (DALI CPU pipelines), and how
data.loader resolves."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.epochs=1", "train.base_epochs=1", "train.finetune_epochs=1", "protocol.base_classes=6",
        "protocol.phases=1", "exemplars.per_class=5", "data.image_size=16", "train.batch_size=32",
        "eval.batch_size=64", "eval.nme=false"]


def test_train_with_the_dali_loader(tmp_path, digits_shards):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                        "--run-dir", str(run), f"data.shards={digits_shards}", *FAST, "data.loader=dali",
                        "data.exemplar_share=0.25"],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data.loader=dali: training stages use the dali loader" in r.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "complete" and [p["classes_seen"] for p in m["phases"]] == [6, 10]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "epoch" and e["stage"] == "train"]
    # phase 0: 6 classes x 40 images; phase 1: 4 x 40 real once each, in 7 batches of 24 real + 8 exemplars
    assert [e["images"] for e in train] == [240, 160 + 7 * 8]
    assert all(e["img_s"] > 0 for e in train)


def test_loader_resolution(monkeypatch, caplog):
    import torch

    from core.errors import UserError
    from data_pipeline.loading import loaders

    assert loaders.resolve_loader("torch") == "torch"
    monkeypatch.setattr(loaders, "dali_problem", lambda device_id=None: "ImportError: No module named 'nvidia'")
    monkeypatch.setattr(loaders, "_WARNED", set())
    with caplog.at_level("WARNING", logger=loaders.__name__):
        assert loaders.resolve_loader("auto") == "torch"
        assert loaders.resolve_loader("auto") == "torch"      # every stage asks; the warning comes once
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "torch loader runs instead" in warned[0] and "images/s" in warned[0]
    with pytest.raises(UserError, match="data.loader=dali but DALI does not work here .*ImportError"):
        loaders.resolve_loader("dali", torch.device("cpu"))
    monkeypatch.setattr(loaders, "dali_problem", lambda device_id=None: None)
    assert loaders.resolve_loader("auto") == "dali"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "configs" / "slurm").glob("*.yaml")))
def test_a_cluster_recipe_without_dali_stops_at_start_with_one_line(tmp_path, digits_shards, recipe):
    """The cluster recipes ask for DALI outright: on a node where it cannot run (here: its import blocked) the run
    stops before it writes anything, where data.loader=auto would train on at a fraction of the speed."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nsys.modules['nvidia.dali'] = None\n")
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", f"configs/slurm/{recipe}",
                        "--run-dir", str(run), f"data.shards={digits_shards}", *FAST],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}"})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    error = [line for line in r.stderr.splitlines() if "data.loader=dali but DALI does not work here" in line]
    assert len(error) == 1 and "nvidia.dali" in error[0], r.stderr[-3000:]
    assert not (run / "config.yaml").exists() and not (run / "metrics.json").exists()


def test_only_dali_pipeline_imports_nvidia_dali():
    import re

    pattern = re.compile(r"^\s*(import nvidia|from nvidia)", re.M)
    offenders = [str(p.relative_to(ROOT)) for d in ("data_pipeline", "trainer", "exemplars", "mnemo", "benchmarks",
                                                    "launch", "reporting")
                 for p in (ROOT / d).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == ["data_pipeline/loading/dali_pipeline.py"]


def test_dali_runs_stream_a_phase_larger_than_the_cache(tmp_path, digits_shards):
    """Over data.cache_max_gb, a DALI run never holds a phase in memory: training reads the shards,
    exemplar selection and evaluation decode one class group / chunk at a time. The results equal a run
    that caches everything; the torch loader refuses with the one-line cache message."""
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")

    def train(name, *extra):
        return subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                               "--run-dir", str(tmp_path / name), f"data.shards={digits_shards}", *FAST,
                               "eval.nme=true", *extra], capture_output=True, text=True, cwd=ROOT, timeout=900)

    tiny = "data.cache_max_gb=0.00001"          # ~10 KB: less than one class of 16 px digits
    r = train("streamed", "data.loader=dali", tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    r = train("cached", "data.loader=dali")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("streamed", "cached"))
    for key in ("accuracy", "accuracy_nme", "accuracy_base", "acc_row"):
        assert [p.get(key) for p in a["phases"]] == [p.get(key) for p in b["phases"]], key
    r = train("torch", "data.loader=torch", tiny)
    assert r.returncode == 2 and "over data.cache_max_gb=1e-05" in r.stderr and "Traceback" not in r.stderr


def test_imagenet1k_b500_recipe_runs_streamed_on_the_full_size_fixture(tmp_path, imagenet_fixture):
    """The ImageNet-1k B500 recipe over 1,000 synsets (one increment of 500, to keep the suite short) with
    DALI and a cache far below one phase: phase 0 (500 classes) trains from the shards, selects
    exemplars group by group (random: each group decodes only the images it keeps) and evaluates
    through the DALI eval pipeline; phase 1 mixes the exemplars, centre-cropped to
    the model's input side, into DALI's random-resized-crop batches (this crashed before: the
    exemplars kept the 256/224-larger stored side)."""
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    _, manifest = imagenet_fixture
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/imagenet1k_b500_5.yaml",
                        "--run-dir", str(run), f"data.shards={manifest.root}", "data.loader=dali",
                        "data.cache_max_gb=0.0001", "protocol.phases=1", "data.image_size=32", "model.arch=resnet20", "train.epochs=1",
                        "train.finetune_epochs=1", "train.batch_size=64", "exemplars.per_class=1",
                        "exemplars.selection=random",      # decodes 1 image a class (LazyImages), not all
                        "exemplars.group_size=50", "eval.batch_size=256"],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "complete" and [p["classes_seen"] for p in m["phases"]] == [500, 1000]
    assert m["phases"][-1]["exemplars_total"] == 1000
    import torch
    bank = torch.load(run / "phases" / "p01" / "memory.pt", weights_only=False)["bank"]
    assert {tuple(x.shape[1:]) for x in bank.values()} == {(3, 32, 32)}


@pytest.mark.parametrize("validation", ["memory", "arrival"])
def test_bic_streams_its_split_of_a_phase_larger_than_the_cache(tmp_path, digits_shards, validation):
    """BiC's held-out split is cut by position, not out of decoded images: with DALI and a cache smaller than a
    class, both of its stages train from the shards (the in-memory loader would refuse the phase less its split
    with the one-line cache message), and the arrival form decodes only the images it sets apart."""
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    run = tmp_path / validation
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml",
                        "--run-dir", str(run), f"data.shards={digits_shards}", *FAST, "data.loader=dali",
                        "data.cache_max_gb=0.00001", "strategy.name=bic", f"strategy.bic.validation={validation}",
                        "strategy.bic.arrival_per_class=2", "strategy.bic.bias_epochs=2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "complete"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    epochs = [(e["phase"], e["stage"], e["images"]) for e in events if e["event"] == "epoch"]
    # the bias stage's images: 2 set apart of each of the 10 classes seen, or 1 (of 5) of each old class's exemplars
    # and as many of each new class's images
    held = 2 * 10 if validation == "arrival" else 1 * 10
    phase0 = 240 - 2 * 6 if validation == "arrival" else 240
    assert epochs[0] == (0, "train", phase0) and epochs[-1] == (1, "bias", held)
    stages = [(e["phase"], e["stage"], e["loader"]) for e in events if e["event"] == "stage"]
    # the arrival set is held decoded in the strategy's state (a few images a class), so its bias stage trains from
    # memory
    bias = "torch" if validation == "arrival" else "dali"
    assert stages == [(0, "train", "dali"), (1, "train", "dali"), (1, "bias", bias)]
