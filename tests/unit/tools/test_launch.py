"""`mnemo launch` without a cluster: --dry-run sbatch scripts of the SLURM recipes, launch state,
status pieces (errors, ETA), and user errors. The real-cluster tests are tests/integration/test_slurm.py."""
import json
import re
import sys
from pathlib import Path

import pytest

from mnemo.cli import main

ROOT = Path(__file__).resolve().parents[3]
RECIPE_2X8 = ROOT / "configs" / "slurm" / "imagenet1k_b500_25_2x8.yaml"
RECIPE_1X8 = ROOT / "configs" / "slurm" / "imagenet1k_b500_25_1x8.yaml"


def dry_run(capsys, *args) -> list[str]:
    capsys.readouterr()
    assert main(["launch", *map(str, args), "--dry-run"]) == 0
    out = capsys.readouterr().out
    return out.split("#!/bin/bash")[1:]


def flags(script: str) -> dict:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))


def test_dry_run_of_the_2x8_recipe_is_a_chain_of_26_phase_jobs(capsys, tmp_path):
    scripts = dry_run(capsys, "--config", RECIPE_2X8, "--run-dir", tmp_path / "run")
    assert len(scripts) == 26                                   # phase 0 + 25 incremental phases
    for i, s in enumerate(scripts):
        f = flags(s)
        assert (f["nodes"], f["ntasks-per-node"], f["gpus-per-node"], f["cpus-per-task"]) == ("2", "8", "8", "10")
        assert f["mem"] == "480GB" and f["time"] == "240" and "exclusive" in f
        assert f["signal"] == "USR2@180"
        if i == 0:
            assert "dependency" not in f
        else:
            assert f["dependency"] == f"'afterok:<job {i}>'" and f["kill-on-invalid-dep"] == "yes"
        assert f"{sys.executable} -u -m submitit.core._submit {tmp_path / 'run' / 'submitit'}" in s
        assert s.count("srun ") == 1 and f"export PYTHONPATH={ROOT}" in s
        srun = next(line for line in s.splitlines() if line.startswith("srun "))
        # one crashed rank ends the step; every task sees the node's GPUs and takes its local rank's
        assert "--kill-on-bad-exit=1" in srun and "--gpu-bind=none" in srun, srun
        assert "requeue" not in f


@pytest.mark.parametrize("recipe,gpus", [(RECIPE_2X8, 16), (RECIPE_1X8, 8)])
def test_cluster_recipes_keep_64_images_per_gpu_with_linearly_scaled_learning_rates(recipe, gpus):
    from trainer.config import load_config

    cfg = load_config(recipe)
    t = cfg.train
    assert t.batch_size / gpus == 64 and t.warmup_epochs > 0
    assert t.lr == pytest.approx(0.1 * t.batch_size / 128) and t.finetune_lr == pytest.approx(0.01 * t.batch_size / 128)
    assert cfg.launch.nodes * cfg.launch.gpus_per_node == gpus


def test_dry_run_of_the_single_node_recipe_is_one_requeueable_job(capsys, tmp_path):
    (script,) = dry_run(capsys, "--config", RECIPE_1X8, "--run-dir", tmp_path / "run")
    f = flags(script)
    assert (f["nodes"], f["ntasks-per-node"], f["gpus-per-node"], f["time"]) == ("1", "8", "8", "1440")
    assert "dependency" not in f and "requeue" in f


def test_flags_override_the_launch_section_and_reach_sbatch(capsys, tmp_path):
    scripts = dry_run(capsys, "--config", RECIPE_2X8, "--run-dir", tmp_path / "run", "--mode", "requeue",
                      "--nodes", "4", "--gpus-per-node", "4", "--partition", "gpu", "--account", "proj",
                      "--qos", "high", "--constraint", "a100", "--mem-gb", "250.5", "--time-min", "60",
                      "--sbatch", "mail-type=END", "launch.job_name=x")
    (f,) = [flags(s) for s in scripts]
    assert (f["nodes"], f["ntasks-per-node"], f["gpus-per-node"]) == ("4", "8", "4")   # tasks_per_node: recipe
    assert (f["partition"], f["account"], f["qos"], f["constraint"]) == ("gpu", "proj", "high", "a100")
    assert (f["mem"], f["time"], f["mail-type"], f["job-name"]) == ("256512MB", "60", "END", "x")
    assert "exclusive" in f                                      # the recipe's extra sbatch parameter stays


