"""DALI on a GPU: mixed (nvJPEG) decode, tensors on the device, DALI-fed vs synthetic
ResNet-18 training img/s. Run through the device tool when a GPU is lent (`pytest tests/gpu -s`
prints the figures); skipped elsewhere with the reason shown.
"""
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (CI never has one)")
pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")

from core.ranks import DistInfo  # noqa: E402
from data_pipeline.loading.batch_plan import BatchPlan  # noqa: E402
from data_pipeline.loading.settings import LoaderOutput  # noqa: E402


@pytest.fixture(scope="module")
def shards_224(tmp_path_factory):
    from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet
    from benchmarks.image_trees import write_imagenet_tree

    root = tmp_path_factory.mktemp("gpu_imagenet")
    tree = write_imagenet_tree(root / "tree", classes=20, per_class=(100, 10), sides=(256, 400), quirks=False)
    return convert_imagenet(tree["train"], tree["val"], root / "shards", ImagenetOptions(workers=8),
                            progress=lambda *a: None)


def test_mixed_decode_matches_cpu_and_reports_throughput(shards_224):
    from data_pipeline.loading.dali_batches import dali_eval_batches

    m = shards_224
    out = LoaderOutput("imagenet", 224)
    cpu = torch.cat([x for x, _ in dali_eval_batches(m, "test", range(20), 50, out)])
    gpu = [x for x, _ in dali_eval_batches(m, "test", range(20), 50, out, DistInfo(device=torch.device("cuda", 0)))]
    assert all(x.is_cuda for x in gpu)
    gpu = torch.cat(gpu).cpu()
    assert (gpu - cpu).abs().mean() < 0.01          # nvJPEG and libjpeg-turbo differ slightly
    for device_id in (None, 0):
        from data_pipeline.loading.dali_batches import DaliPhaseBatches

        device = torch.device("cpu") if device_id is None else torch.device("cuda", device_id)
        b = DaliPhaseBatches(m, range(20), BatchPlan(256, 0, DistInfo(device=device)),
                             LoaderOutput("imagenet", 224, "channels_last", torch.bfloat16, threads=8))
        n, t0 = 0, None
        for step, (x, _) in enumerate(b.epoch(0)):
            if step == 1:
                torch.cuda.synchronize()
                t0, n = time.perf_counter(), 0
            n += len(x)
        torch.cuda.synchronize()
        print(f"\nDALI train pipeline ({'mixed' if device_id == 0 else 'cpu'} decode, 8 threads): "
              f"{n / (time.perf_counter() - t0):.0f} img/s")


def test_resnet18_fed_by_dali_vs_synthetic(shards_224):
    from data_pipeline.loading.dali_batches import DaliPhaseBatches
    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings
    from trainer.methods.models.net import IncrementalNet

    dist_info = distributed.init()
    model = IncrementalNet("resnet18", "imagenet").cuda().to(memory_format=torch.channels_last)
    model.head.grow(20)
    engine = Engine(model, dist_info, 256, 0.1, 0.9, 5e-4, EngineSettings(precision="bf16"))
    b = DaliPhaseBatches(shards_224, range(20), BatchPlan(256, 0, DistInfo(device=torch.device("cuda", 0))),
                         LoaderOutput("imagenet", 224, "channels_last", threads=8))

    def train(batches):
        n, t0 = 0, None
        for step, (x, y) in enumerate(batches):
            if step == 2:
                torch.cuda.synchronize()
                t0, n = time.perf_counter(), 0
            with engine.autocast():
                loss = torch.nn.functional.cross_entropy(engine.module(x), y.cuda())
            engine.step(loss)
            n += len(y)
        torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    synth_x = torch.rand(256, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    synth_y = torch.randint(0, 20, (256,))
    synthetic = train((synth_x, synth_y) for _ in range(b.steps_per_epoch))
    dali = train(b.epoch(0))
    print(f"\nResNet-18 bf16 train: synthetic {synthetic:.0f} img/s, DALI-fed {dali:.0f} img/s "
          f"(ratio {dali / synthetic:.2f}; < 1 means input-bound)")
    assert dali > 0 and synthetic > 0
