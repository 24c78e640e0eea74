"""benchmarks/collect_table.py: run dirs -> a Markdown table of Ā, F and runtime."""
import json

import yaml

from benchmarks.collect_table import main


def _run(root, name, strategy, selection, wt, acc, base, walls, per_class=20):
    d = root / name
    d.mkdir()
    phases = [{"phase": i, "accuracy": a, "accuracy_base": b, "wall_s": w}
              for i, (a, b, w) in enumerate(zip(acc, base, walls))]
    m = {"status": "complete", "phases_done": len(phases), "phases_total": len(phases),
         "average_accuracy": sum(acc) / len(acc), "forgetting": base[0] - base[-1], "phases": phases}
    (d / "metrics.json").write_text(json.dumps(m))
    cfg = {"strategy": {"name": strategy},
           "exemplars": {"selection": selection, "adjust_old": wt, "per_class": per_class},
           "train": {"weight_transfer": wt}, "protocol": {"base_classes": 32, "phases": len(phases) - 1}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_collect_table(tmp_path, capsys):
    _run(tmp_path, "lucir_herding", "lucir", "herding", False, [80.0, 60.0], [80.0, 50.0], [60.0, 60.0])
    _run(tmp_path, "lucir_ours", "lucir", "mnemonics", True, [80.0, 70.0], [80.0, 65.0], [90.0, 30.0])
    _run(tmp_path, "lwm_exemplar_free", "lwm", "herding", False, [80.0, 40.0], [80.0, 30.0], [6.0, 6.0], per_class=0)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in out if line.startswith("| ")}
    assert rows["lucir_herding"][6:8] == ["70.00", "30.00"] and rows["lucir_herding"][10] == "2.0"
    assert rows["lucir_ours"][2:4] == ["mnemonics+adj", "yes"] and rows["lucir_ours"][6:8] == ["75.00", "15.00"]
    assert rows["lwm_exemplar_free"][2] == "none"
    assert "Total runtime of these runs: 4.2 min" in "\n".join(out)
