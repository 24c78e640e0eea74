"""RUN/tb/: TensorBoard curves from the run's own records, continued across a SIGKILL and a resume, read
back with TensorBoard's own reader."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ["train.epochs=3", "train.base_epochs=3", "train.finetune_epochs=1", "protocol.base_classes=4",
       "protocol.phases=2", "exemplars.per_class=3", "data.image_size=16", "train.batch_size=32",
       "eval.batch_size=64", "exemplars.selection=optimised", "exemplars.optimised.epochs=1",
       "exemplars.optimised.unrolled.inner_steps=1", "exemplars.optimised.val_batch_size=16"]
EPOCH_TAGS = ["loss/train/loss", "loss/train/loss_ce", "loss/train/loss_kd", "train/lr", "train/img_s",
              "train/data_wait_share", "train/peak_mem_mb", "train/data_ms", "train/forward_ms", "train/backward_ms",
              "train/optimizer_ms", "loss/balanced_finetune/loss", "balanced_finetune/lr"]
PHASE_TAGS = ["eval/accuracy", "eval/accuracy_nme", "eval/accuracy_base", "eval/accuracy_old", "eval/accuracy_new",
              "eval/average_accuracy_so_far", "eval/forgetting_so_far", "eval/exemplars_s"]


def train(run, shards, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir",
                           str(run), f"data.shards={shards}", *RUN, *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env={**os.environ, **(env or {})})


def read(tb: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, digits_shards):
    run = tmp_path_factory.mktemp("tb") / "run"
    once = run.parent / "fault-once"
    # checkpoints at every epoch end but the last; killed after phase 1's third epoch, which resumes from the second:
    # the third epoch is written twice, and the resumed writer must hide the killed job's copy
    r = train(run, digits_shards, "train.checkpoint_minutes=0", env={"MNEMO_FAULT": "train:1:2",
                                                                  "MNEMO_FAULT_ONCE": str(once)})
    assert r.returncode != 0 and once.exists()
    r = train(run, digits_shards, "train.checkpoint_minutes=0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "phase 1: resuming from" in r.stderr and "after epoch 2" in r.stderr
    return run


def test_every_scalar_with_steps_strictly_increasing_across_the_resume(resumed_run):
    acc = read(resumed_run / "tb")
    tags = acc.Tags()["scalars"]
    missing = [t for t in EPOCH_TAGS + PHASE_TAGS if t not in tags]
    assert not missing, (missing, tags)
    assert "meta_loss/select_0-3/before" in tags and "meta_loss/select_0-3/after" in tags   # phase 0's group
    for tag in tags:
        steps = [e.step for e in acc.Scalars(tag)]
        assert all(a < b for a, b in zip(steps, steps[1:])), (tag, steps)
    assert len(acc.Scalars("loss/train/loss")) == 3 + 3 + 3       # every train epoch once, none twice
    assert len(acc.Scalars("loss/balanced_finetune/loss")) == 2


def test_phase_accuracies_equal_metrics_json_and_one_image_per_phase(resumed_run):
    acc = read(resumed_run / "tb")
    metrics = json.loads((resumed_run / "metrics.json").read_text())
    for key in ("accuracy", "accuracy_nme", "accuracy_base", "accuracy_new"):
        got = [e.value for e in acc.Scalars(f"eval/{key}")]
        assert got == pytest.approx([p[key] for p in metrics["phases"]], abs=1e-4), key
    assert acc.Scalars("eval/average_accuracy_so_far")[-1].value == pytest.approx(metrics["average_accuracy"], abs=1e-4)
    assert len(acc.Images("exemplars/new_classes")) == 3
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_tensorboard_off_and_an_unwritable_directory_never_stop_a_run(tmp_path, digits_shards):
    quick = ["protocol.phases=1", "train.epochs=1", "train.base_epochs=1", "exemplars.selection=herding"]
    r = train(tmp_path / "off", digits_shards, *quick, "logging.tensorboard=false")
    assert r.returncode == 0 and not (tmp_path / "off" / "tb").exists()
    run = tmp_path / "blocked"
    run.mkdir()
    (run / "tb").write_text("a file where the directory should be")
    r = train(run, digits_shards, *quick)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("TensorBoard:") == 1 and "the run goes on without RUN/tb" in r.stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "complete"
