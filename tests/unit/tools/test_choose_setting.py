"""analysis/choose_setting.py: the rule that picks a validation search's winner."""
import json

import pytest

from analysis.choose_setting import choose, load_runs, main


def _run(root, name, acc, forgetting, new, status="complete"):
    d = root / name
    d.mkdir()
    phases = [{"phase": 0, "accuracy_new": 90.0}] + [{"phase": i + 1, "accuracy_new": a} for i, a in enumerate(new)]
    (d / "metrics.json").write_text(json.dumps({"status": status, "phases_done": len(phases), "phases_total": 6,
                                                "average_accuracy": acc, "forgetting": forgetting, "phases": phases}))


def test_highest_accuracy_wins_ties_go_to_lower_forgetting(tmp_path):
    _run(tmp_path, "a", 70.0, 12.0, [50.0])
    _run(tmp_path, "b", 70.0, 10.0, [50.0])
    _run(tmp_path, "c", 69.0, 1.0, [50.0])
    best, _, lines = choose(load_runs(tmp_path, "*"))
    assert best == "b" and [line.split(":")[0].strip() for line in lines] == ["b", "a", "c"]


def test_guard_excludes_a_run_that_refuses_new_classes(tmp_path):
    _run(tmp_path, "b1_g0", 60.0, 20.0, [60.0, 40.0])            # the reference: new-class mean 50
    _run(tmp_path, "b1_g4", 66.0, 2.0, [10.0, 20.0])             # higher Ā, but new-class mean 15 < 25
    _run(tmp_path, "b1_g1", 62.0, 15.0, [40.0, 30.0])            # mean 35: passes
    best, floor, lines = choose(load_runs(tmp_path, "b*_g*"), reference="*_g0")
    assert (best, floor) == ("b1_g1", 25.0)
    assert "(below the guard)" in lines[0] and lines[0].startswith("  b1_g4")
    assert choose(load_runs(tmp_path, "*"))[0] == "b1_g4"       # without the guard it would win


def test_incomplete_runs_are_listed_never_chosen(tmp_path, capsys):
    _run(tmp_path, "done", 60.0, 5.0, [50.0])
    _run(tmp_path, "half", 99.0, 0.0, [99.0], status="running")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "chosen on the validation split: done (validation Ā 60.00 %, F 5.00 %)" in out
    assert "half: incomplete (2/6 phases), not ranked" in out


def test_nothing_to_choose_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no run dir matching"):
        main([str(tmp_path)])
    _run(tmp_path, "half", 99.0, 0.0, [99.0], status="running")
    with pytest.raises(SystemExit, match="no complete candidate run"):
        main([str(tmp_path)])


def test_references_are_ranked_but_not_chosen(tmp_path, capsys):
    _run(tmp_path, "herding", 74.0, 10.0, [60.0])
    _run(tmp_path, "b10", 73.0, 15.0, [64.0])
    _run(tmp_path, "T25", 73.4, 15.0, [64.0])
    assert main([str(tmp_path), "--not-candidate", "herding", "random"]) == 0
    out = capsys.readouterr().out
    assert "herding: validation Ā 74.00 %, F 10.00 %, mean new-class accuracy 60.0 %  (reference, not a candidate)" \
        in out and "chosen on the validation split: T25 " in out


def test_a_guard_reference_that_matches_nothing_is_said(tmp_path):
    _run(tmp_path, "b1_g1", 62.0, 15.0, [40.0])
    best, floor, lines = choose(load_runs(tmp_path, "*"), reference="*_g0")
    assert (best, floor) == ("b1_g1", 0.0) and "the guard is off" in lines[-1]
