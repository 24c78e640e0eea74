"""analysis/paired.py: each configuration minus the reference, seed by seed, mean ± standard error."""
import json
import math

import pytest

from analysis.paired import main


def _run(root, name, a, f, held=None, status="complete", base_train_s=0.0):
    d = root / name
    d.mkdir()
    last = {"phase": 1, "wall_s": 60.0, "exemplars_per_class": 20, **({"held_mean": held} if held else {})}
    first = {"phase": 0, "wall_s": 60.0 + base_train_s, "timings": {"train_s": base_train_s}}
    (d / "metrics.json").write_text(json.dumps({"status": status, "average_accuracy": a, "average_accuracy_nme": a + 1,
                                                "forgetting": f, "phases": [first, last]}))


def test_paired_differences_over_the_seeds_both_have(tmp_path, capsys):
    for seed, (a, low) in enumerate([(70.0, 71.0), (72.0, 72.5), (71.0, 72.5)]):
        _run(tmp_path, f"raw_s{seed}", a, 10.0, base_train_s=240.0)   # trains phase 0; the others reuse it
        _run(tmp_path, f"lowres_s{seed}", low, 9.0, held=39.5)
    _run(tmp_path, "lowres_s7", 99.0, 0.0, held=39.5)                 # no raw run of seed 7: not paired
    _run(tmp_path, "png_s0", 50.0, 10.0, status="running")           # incomplete: left out, counted
    assert main([str(tmp_path), "raw"]) == 0
    out = capsys.readouterr().out
    # differences 1.0, 0.5, 1.5: mean 1.0, sample sd 0.5, SE 0.5 / √3
    assert f"| lowres | 0,1,2 | +1.00 ± {0.5 / math.sqrt(3):.2f} | +1.00 ± {0.5 / math.sqrt(3):.2f} | " \
           f"-1.00 ± 0.00 | 39.5 | 2.0 (2.0) |" in out            # phase 0's shared training left out
    assert "png" not in out.split("\n\n")[0] and "1 incomplete run(s) left out." in out
    with pytest.raises(SystemExit, match="reference 'herding'"):
        main([str(tmp_path), "herding"])
