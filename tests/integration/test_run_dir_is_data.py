"""A run directory is data, never code: a pickle planted in a sealed phase (its DONE sizes kept
consistent) is refused with a one-line error on resume and on `mnemo report`, and never runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from trainer.config import load_config
from trainer.run.driver import run
from trainer.run.storage import checkpoint_io

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.epochs=1", "train.base_epochs=1", "train.finetune_epochs=1", "protocol.base_classes=4",
        "protocol.phases=1", "exemplars.per_class=2", "data.image_size=16", "train.batch_size=32",
        "eval.batch_size=64"]


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    """Replace a checkpoint file with a pickle that runs a shell command, and keep DONE consistent."""
    torch.save({"bank": {0: Payload(marker)}}, path)
    done = path.parent / "DONE"
    if done.is_file():
        d = json.loads(done.read_text())
        d["files"][path.name] = path.stat().st_size
        done.write_text(json.dumps(d))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_shards):
    path = tmp_path_factory.mktemp("runs") / "run"
    cfg = load_config("configs/glyphs.yaml", [f"data.shards={digits_shards}", *FAST])
    assert run(cfg, path)["status"] == "complete"
    return path, cfg


def _mnemo(*args):
    return subprocess.run([sys.executable, "-m", "mnemo.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_a_planted_pickle_is_refused_on_resume_and_report(finished_run, tmp_path, digits_shards):
    path, _ = finished_run
    marker = tmp_path / "payload-ran"
    for name in ("model.pt", "memory.pt"):
        plant(path / "phases" / "p01" / name, marker)
    r = _mnemo("train", "--config", "configs/glyphs.yaml", "--run-dir", str(path), f"data.shards={digits_shards}",
               *FAST)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("mnemo: error: ") and "holds more than tensors" in err and "Traceback" not in r.stderr
    r = _mnemo("report", str(path), "--no-tsne", "--out", str(tmp_path / "report"))
    assert r.returncode == 2 and "holds more than tensors" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_an_engine_checkpoint_is_read_safely_before_deepspeed_sees_it(tmp_path):
    (tmp_path / "tag").mkdir()
    torch.save({"module": {"w": torch.zeros(2)}}, tmp_path / "tag" / "mp_rank_00_model_states.pt")
    checkpoint_io.check_engine_checkpoint(tmp_path / "tag")          # tensors and containers: fine
    marker = tmp_path / "payload-ran"
    plant(tmp_path / "tag" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker)
    with pytest.raises(UserError, match="holds more than tensors"):
        checkpoint_io.check_engine_checkpoint(tmp_path / "tag")
    assert not marker.exists()
