"""`mnemo shards imagenet`: layouts, labels, index files, subset, resume, bad images."""
import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.image_trees import VAL_FORMS, synset_ids, write_imagenet_tree
from core.errors import UserError
from core.protocol import make_plan
from data_pipeline.convert import imagenet as ci
from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet
from data_pipeline.convert.imagenet_layout import subset_synsets
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.wds_index import add_index_files, index_tar, read_index

ROOT = Path(__file__).resolve().parents[3]
QUIET = dict(workers=0)
SILENT = lambda *a: None          # noqa: E731  (progress)


def _stored(m, split):
    """{key: (class id in the shard's manifest entry, int32 label in the sample, image bytes)}"""
    import webdataset as wds

    out = {}
    for s in m.shards(split):
        for sample in wds.WebDataset(str(m.path(s)), shardshuffle=False, empty_check=False):
            out[sample["__key__"]] = (s.class_id, struct.unpack("<i", sample["lbl"])[0], sample["jpg"])
    return out


def test_full_size_fixture_manifest_labels_and_index_files(imagenet_fixture, tmp_path):
    tree, m = imagenet_fixture
    assert m.num_classes == 1000 and m.count("train") == 2000 and m.count("test") == 1000
    assert [c["key"] for c in m.classes] == tree["synsets"] and m.classes[5]["name"] == f"class {tree['synsets'][5]}"
    assert "Kaggle LOC_val_solution.csv" in m.created_by and m.encoding == "jpg"
    val = _stored(m, "test")
    for key, (cid, lbl, _) in val.items():                     # val labels follow the ground-truth file
        assert cid == lbl and m.classes[cid]["key"] == tree["val_labels"][key]
    for s in m.shards("train", [0, 1, 2, 999]):
        assert s.index == s.path[:-4] + ".idx"
        assert [e.key for e in read_index(m.root / s.index)] == [k for k, _ in index_tar(m.path(s)).samples]
    wds2idx = shutil.which("wds2idx", path=str(Path(sys.executable).parent))
    if wds2idx:                                                 # byte-identical to DALI's own tool
        s = m.shards("train", [3])[0]
        out = tmp_path / "ref.idx"                              # the fixture is shared: nothing written into it
        subprocess.run([wds2idx, str(m.path(s)), str(out)], check=True, capture_output=True)
        assert out.read_text() == (m.root / s.index).read_text()
    plan = make_plan(m.num_classes, 500, 25)                   # the full-size B500 N25 plan on these shards
    assert plan.num_phases == 26 and len(m.shards("train", plan.class_ids(plan.new_labels(25)))) == 20


def test_quirky_sources_become_rgb_jpegs(imagenet_fixture):
    from PIL import Image

    tree, m = imagenet_fixture
    train = _stored(m, "train")
    for c in (0, 1, 2):                                         # PNG named .JPEG, CMYK JPEG, greyscale JPEG
        key = f"{tree['synsets'][c]}_0"
        img = Image.open(io.BytesIO(train[key][2]))
        assert img.format == "JPEG" and img.mode in ("RGB", "L")
    key = f"{tree['synsets'][5]}_1"                              # a plain JPEG is stored byte for byte
    assert train[key][2] == (tree["train"] / tree["synsets"][5] / f"{key}.JPEG").read_bytes()


@pytest.mark.parametrize("form", [f for f in VAL_FORMS if f != "kaggle"])
def test_val_forms_are_recognised(tmp_path, form):
    tree = write_imagenet_tree(tmp_path / "tree", classes=6, per_class=(1, 2), val_form=form)
    m = convert_imagenet(tree["train"], tree["val"], tmp_path / "out", ImagenetOptions(**QUIET), progress=SILENT)
    expect = {"devkit": "devkit ground truth", "tf": "TensorFlow", "caffe": "Caffe", "folders": "val synset folders"}
    assert expect[form] in m.created_by
    for key, (cid, _, _) in _stored(m, "test").items():
        assert m.classes[cid]["key"] == tree["val_labels"][key]
    if form == "devkit":
        assert m.classes[0]["name"] == f"thing {tree['synsets'][0]}"       # names from meta.mat


def test_flat_val_without_ground_truth_is_a_clear_error(tmp_path):
    tree = write_imagenet_tree(tmp_path / "tree", classes=3, per_class=(1, 1), val_form="tf")
    tree["ground_truth"].unlink()
    with pytest.raises(UserError, match="no ground-truth file was found.*--val-labels"):
        convert_imagenet(tree["train"], tree["val"], tmp_path / "out", ImagenetOptions(**QUIET), progress=SILENT)


def test_subset_is_the_seed_1993_choice_of_the_protocol():
    ids = synset_ids(1000)
    chosen = subset_synsets(ids, 100)
    plan = make_plan(1000, 50, 5, 1993, num_classes=100)     # ImageNet-Subset as protocol.py defines it
    assert chosen == sorted(ids[c] for c in plan.order)
    assert len(chosen) == 100 and chosen == sorted(chosen)


