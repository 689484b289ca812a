"""Host-to-device copies that do not wait for the device.

A copy from ordinary (pageable) host memory to a CUDA device first waits for every kernel queued on the stream
(CUDA synchronises the stream before a pageable transfer), so a step that builds a small index or mask on the
host in the middle would stall until the GPU catches up, and the host could no longer queue the next
component while the previous one runs. Staged through pinned memory (PyTorch's caching host allocator: no new
allocation per call once warm) the copy is queued like a kernel.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch


def to_device(values: Union[torch.Tensor, Sequence[int]], device: torch.device,
              dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """`values` (a CPU tensor, or a list of ints as `dtype`) on `device`, queued without a host wait on CUDA."""
    tensor = values if isinstance(values, torch.Tensor) else torch.tensor(list(values), dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
