"""`mnemo holdout`: a validation shard set from a train split, disjoint from what it trains on."""
import tarfile

import pytest

from core.errors import UserError
from data_pipeline.convert.holdout import _class_samples, make_holdout
from data_pipeline.shards.manifest import load_manifest


def test_holdout_splits_train_into_train_and_validation(digits_shards, tmp_path):
    make_holdout(digits_shards, tmp_path / "val", per_class=7, progress=lambda *a: None)
    src, val = load_manifest(digits_shards), load_manifest(tmp_path / "val")
    assert val.classes == src.classes
    for c in range(src.num_classes):
        assert val.count("test", [c]) == 7 and val.count("train", [c]) == src.count("train", [c]) - 7
    orig = dict(_class_samples(src, 3))
    tr = {k: v for k, v in _class_samples(val, 3)}
    held = {}
    for shard in val.shards("test", [3]):
        with tarfile.open(val.path(shard)) as tar:
            held.update({m.name[:-4]: tar.extractfile(m).read() for m in tar if m.name.endswith(".png")})
    assert not set(tr) & set(held) and set(tr) | set(held) == set(orig)
    assert all(orig[k] == v for k, v in held.items())          # validation images come from train, unchanged
    make_holdout(digits_shards, tmp_path / "val2", per_class=7, progress=lambda *a: None)
    assert [s.sha256 for s in load_manifest(tmp_path / "val2").splits["test"]] == \
        [s.sha256 for s in val.splits["test"]]                   # seeded: the same split every time
    with pytest.raises(UserError, match="lower --per-class"):
        make_holdout(digits_shards, tmp_path / "val3", per_class=1000, progress=lambda *a: None)
