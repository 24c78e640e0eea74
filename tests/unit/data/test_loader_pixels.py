"""Both loaders see the same pixels: the DALI eval pipeline (CPU operators here) against the torch
loader's reader (PIL), at 32 and 224 px, on JPEGs of odd sizes (odd crop margins, up- and down-scaling).

Tolerance: the two JPEG decoders agree bit for bit on the CPU (both libjpeg-turbo; measured 0 here), so
what remains is the two bicubic resamplers (PIL's and DALI's antialiased cubic filters): mean
|difference| per image <= 0.004 at 224 px and <= 0.008 at 32 px (measured at most 0.0022 and
0.0043), max <= 0.1 of the [0, 1] range (measured 0.071). Before the two shared their arithmetic the mean was 0.047-0.076 at
32 px and up to 0.034 at 224 px (a centre crop one pixel apart on odd margins, bilinear against
bicubic). The 32 px train geometry (resize the short side, centre crop) is the same code on both sides.
"""
import io

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")

from data_pipeline.loading.dali_batches import dali_eval_batches  # noqa: E402
from data_pipeline.loading.settings import LoaderOutput  # noqa: E402
from data_pipeline.shards.reader import read_classes  # noqa: E402
from data_pipeline.shards.writer import ShardSetWriter  # noqa: E402

SIZES = {224: [(333, 257), (257, 401), (301, 299), (375, 500), (640, 427), (229, 231)],
         32: [(40, 33), (33, 47), (31, 45), (64, 48), (50, 37), (35, 35)]}
TOLERANCE = {224: 0.004, 32: 0.008}


def _jpeg(w: int, h: int, seed: int) -> bytes:
    from benchmarks.image_trees import _crop, _sample_images

    buf = io.BytesIO()
    _crop(_sample_images(), np.random.default_rng(seed), w, h).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("preset,size", [("imagenet", 224), ("imagenet", 32), ("cifar", 32)])
def test_dali_and_the_torch_loader_evaluate_on_the_same_pixels(tmp_path, preset, size):
    w = ShardSetWriter(tmp_path, "eval", [{"id": 0, "name": "a", "key": "a"}], None, "jpg")
    w.write_class("test", 0, [(f"k{i}", _jpeg(a, b, i)) for i, (a, b) in enumerate(SIZES[size])])
    m = w.finish()
    dali = torch.cat([x for x, _ in dali_eval_batches(m, "test", [0], 4, LoaderOutput(preset, size))])
    torch_loader = read_classes(m, "test", [0], preset, size).images.float() / 255
    assert dali.shape == torch_loader.shape == (len(SIZES[size]), 3, size, size)
    diff = (dali - torch_loader).abs()
    assert diff.mean((1, 2, 3)).max() <= TOLERANCE[size], diff.mean((1, 2, 3))
    assert diff.amax((1, 2, 3)).max() <= 0.1, diff.amax((1, 2, 3))
