"""What memory attention reads for B objects on one frame: the contract between the tracker's memory bank
(`sam2_rt.tracking.memory`) and the runners that execute attention (`sam2_rt.runtime.backends`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MemoryReadout:
    """Everything memory attention needs for B objects on one frame (M = C + R, P = C + Q slots).

    Attributes:
      mem_feats: (B, M, *slot) spatial memories in the requested dtype, conditioning slots first; a slot is
        (mem_dim, h, w) for SAM 2, (tokens, mem_dim) for EdgeTAM (ModelConfig.memory_slot_shape).
      mem_pos: (B, M, *slot) their spatial position encoding (an expanded view, no copy).
      mem_tpos_index: (B, M) int64 row of maskmem_tpos_enc for each slot (0 for invalid slots).
      mem_valid: (B, M) bool, True where the slot holds a memory to attend to.
      ptrs: (B, P, hidden_dim) float32 object pointers; conditioning pointers first.
      ptr_tpos: (B, P) float32 signed frame distance (current frame - pointer's frame).
      ptr_valid: (B, P) bool.
      complete: every slot and pointer of every row is valid (a full memory: `MemoryBank.steady_conditioning`),
        so attention needs no key mask; fixed-shape backends then run their mask-free graph.
    """

    mem_feats: torch.Tensor
    mem_pos: torch.Tensor
    mem_tpos_index: torch.Tensor
    mem_valid: torch.Tensor
    ptrs: torch.Tensor
    ptr_tpos: torch.Tensor
    ptr_valid: torch.Tensor
    complete: bool = False
