"""Static-shape nn.Module wrappers of SAM2Model's entry points, for torch.export (and torch-tensorrt).

Each wrapper fixes the Python-level choices of one entry point (multimask or not, mask prompt or not,
memory from clicks or not) so that its forward takes tensors only and returns a tuple of tensors.
``example_inputs`` builds inputs of the static shapes each graph is exported at.

    wrapper = MemoryAttentionExport(model)
    program = torch.export.export(wrapper, memory_attention_inputs(model.config, batch=2))
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from sam2_rt.config import ModelConfig
from sam2_rt.modeling.sam2 import SAM2Model


class ImageEncoderExport(nn.Module):
    """images (B, 3, S, S) -> (feat_s0, feat_s1, feat, pos); see SAM2Model.forward_image."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.forward_image(images)


class PromptDecoderExport(nn.Module):
    """(feat_with_mem, feat_s0, feat_s1, point_coords (B, N, 2), point_labels (B, N)[, mask_inputs
    (B, 1, S/4, S/4)]) -> DecodeOutput fields as a tuple; see SAM2Model.decode.

    Unused point slots are padding (label -1), so one N serves every prompt with at most N points.
    """

    def __init__(self, model: SAM2Model, multimask_output: bool) -> None:
        super().__init__()
        self.model = model
        self.multimask_output = multimask_output

    def forward(
        self,
        feat_with_mem: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_inputs: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, ...]:
        return tuple(
            self.model.decode(
                feat_with_mem, feat_s0, feat_s1, point_coords, point_labels, mask_inputs, self.multimask_output
            )
        )


class MemoryEncoderExport(nn.Module):
    """(feat, high_res_masks (B, 1, S, S), object_score_logits (B, 1)) -> (mem_feat, mem_pos);
    see SAM2Model.encode_memory."""

    def __init__(self, model: SAM2Model, is_mask_from_pts: bool) -> None:
        super().__init__()
        self.model = model
        self.is_mask_from_pts = is_mask_from_pts

    def forward(
        self, feat: torch.Tensor, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_memory(feat, high_res_masks, object_score_logits, self.is_mask_from_pts)


class MemoryAttentionExport(nn.Module):
    """Fixed memory slots and pointer slots with validity masks -> (B, C, h, w); see
    SAM2Model.attend_memory."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        feat: torch.Tensor,
        pos: torch.Tensor,
        mem_feats: torch.Tensor,
        mem_pos: torch.Tensor,
        mem_tpos_index: torch.Tensor,
        mem_valid: torch.Tensor,
        ptrs: torch.Tensor,
        ptr_tpos: torch.Tensor,
        ptr_valid: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.attend_memory(
            feat, pos, mem_feats, mem_pos, mem_tpos_index, mem_valid, ptrs, ptr_tpos, ptr_valid
        )


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


def image_encoder_inputs(config: ModelConfig, batch: int = 1, seed: int = 0) -> Tuple[torch.Tensor]:
    """(images (B, 3, S, S),) with random values (float32, CPU)."""
    return (_randn(torch.Generator().manual_seed(seed), batch, 3, config.image_size, config.image_size),)


def decoder_inputs(
    config: ModelConfig, batch: int = 1, num_points: int = 2, with_mask_input: bool = False, seed: int = 0
) -> Tuple[torch.Tensor, ...]:
    """Random inputs of PromptDecoderExport: features, N points (positive, negative alternating), and
    optionally a mask prompt."""
    generator = torch.Generator().manual_seed(seed)
    hidden, size, low = config.hidden_dim, config.feat_size, config.low_res_size
    inputs = [
        _randn(generator, batch, hidden, size, size),
        _randn(generator, batch, hidden // 8, 4 * size, 4 * size),
        _randn(generator, batch, hidden // 4, 2 * size, 2 * size),
        torch.rand((batch, num_points, 2), generator=generator) * config.image_size,
        (torch.arange(num_points, dtype=torch.int32) % 2 == 0).to(torch.int32).expand(batch, -1).contiguous(),
    ]
    if with_mask_input:
        inputs.append(_randn(generator, batch, 1, low, low))
    return tuple(inputs)


def memory_encoder_inputs(config: ModelConfig, batch: int = 1, seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """Random (feat, high_res_masks, object_score_logits) for MemoryEncoderExport."""
    generator = torch.Generator().manual_seed(seed)
    size = config.feat_size
    return (
        _randn(generator, batch, config.hidden_dim, size, size),
        10 * _randn(generator, batch, 1, config.image_size, config.image_size),
        _randn(generator, batch, 1),
    )


def memory_attention_inputs(
    config: ModelConfig,
    batch: int = 1,
    num_slots: Optional[int] = None,
    num_ptrs: Optional[int] = None,
    seed: int = 0,
) -> Tuple[torch.Tensor, ...]:
    """Random inputs of MemoryAttentionExport with every slot valid (num_slots defaults to num_maskmem,
    num_ptrs to max_obj_ptrs_in_encoder)."""
    generator = torch.Generator().manual_seed(seed)
    slots = config.num_maskmem if num_slots is None else num_slots
    ptr_slots = config.max_obj_ptrs_in_encoder if num_ptrs is None else num_ptrs
    size, hidden, mem_dim = config.feat_size, config.hidden_dim, config.mem_dim
    return (
        _randn(generator, batch, hidden, size, size),
        _randn(generator, batch, hidden, size, size),
        _randn(generator, batch, slots, mem_dim, size, size),
        _randn(generator, batch, slots, mem_dim, size, size),
        torch.randint(0, config.num_maskmem, (batch, slots), generator=generator),
        torch.ones(batch, slots, dtype=torch.bool),
        _randn(generator, batch, ptr_slots, hidden),
        torch.randint(1, config.max_obj_ptrs_in_encoder, (batch, ptr_slots), generator=generator).float(),
        torch.ones(batch, ptr_slots, dtype=torch.bool),
    )
