"""Host-to-device copies inside a step never wait for the device (sam2_rt.runtime.transfer)."""

import pytest
import torch

from sam2_rt.runtime.transfer import to_device


def test_lists_and_tensors_arrive_with_their_values_and_dtype() -> None:
    cpu = torch.device("cpu")
    assert to_device([3, 1, 2], cpu).tolist() == [3, 1, 2] and to_device([3, 1], cpu).dtype == torch.int64
    mask = torch.tensor([[True, False]])
    assert torch.equal(to_device(mask, cpu), mask)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_copy_to_cuda_is_queued_behind_running_kernels_not_waited_for() -> None:
    device = torch.device("cuda")
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # a kernel that spins for a while (~1 s)
    index = to_device([0, 2, 1], device)
    assert not torch.cuda.current_stream().query(), "the host waited for the running kernel"
    assert index.tolist() == [0, 2, 1]  # (this read does wait)
