import os
import shutil
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


def _shared_by_workers(tmp_path_factory) -> Path:
    """This session's temporary directory that every pytest-xdist worker sees (each worker's own is inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def imagenet_fixture(tmp_path_factory):
    """An ImageNet-shaped tree (1,000 synsets x 2 real JPEGs of varied sizes, flat val + Kaggle
    ground truth, 1 image per class) converted by `mnemo shards imagenet`. Built once for the session,
    by whichever worker asks first; the others wait for it and read it back (tests only read it)."""
    import fcntl
    import pickle

    from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet
    from data_pipeline.shards.manifest import load_manifest
    from benchmarks.image_trees import write_imagenet_tree

    root = _shared_by_workers(tmp_path_factory) / "imagenet_fixture"
    root.mkdir(exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                   # released when the file closes
        if not (root / "tree.pkl").is_file():              # written last: a build that died is redone
            for part in ("tree", "shards"):
                shutil.rmtree(root / part, ignore_errors=True)
            tree = write_imagenet_tree(root / "tree", classes=1000, per_class=(2, 1))
            convert_imagenet(tree["train"], tree["val"], root / "shards", ImagenetOptions(workers=0),
                             progress=lambda *a: None)
            (root / "tree.pkl").write_bytes(pickle.dumps(tree))
    return pickle.loads((root / "tree.pkl").read_bytes()), load_manifest(root / "shards")
