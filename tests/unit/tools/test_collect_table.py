"""analysis/collect_table.py: run dirs -> a Markdown table of Ā, F and runtime."""
import json

import yaml

from analysis.collect_table import main


def _run(root, name, strategy, selection, wt, acc, base, walls, per_class=20, seed=0, base_from=None):
    d = root / name
    d.mkdir()
    phases = [{"phase": i, "accuracy": a, "accuracy_base": b, "wall_s": w}
              for i, (a, b, w) in enumerate(zip(acc, base, walls))]
    m = {"status": "complete", "phases_done": len(phases), "phases_total": len(phases),
         "average_accuracy": sum(acc) / len(acc), "forgetting": base[0] - base[-1], "phases": phases}
    (d / "metrics.json").write_text(json.dumps(m))
    cfg = {"strategy": {"name": strategy},
           "exemplars": {"selection": selection, "adjust_old": wt, "per_class": per_class},
           "train": {"weight_transfer": wt, "base_from": base_from}, "seed": seed, "protocol": {"base_classes": 32, "phases": len(phases) - 1}}
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
    assert rows["lucir_ours"][2:4] == ["optimised+adj (β1=0.01, α2=0.01, T=50)", "yes"] and rows["lucir_ours"][6:8] == ["75.00", "15.00"]
    assert rows["lwm_exemplar_free"][2] == "none"
    assert "Total runtime of these runs: 4.2 min" in "\n".join(out)


def test_collect_table_over_seeds(tmp_path, capsys):
    for seed, a in ((0, 60.0), (1, 64.0), (2, 62.0)):
        _run(tmp_path, f"herding_s{seed}", "lwf", "herding", False, [80.0, a], [80.0, 50.0], [60.0, 60.0], seed=seed)
        _run(tmp_path, f"random_s{seed}", "lwf", "random", False, [80.0, a - 4], [80.0, 40.0], [6.0, 60.0],
             seed=seed, base_from=f"herding_s{seed}")
    assert main([str(tmp_path), "--seeds"]) == 0
    out = capsys.readouterr().out
    rows = {c[1]: c for c in ([x.strip() for x in line.split("|")[1:-1]] for line in out.splitlines()
                              if line.startswith("| lwf"))}
    # Ā per seed: (80 + a) / 2 = 70, 72, 71 -> mean 71, sample std 1
    assert rows["herding"][5:9] == ["71.00 ± 1.00", "30.00 ± 0.00", "–", "0,1,2"] and rows["herding"][9] == "2.0"
    assert rows["random"][5] == "69.00 ± 1.00" and rows["random"][9] == "1.1*"


def test_collect_table_names_the_searched_mnemonics_knobs(tmp_path, capsys):
    _run(tmp_path, "vb4_frozen", "lwf", "mnemonics", False, [80.0, 70.0], [80.0, 65.0], [60.0, 60.0])
    cfg_path = tmp_path / "vb4_frozen" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["exemplars"]["mnemonics"] = {"lr": 10, "inner_steps": 25, "val_batches": 4, "inner_bn": "running",
                                     "val_bn": "running", "meta_loss": "group", "init": "herding"}
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path)]) == 0
    assert "| optimised (β1=10, α2=0.01, T=25, val_batches=4, BN inner/val=running/running, meta_loss=group, " \
        "init=herding) |" in \
        capsys.readouterr().out


def test_collect_table_names_the_objective_and_its_rate(tmp_path, capsys):
    for name, mn in (("proto", {"objective": "prototype", "lr": 0.5, "inner_steps": 5}),
                     ("gm", {"objective": "matching", "match": "gradients", "embedders": "random", "lr": 0.01}),
                     ("gm_now", {"objective": "matching", "lr": 0.02,            # today's layout
                                 "matching": {"match": "gradients", "embedders": "both"}})):
        _run(tmp_path, name, "lwf", "mnemonics", False, [80.0, 70.0], [80.0, 65.0], [60.0, 60.0])
        cfg_path = tmp_path / name / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["exemplars"]["mnemonics"] = mn
        cfg_path.write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| optimised (prototype, β1=0.5) |" in out                     # no unrolled knobs (α2, T) beside it
    assert "| optimised (gradient matching, β1=0.01, embedders=random) |" in out     # a config in the older layout
    assert "| optimised (gradient matching, β1=0.02, embedders=both) |" in out


def test_collect_table_tells_a_memory_stored_smaller_from_raw(tmp_path, capsys):
    _run(tmp_path, "raw", "lwf", "herding", False, [80.0, 60.0], [80.0, 50.0], [6.0, 6.0])
    _run(tmp_path, "low", "lwf", "herding", False, [80.0, 64.0], [80.0, 55.0], [6.0, 6.0])
    cfg = yaml.safe_load((tmp_path / "low" / "config.yaml").read_text())
    cfg["exemplars"].update(codec="lowres", lowres={"factor": 4, "encoding": "pixels"})
    (tmp_path / "low" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path), "--seeds"]) == 0
    out = capsys.readouterr().out
    assert "| lwf | herding |" in out and "| lwf | herding as lowres 1/4 pixels |" in out
