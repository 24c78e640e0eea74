"""analysis/exemplar_drift.py: pixel drift of old exemplars across sealed phases."""
import json

import pytest
import torch

from analysis.exemplar_drift import main, run_drift
from exemplars.memory import ExemplarMemory
from trainer.run.storage import sealed_phases


def _seal(run, phase, bank):
    mem = ExemplarMemory()
    for label, images in bank.items():
        mem.set(label, images)
    sealed_phases.seal_phase(run, phase, {}, mem.state_dict(), {})


def _run(tmp_path):
    """Phase 0 stores classes 0-1; phase 1 adds class 2 and moves class 0 by 64/255 in a quarter of
    its pixels; phase 2 trims every class to 2 exemplars (the fixed-budget mode) and moves nothing more."""
    run = tmp_path / "run"
    base = {0: torch.zeros(4, 1, 2, 2), 1: torch.full((4, 1, 2, 2), 0.5)}
    _seal(run, 0, base)
    moved = base[0].clone()
    moved[:, 0, 0, 0] = 64 / 255
    _seal(run, 1, {0: moved, 1: base[1], 2: torch.ones(4, 1, 2, 2)})
    _seal(run, 2, {0: moved[:2], 1: base[1][:2], 2: torch.ones(2, 1, 2, 2)})
    phases = [{"phase": p, "accuracy_base": 80.0 - 10 * p} for p in range(3)]
    (run / "metrics.json").write_text(json.dumps({"phases": phases}))
    return run


def test_drift_of_base_classes_from_their_phase0_pixels(tmp_path):
    result = run_drift(_run(tmp_path), introduced=0, phases=None, threshold=32)
    assert result["classes"] == [0, 1]
    p1, p2 = result["rows"]
    # class 0: 4 of its 16 pixels moved by 64 levels (fp16 storage rounds 64/255 by < 0.05 levels);
    # class 1 did not move: mean over 32 pixels = 4 * 64 / 32
    assert p1["phase"] == 1 and p1["mean_abs"] == pytest.approx(8.0, abs=0.05)
    assert p1["share_above"] == pytest.approx(4 / 32) and p1["max_abs"] == pytest.approx(64, abs=0.1)
    assert p1["accuracy_base"] == 70.0 and p1["exemplars"] == 8
    # after trimming to 2 per class the first 2 are compared: 2 pixels of 16 moved by 64
    assert p2["exemplars"] == 4 and p2["mean_abs"] == pytest.approx(2 * 64 / 16, abs=0.05)


def test_a_class_dropped_from_memory_is_named(tmp_path):
    run = _run(tmp_path)
    _seal(run, 3, {1: torch.zeros(2, 1, 2, 2)})
    with pytest.raises(SystemExit, match=r"classes \[0\] are not in phase 3's exemplar memory"):
        main([str(run), "--phases", "3"])


def test_classes_of_a_later_phase_and_no_adjustment_means_no_drift(tmp_path):
    result = run_drift(_run(tmp_path), introduced=1, phases=[2], threshold=32)
    assert result["classes"] == [2] and result["rows"][0]["mean_abs"] == 0.0
    assert "accuracy_base" not in result["rows"][0]


def test_bad_input_is_one_line_error(tmp_path, capsys):
    run = _run(tmp_path)
    with pytest.raises(SystemExit, match="phases \\[7\\] are not sealed phases after 0"):
        main([str(run), "--phases", "7"])
    with pytest.raises(SystemExit, match="not a run directory"):
        main([str(tmp_path / "nothing")])
    (sealed_phases.phase_dir(run, 1) / "DONE").unlink()              # a damaged phase is not read
    with pytest.raises(SystemExit, match=r"phase 1 is not sealed \(sealed phases: \[0, 2\]\)"):
        main([str(run), "--introduced", "1"])
    assert main([str(run), "--out", str(tmp_path / "d.json")]) == 0
    assert "| 2 | 8.00 | 12.5 % | 64 | 60.00 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text())["runs"][0]["classes"] == [0, 1]
