"""Step timing and the per-phase profile derived from events (no training: marks and event lines)."""
import json

import pytest
import torch

from trainer.engine.step_timer import PARTS, StepTimer
from trainer.run.run_profile import build_profile, combine_epochs, split_of


def _spin(seconds: float) -> None:
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_marks_charge_each_part_and_the_epoch_adds_up():
    timer = StepTimer(torch.device("cpu"))
    for _ in range(3):
        timer.mark("data")
        _spin(0.002)
        timer.mark("forward")
        _spin(0.004)
        timer.mark("backward")
        timer.mark("optimizer")
        timer.mark("other")
    ev = timer.end_epoch(images=24)
    assert ev["steps"] == 3 and ev["images"] == 24 and ev["images_per_rank"] == [24]
    assert ev["backward_ms"] >= 4.0 and ev["forward_ms"] >= 2.0          # time since the previous mark
    total_ms = sum(ev[f"{p}_ms"] for p in PARTS) * ev["steps"]
    seconds = 24 / ev["img_s"]
    assert total_ms / 1000 <= seconds * 1.05 + 1e-3                     # the parts never exceed the epoch
    assert ev["img_s_per_rank"] == [ev["img_s"]] and 0.0 <= ev["data_wait_share"] <= 1.0
    assert ev["peak_mem_mb"] > 0
    s = timer.summary()
    assert s["epochs"] == 1 and s["clock"] == "host" and s["steps"] == 3


def _epoch(phase, stage, epoch, images, seconds, fwd, steps=2):
    return {"event": "epoch", "phase": phase, "stage": stage, "epoch": epoch, "images": images,
            "seconds": seconds, "img_s": images / seconds, "data_wait_share": 0.1, "peak_mem_mb": 100.0 + epoch,
            "steps": steps, "data_ms": 1.0, "forward_ms": fwd, "backward_ms": 2 * fwd, "optimizer_ms": 0.5,
            "other_ms": 0.1, "img_s_per_rank": [images / seconds / 2] * 2, "images_per_rank": [images // 2] * 2,
            "peak_mem_mb_per_rank": [100.0, 100.0 + epoch]}


def test_combine_epochs_weights_by_steps_and_keeps_per_rank_rates():
    f = combine_epochs([_epoch(0, "train", 0, 100, 2.0, 10.0, steps=1), _epoch(0, "train", 1, 100, 2.0, 40.0, steps=3)])
    assert f["img_s"] == 50.0 and f["forward_ms"] == pytest.approx((10 + 3 * 40) / 4, abs=1e-3)
    assert f["img_s_per_rank"] == [25.0, 25.0] and f["peak_mem_mb_per_rank"] == [100.0, 101.0]
    assert f["peak_mem_mb"] == 101.0


def test_split_other_is_the_rest_and_never_negative():
    assert split_of({"train_s": 5.0, "train_img_s": 99.0, "eval_s": 1.0}, 10.0) == {"train": 5.0, "eval": 1.0,
                                                                                      "other": 4.0}
    assert split_of({"train_s": 12.0}, 10.0)["other"] == 0.0


def test_profile_of_a_resumed_run_keeps_the_later_epoch_line(tmp_path):
    lines = [{"event": "start", "device": "cpu", "world": 2},
             _epoch(0, "train", 0, 100, 10.0, 5.0),                      # before a crash
             {"event": "start", "device": "cpu", "world": 2},
             _epoch(0, "train", 0, 100, 1.0, 5.0),                       # rerun of the same epoch
             {"event": "exemplars", "phase": 0, "select_s": 0.5, "adjust_s": 0.0},
             {"event": "phase", "phase": 0, "wall_s": 3.0, "train_s": 1.0, "exemplars_s": 0.5, "eval_s": 0.5}]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n{torn")
    prof = build_profile(tmp_path)
    (ph,) = prof["phases"]
    assert ph["stages"]["train"]["img_s"] == 100.0 and ph["stages"]["train"]["epochs"] == 1
    assert ph["split_s"] == {"train": 1.0, "exemplars": 0.5, "eval": 0.5, "other": 1.0}
    assert ph["exemplars"]["select_s"] == 0.5 and prof["world"] == 2
