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


def test_the_exemplar_bank_travels_through_two_reused_pinned_buffers_and_pins_nothing_more():
    from data_pipeline.loading import on_device

    banks = [torch.rand(n, 3, 224, 224).half() for n in (700, 1300, 500)]       # 0.2-0.4 GB each
    for bank in banks:
        got = on_device.ExemplarBank(bank, torch.zeros(len(bank), dtype=torch.int64), torch.device("cuda"))
        torch.cuda.synchronize()
        assert torch.equal(got.images.cpu(), bank)
    stats = torch.cuda.host_memory_stats() if hasattr(torch.cuda, "host_memory_stats") else {}
    pinned = stats.get("allocated_bytes.current", stats.get("reserved_bytes.current"))
    print(f"\npinned host memory after three banks: {pinned} bytes (staging: {2 * on_device.STAGE_BYTES})")
    assert pinned is None or pinned <= 4 * on_device.STAGE_BYTES


def test_a_packed_memory_unpacks_on_the_gpu_to_the_pixels_the_host_decodes():
    """The loaders keep an 8-bit memory packed on the device (uint8 at its stored side) and unpack each batch there:
    png's levels exactly, lowres x1/2's bilinear decode within float16 rounding of the host's."""
    from data_pipeline.loading.on_device import ExemplarBank
    from exemplars.codecs.base import STORE_DTYPE
    from exemplars.codecs.lowres import Lowres, LowresSettings
    from exemplars.codecs.png import Png
    from exemplars.memory import ExemplarMemory

    for codec, tol in ((Png(), 0.0), (Lowres(LowresSettings(factor=2, encoding="pixels")), 1e-3)):
        memory = ExemplarMemory(codec, side=224)
        memory.set(0, torch.rand(64, 3, 224, 224))
        packed, labels = memory.packed([0])
        host, _ = memory.tensors([0], STORE_DTYPE)
        idx = torch.arange(0, 64, 3, device="cuda")
        x, _ = ExemplarBank(packed, labels, torch.device("cuda"), memory.unpack).take(idx)
        assert packed.dtype == torch.uint8 and (x.cpu() - host[idx.cpu()].float()).abs().max() <= tol


def test_cudnn_benchmark_is_on_only_while_an_engine_trains():
    from trainer.engine import distributed
    from trainer.engine.deepspeed_engine import Engine, EngineSettings
    from trainer.methods.models.net import IncrementalNet

    dist_info = distributed.init()
    torch.backends.cudnn.benchmark = False
    model = IncrementalNet("resnet18", "imagenet").cuda()
    model.head.grow(10)
    with Engine(model, dist_info, 8, 0.1, 0.9, 5e-4, EngineSettings(precision="bf16")):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark


def test_real_images_as_stored_round_trip_on_the_gpu_as_on_the_host():
    """exemplars.real_as_stored on a GPU: png's and lowres's round trips run on the device (no host copy a batch) and
    give the host's pixels; lowres's float64 sums may put a pixel at a level's boundary on the other level. Its speed
    is gpu_check's `stored` figure."""
    from exemplars.codecs.lowres import Lowres, LowresSettings
    from exemplars.codecs.png import Png

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 224, 224, generator=g)
    on_device = x.cuda()
    for codec in (Png(), Lowres(LowresSettings(factor=2))):
        host = codec.round_trip(x)
        got = codec.round_trip(on_device)
        assert got.is_cuda
        diff = (got.cpu() - host).abs()
        assert diff.max() <= 1 / 255 + 1e-6 and (diff > 0).float().mean() < 1e-3, codec.name
