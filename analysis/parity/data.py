"""The images a mnemo run trains and tests on, as the arrays a peer reads: uint8 (N, H, W, 3), the data set's
class ids as labels, and the protocol's class order (the seed-1993 order, the first `num_classes` of it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.protocol import make_plan
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.reader import read_classes


@dataclass
class Arrays:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    order: list[int]                 # class ids in the order they arrive (the protocol's)
    sizes: tuple[int, ...]           # classes per phase


def protocol_arrays(shards: str, preset: str, size: int, protocol: dict) -> Arrays:
    """`protocol`: base_classes, phases, num_classes (None: all), class_order_seed (1993)."""
    manifest = load_manifest(shards)
    plan = make_plan(manifest.num_classes, protocol["base_classes"], protocol["phases"],
                     protocol.get("class_order_seed", 1993), protocol.get("num_classes"))
    ids = list(plan.order)
    out = []
    for split in ("train", "test"):
        decoded = read_classes(manifest, split, ids, preset, size)
        out += [decoded.images.permute(0, 2, 3, 1).contiguous().numpy(), decoded.class_ids.numpy()]
    return Arrays(*out, ids, plan.phase_sizes)
