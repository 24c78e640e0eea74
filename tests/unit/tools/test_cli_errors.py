"""User mistakes: one line on stderr, exit status 2, no traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def mnemo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mnemo.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["train.epoch=2"], "unknown config key 'train.epoch'"),
    (["strategy.name=nope"], "unknown strategy.name 'nope' (known:"),
    (["data.shards=/nonexistent/shards"], "shard directory not found: /nonexistent/shards"),
    (["protocol.phases=4"], "do not split into protocol.phases=4"),
])
def test_train_user_errors_are_one_line(tmp_path, digits_shards, args, needle):
    if not any(a.startswith("data.shards") for a in args):
        args = [f"data.shards={digits_shards}", "protocol.base_classes=4", "protocol.phases=3"] + args
        if "protocol.phases=4" in args:
            args = [a for a in args if a != "protocol.phases=3"]
    r = mnemo("train", "--config", "configs/glyphs.yaml", "--run-dir", str(tmp_path / "run"), *args)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("mnemo: error: ") and needle in lines[-1], r.stderr
    assert "Traceback" not in r.stderr


def test_manifest_mismatch_is_one_line(tmp_path, digits_shards):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(digits_shards, copy)
    next((copy / "train").glob("*.tar")).unlink()
    r = mnemo("train", "--config", "configs/glyphs.yaml", "--run-dir", str(tmp_path / "run"), f"data.shards={copy}")
    assert r.returncode == 2 and "which is missing" in r.stderr and "Traceback" not in r.stderr


def test_missing_config_and_bad_imagefolder(tmp_path):
    r = mnemo("train", "--config", str(tmp_path / "none.yaml"), "--run-dir", str(tmp_path / "r"))
    assert r.returncode == 2 and "config file not found" in r.stderr
    r = mnemo("shards", "imagefolder", "--train", str(tmp_path / "no"), "--val", str(tmp_path / "no"),
              "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "image folder not found" in r.stderr and "Traceback" not in r.stderr


def test_overrides_and_options_in_any_order():
    from mnemo.cli import parse

    args = parse(["train", "--config", "C", "--run-dir", "R", "train.epochs=5", "--nproc-per-node", "2", "seed=3"])
    assert args.overrides == ["train.epochs=5", "seed=3"] and args.nproc_per_node == 2
    args = parse(["launch", "--config", "C", "seed=1", "--run-dir", "R", "--dry-run", "train.epochs=2"])
    assert args.words == ["seed=1", "train.epochs=2"] and args.dry_run and args.run_dir == "R"


def test_a_stray_word_after_an_option_is_still_an_error(capsys):
    from mnemo.cli import parse

    with pytest.raises(SystemExit) as e:
        parse(["train", "--config", "C", "--run-dir", "R", "seed=1", "--nproc-per-node", "2", "oops"])
    assert e.value.code == 2 and "unrecognized arguments: oops" in capsys.readouterr().err
