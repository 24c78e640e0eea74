"""GPU checks, run through the device tool when a GPU is lent; skipped elsewhere with the reason shown.

`pytest tests/gpu -s` prints img/s figures for docs/benchmarks.md.
"""
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (CI never has one)")


def test_resnet18_224_bf16_engine_one_phase_on_synthetic_data():
    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings
    from trainer.methods.models.net import IncrementalNet

    dist_info = distributed.init()
    torch.manual_seed(0)
    model = IncrementalNet("resnet18", "imagenet").cuda()
    model.head.grow(100)
    engine = Engine(model, dist_info, 256, 0.1, 0.9, 5e-4, EngineSettings(precision="bf16"))
    x = torch.rand(256, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (256,), device="cuda")
    losses = []
    for step in range(30):
        if step == 10:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with engine.autocast():
            loss = torch.nn.functional.cross_entropy(engine.module(x), y)
        engine.step(loss)
        losses.append(loss.item())
    torch.cuda.synchronize()
    img_s = 20 * 256 / (time.perf_counter() - t0)
    print(f"\nresnet18 224px bf16 channels_last synthetic: {img_s:.0f} img/s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_each_rank_drives_its_own_gpu_and_the_pci_check_passes_on_one():
    from trainer.engine import distributed

    info = distributed.init()
    assert info.device.type == "cuda"
    distributed.check_one_rank_per_gpu(info)        # one rank: its (host, PCI bus id) is unique
