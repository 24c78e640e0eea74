import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread per process: test runs are tiny, and 2 OpenMP threads per process thrash when several
# processes (multi-rank tests, other jobs) share the 2 cores. Speed is measured in benchmarks/, not here.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "mnemo" / "torch_extensions"))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (restored after): tiny tensors run ~10x faster on one thread than on two
    on a loaded 2-core machine, and avoid OpenMP spin-waits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory):
    """A small real shard set: 10 digit classes, 40 train / 10 test images each, 32 px."""
    from data_pipeline.convert.imagefolder import convert_imagefolder
    from benchmarks.image_trees import write_digits_tree

    root = tmp_path_factory.mktemp("digits")
    train, val = write_digits_tree(root / "tree")
    convert_imagefolder(train, val, root / "shards", progress=lambda *a: None)
    return root / "shards"


@pytest.fixture(scope="session")
def imagenet_fixture(tmp_path_factory):
    """An ImageNet-shaped tree (1,000 synsets x 2 real JPEGs of varied sizes, flat val + Kaggle
    ground truth, 1 image per class) converted by `mnemo shards imagenet`."""
    from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet
    from benchmarks.image_trees import write_imagenet_tree

    root = tmp_path_factory.mktemp("imagenet")
    tree = write_imagenet_tree(root / "tree", classes=1000, per_class=(2, 1))
    manifest = convert_imagenet(tree["train"], tree["val"], root / "shards", ImagenetOptions(workers=0),
                                progress=lambda *a: None)
    return tree, manifest
