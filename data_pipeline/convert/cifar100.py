"""`mnemo shards cifar100`: the standard CIFAR-100 python pickles (cifar-100-python/) to shards."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from core.errors import UserError
from data_pipeline.shards.image_codec import encode
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.writer import ShardSetWriter


def _load(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} not found: --src must be the extracted cifar-100-python/ folder "
                        "(holding train, test and meta)")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:
        raise UserError(f"cannot read CIFAR-100 pickle {path}: {e}") from None


def _key(d: dict, name: str):
    return d[name.encode()] if name.encode() in d else d[name]


def convert_cifar100(src: Path, out: Path, progress=print) -> Manifest:
    src = Path(src)
    meta = _load(src / "meta")
    names = [n.decode() if isinstance(n, bytes) else n for n in _key(meta, "fine_label_names")]
    classes = [{"id": i, "name": n, "key": n} for i, n in enumerate(names)]
    writer = ShardSetWriter(out, "cifar100", classes, 32, "png", created_by="mnemo shards cifar100")
    for split, fname in (("train", "train"), ("test", "test")):
        d = _load(src / fname)
        data = np.asarray(_key(d, "data"), dtype=np.uint8)
        labels = np.asarray(_key(d, "fine_labels"), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise UserError(f"{src / fname}: expected data of shape (N, 3072) and N fine_labels")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for cid in range(len(names)):
            idx = np.flatnonzero(labels == cid)
            writer.write_class(split, cid, ((f"{split}{i:06d}", encode(images[i])) for i in idx))
        progress(f"[shards] cifar100 {split}: {len(data)} images")
    return writer.finish()