def test_subset_conversion(tmp_path):
    tree = write_imagenet_tree(tmp_path / "tree", classes=12, per_class=(1, 1), val_form="caffe")
    m = convert_imagenet(tree["train"], tree["val"], tmp_path / "out", ImagenetOptions(subset=4, **QUIET),
                         progress=SILENT)
    assert [c["key"] for c in m.classes] == subset_synsets(tree["synsets"], 4)
    assert m.dataset == "imagenet-subset4" and m.count("train") == 4 and m.count("test") == 4
    for key, (cid, _, _) in _stored(m, "test").items():       # caffe indices count all 12 synsets
        assert m.classes[cid]["key"] == tree["val_labels"][key]


def test_short_side_and_shard_size(tmp_path):
    from PIL import Image

    tree = write_imagenet_tree(tmp_path / "tree", classes=2, per_class=(12, 1), sides=(60, 120), quirks=False)
    m = convert_imagenet(tree["train"], tree["val"], tmp_path / "out",
                         ImagenetOptions(short_side=64, shard_mb=0.01, **QUIET), progress=SILENT)
    for key, (_, _, data) in _stored(m, "train").items():
        assert min(Image.open(io.BytesIO(data)).size) <= 64
    assert len(m.shards("train", [0])) > 1                    # ~10 KB shards: several per class
    assert all(s.bytes <= 0.01 * 2**20 + 4 * 512 + 8192 for s in m.shards("train"))
    assert sum(s.samples for s in m.shards("train", [1])) == 12


def test_resume_skips_verified_classes_and_redoes_corrupted_ones(tmp_path, monkeypatch):
    tree = write_imagenet_tree(tmp_path / "tree", classes=6, per_class=(3, 1))
    out = tmp_path / "out"
    real = ci.image_bytes
    calls = {"n": 0}

    def crash_after_ten(path, *a):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt                          # the conversion dies part-way
        return real(path, *a)

    monkeypatch.setattr(ci, "image_bytes", crash_after_ten)
    with pytest.raises(KeyboardInterrupt):
        convert_imagenet(tree["train"], tree["val"], out, ImagenetOptions(**QUIET), progress=SILENT)
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(ci, "image_bytes", real)
    msgs = []
    first = convert_imagenet(tree["train"], tree["val"], out, ImagenetOptions(workers=0), progress=msgs.append)
    assert "(3 verified and reused)" in msgs[-1]             # the 3 classes finished before the crash
    first.verify(checksums=True)

    victim, gone = first.shards("train", [2])[0], first.shards("test", [4])[0]
    data = bytearray(first.path(victim).read_bytes())
    data[700] ^= 0xFF                                        # same size, one flipped byte
    first.path(victim).write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its sha256"):
        load_manifest(out).verify(checksums=True)           # `mnemo shards verify` catches it
    first.path(gone).unlink()
    msgs = []
    again = convert_imagenet(tree["train"], tree["val"], out, ImagenetOptions(workers=0), progress=msgs.append)
    text = "\n".join(msgs)
    assert "train class 2 redone" in text and "corrupted" in text
    assert "test class 4 redone" in text and "missing" in text
    assert f"({len(first.shards('train')) + len(first.shards('test')) - 2} verified and reused)" in msgs[-1]
    again.verify(checksums=True)
    assert again.to_json()["splits"] == first.to_json()["splits"]     # same bytes as before the damage


def test_truncated_jpeg_is_named_or_skipped(tmp_path):
    tree = write_imagenet_tree(tmp_path / "tree", classes=3, per_class=(2, 1), quirks=False)
    bad = tree["train"] / tree["synsets"][1] / f"{tree['synsets'][1]}_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:-300])
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "shards", "imagenet", "--train", str(tree["train"]),
                        "--val", str(tree["val"]), "--out", str(tmp_path / "out"), "--workers", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("mnemo: error: cannot read image ") and str(bad) in last
    assert "truncated" in last and "--skip-bad" in last
    assert not (tmp_path / "out" / "manifest.json").exists()
    m = convert_imagenet(tree["train"], tree["val"], tmp_path / "out", ImagenetOptions(skip_bad=True, **QUIET),
                         progress=SILENT)
    assert m.count("train") == 5 and [s["path"] for s in m.skipped] == [str(bad)]
    assert "truncated" in m.skipped[0]["reason"]


def test_index_command_adds_index_files_to_older_shard_sets(digits_shards, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(digits_shards, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    for shards in raw["splits"].values():
        for s in shards:
            (copy / s["index"]).unlink()
            s["index"] = None
    (copy / "manifest.json").write_text(json.dumps(raw))
    m = add_index_files(copy, progress=lambda *a: None)
    assert all(s.index and (copy / s.index).is_file() for v in m.splits.values() for s in v)
    s = m.shards("train", [4])[0]
    assert len(read_index(copy / s.index)) == s.samples
    assert np.all([e.parts["png"][1] > 0 for e in read_index(copy / s.index)])