def test_dry_run_of_a_partly_done_run_submits_only_what_is_left(capsys, tmp_path):
    run = tmp_path / "run"
    for ph in range(3):
        (run / "phases" / f"p{ph:02d}").mkdir(parents=True)
        (run / "phases" / f"p{ph:02d}" / "DONE").write_text("{}")
    (run / "phases" / "p03").mkdir()                             # not sealed: no DONE
    scripts = dry_run(capsys, "--config", RECIPE_2X8, "--run-dir", run)
    assert len(scripts) == 23                                    # phases 3..25


@pytest.mark.parametrize("args,message", [
    (["status", "{tmp}/nowhere"], "has no launch.json"),
    (["--run-dir", "{tmp}/r"], "needs --config C and --run-dir R"),
    (["--config", str(RECIPE_2X8), "--run-dir", "{tmp}/r", "launch.mode=sometimes"], "launch mode 'sometimes'"),
    (["--config", str(RECIPE_2X8), "--run-dir", "{tmp}/r", "--cluster", "local"], "set launch.nodes=1"),
    (["--config", str(RECIPE_2X8), "--run-dir", "{tmp}/r", "launch.nodez=2"], "unknown config key 'launch.nodez'"),
    (["--config", str(RECIPE_2X8), "--run-dir", "{tmp}/r", "stauts"], "'stauts' is neither an action"),
    (["resume"], "needs the run directory"),
])
def test_user_errors_are_one_line(capsys, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["launch", *args, "--dry-run"] if "status" not in args else ["launch", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnemo: error:") and message in err and "Traceback" not in err


def test_launch_state_is_written_atomically(tmp_path):
    from launch import state

    state.save(tmp_path, {"version": 1, "jobs": [{"job_id": "7"}]})
    assert json.loads((tmp_path / "launch.json").read_text())["jobs"] == [{"job_id": "7"}]
    assert [p.name for p in tmp_path.iterdir()] == ["launch.json"]      # no temporary file left behind
    (tmp_path / "launch.json").write_text("{not json")
    from core.errors import UserError

    with pytest.raises(UserError, match="not valid JSON"):
        state.load(tmp_path)


def test_status_of_a_failed_local_run_names_phase_error_and_eta(tmp_path):
    """Status pieces on a hand-made run directory: submitit's error pickle, phase from the log, ETA."""
    import pickle

    from launch import state
    from launch.status import format_report, report

    run, folder = tmp_path / "run", tmp_path / "run" / "submitit"
    folder.mkdir(parents=True)
    (run / "phases" / "p00").mkdir(parents=True)
    (run / "phases" / "p00" / "DONE").write_text("{}")
    (run / "phases" / "p01").mkdir()
    (run / "phases" / "p01" / "DONE").write_text("{}")
    (run / "metrics.json").write_text(json.dumps({"phases_total": 6, "phases": [
        {"phase": 0, "wall_s": 100.0}, {"phase": 1, "wall_s": 20.0}]}))
    tb = "Traceback (most recent call last):\n  File x\nmnemo.errors.UserError: cannot read image a.tar:k: broken\n"
    with open(folder / "41_0_result.pkl", "wb") as f:
        pickle.dump(("error", tb), f)
    (folder / "41_0_log.err").write_text("12:00:00 phase 1/5: 4 new classes\n12:00:01 phase 2/5: 4 new classes\n")
    state.save(run, {"version": 1, "cluster": "local", "mode": "requeue", "folder": str(folder), "submissions": 1,
                     "config": {"protocol": {"phases": 5}},
                     "jobs": [{"job_id": "41", "phase": None, "mode": "requeue", "submission": 1}]})
    r = report(run)
    assert (r["status"], r["phases_done"], r["phases_total"]) == ("failed", 2, 6)
    assert r["jobs"][0]["state"] == "FAILED"
    assert r["last_error"] == {"job_id": "41", "phase": 2, "message": "UserError: cannot read image a.tar:k: broken"}
    assert (r["eta_s"], r["phase_s"]) == (80.0, 20.0)       # 4 phases left at the incremental phases' 20 s
    text = format_report(r)
    assert "last error: phase 2 (job 41): UserError: cannot read image" in text and "ETA: 1.3 min" in text
    assert "tensorboard --logdir" not in text                      # no RUN/tb yet
    (tmp_path / "run" / "tb").mkdir()
    assert f"tensorboard --logdir {tmp_path / 'run' / 'tb'}" in format_report(report(tmp_path / "run"))


def test_launch_package_calls_only_the_trainer_entry_point():
    import ast

    for path in sorted((ROOT / "launch").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer"):
                assert node.module == "trainer.run.driver" and [a.name for a in node.names] == ["run"], path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("trainer") for a in node.names), path
