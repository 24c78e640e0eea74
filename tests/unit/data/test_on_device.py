"""Host tensors reach the device through two reused staging buffers (data_pipeline/loading/on_device.py): every
byte arrives, whatever the dtype, shape or chunking, and the buffers are made once. The CUDA path (pinned
buffers, events) is checked in tests/gpu/test_gpu_paths.py."""
import pytest
import torch

from data_pipeline.loading import on_device


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.int64, torch.uint8])
@pytest.mark.parametrize("numel", [0, 1, 999, 1000, 1001, 12345])
def test_a_staged_copy_is_byte_for_byte_the_tensor(dtype, numel):
    g = torch.Generator().manual_seed(numel)
    t = (torch.rand(numel, generator=g) * 200).to(dtype)
    for shape in ((numel,), (1, numel, 1)):
        got = on_device.staged_copy(t.reshape(shape), torch.device("cpu"), chunk=1000)
        assert got.shape == shape and got.dtype == dtype and torch.equal(got.reshape(-1), t)
        assert numel == 0 or got.data_ptr() != t.data_ptr()


def test_a_non_contiguous_tensor_and_the_buffers_are_reused():
    t = torch.arange(6 * 7, dtype=torch.float16).reshape(6, 7).t()          # a transposed view
    first = on_device.staged_copy(t, torch.device("cpu"), chunk=10)
    buffers = [b.data_ptr() for b in on_device._staging(pinned=False)]
    assert torch.equal(first, t) and first.is_contiguous()
    on_device.staged_copy(torch.rand(3000), torch.device("cpu"), chunk=100)
    assert [b.data_ptr() for b in on_device._staging(pinned=False)] == buffers
