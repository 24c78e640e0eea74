import json
import pickle

import numpy as np
import pytest
import torch

from core.errors import UserError
from data_pipeline.convert.cifar100 import convert_cifar100
from data_pipeline.convert.imagefolder import FolderOptions, convert_imagefolder
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.reader import read_classes


def test_imagefolder_shards_are_class_grouped_with_manifest(digits_shards):
    m = load_manifest(digits_shards)
    assert m.num_classes == 10 and m.image_size == 32
    assert m.class_names()[3] == "digit_3"
    assert m.count("train") == 400 and m.count("test") == 100
    for s in m.shards("train"):
        assert s.path.startswith(f"train/c{s.class_id:05d}-") and len(s.sha256) == 64
    m.verify(checksums=True)


def test_reader_reads_only_the_asked_classes_and_decodes_rgb(digits_shards):
    m = load_manifest(digits_shards)
    d = read_classes(m, "train", [7, 2], "glyphs", 32)
    assert d.images.shape == (80, 3, 32, 32) and d.images.dtype == torch.uint8
    assert sorted(set(d.class_ids.tolist())) == [2, 7]
    assert len(m.shards("train", [7, 2])) == 2
    again = read_classes(m, "train", [2, 7], "glyphs", 32)
    assert torch.equal(d.images, again.images)        # deterministic order
    assert (d.images[:, 0] == d.images[:, 1]).all()   # greyscale sources became 3 equal channels


def test_truncated_or_missing_shard_is_detected(digits_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_shards, copy)
    m = load_manifest(copy)
    victim = copy / m.shards("train", [0])[0].path
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(UserError, match="bytes but the manifest says"):
        load_manifest(copy)
    victim.unlink()
    with pytest.raises(UserError, match="which is missing"):
        load_manifest(copy)
    with pytest.raises(UserError, match="shard directory not found"):
        load_manifest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no manifest.json"):
        load_manifest(tmp_path / "empty")


def test_manifest_sample_count_mismatch_is_detected(digits_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy2"
    shutil.copytree(digits_shards, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["splits"]["train"][0]["samples"] += 1
    (copy / "manifest.json").write_text(json.dumps(raw))
    m = load_manifest(copy)
    with pytest.raises(UserError, match="manifest.json says"):
        read_classes(m, "train", [0], "glyphs", 32)


def test_unreadable_image_is_named_or_skipped(tmp_path):
    from benchmarks.image_trees import write_digits_tree

    train, val = write_digits_tree(tmp_path / "tree", per_class_train=3, per_class_test=1, classes=2)
    bad = train / "digit_1" / "0000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(UserError, match="0000.png"):
        convert_imagefolder(train, val, tmp_path / "out", progress=lambda *a: None)
    assert not (tmp_path / "out" / "manifest.json").exists()
    m = convert_imagefolder(train, val, tmp_path / "out", FolderOptions(skip_bad=True), progress=lambda *a: None)
    assert len(m.skipped) == 1 and m.count("train") == 5


def test_cifar100_pickles(tmp_path):
    src = tmp_path / "cifar-100-python"
    src.mkdir()
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(100)]
    pickle.dump({b"fine_label_names": [n.encode() for n in names]}, open(src / "meta", "wb"))
    for split, n in (("train", 300), ("test", 100)):
        labels = (np.arange(n) % 100).tolist()
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        pickle.dump({b"data": data, b"fine_labels": labels}, open(src / split, "wb"))
    m = convert_cifar100(src, tmp_path / "shards", progress=lambda *a: None)
    assert m.num_classes == 100 and m.count("train") == 300 and m.count("test") == 100
    d = read_classes(m, "test", [5], "cifar", 32)
    raw = pickle.load(open(src / "test", "rb"), encoding="bytes")
    expect = raw[b"data"][5].reshape(3, 32, 32)
    assert np.array_equal(d.images[0].numpy(), expect)        # PNG round trip is lossless
    with pytest.raises(UserError, match="cifar-100-python"):
        convert_cifar100(tmp_path / "nope", tmp_path / "x")
