"""Static-shape nn.Module wrappers of SAM2Model's entry points, for torch.export (and torch-tensorrt).

Each wrapper fixes the Python-level choices of one entry point (multimask or not, mask prompt or not,
memory from clicks or not) so that its forward takes tensors only and returns a tuple of tensors.
``example_inputs`` builds inputs of the static shapes each graph is exported at.

    wrapper = MemoryAttentionExport(model)
    program = torch.export.export(wrapper, memory_attention_inputs(model.config, batch=2))

The four per-frame components of the tracker (``COMPONENTS``) are ``component_module`` (optionally under
autocast, ``AutocastExport``) called with ``component_inputs``: exactly the shapes and dtypes the fixed-shape
backends pass for B objects (one bucket), so one program per (component, bucket) serves every frame.
Tensors shared by all objects of a frame (image features, the memory position encoding) come with batch 1
and are expanded inside the graph; rows of several frames (``per_row_frames``) get one frame feature per row
instead (the image position encoding, the same for every frame, stays batch 1).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from sam2_rt.modeling.config import ModelConfig
from sam2_rt.modeling.sam2 import SAM2Model


class ImageEncoderExport(nn.Module):
    """images (B, 3, S, S) -> (feat_s0, feat_s1, feat, pos); see SAM2Model.forward_image."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return traceable(self.model, "forward_image")(images)


class PromptDecoderExport(nn.Module):
    """(feat_with_mem (B, C, h, w), feat_s0 (1 or B, ...), feat_s1 (1 or B, ...), point_coords (B, N, 2),
    point_labels (B, N)[, mask_inputs (B, 1, S/4, S/4)]) -> DecodeOutput fields as a tuple; see
    SAM2Model.decode.

    Objects tracked from memory have no prompt: one padding point (coordinates 0, label -1), as
    SAM2Model.decode adds itself. It is an input, not a constant: a constant prompt would be folded into
    the first attention's inputs, which torch-tensorrt's attention converter rejects.
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
        batch = feat_with_mem.shape[0]
        feat_s0 = feat_s0.expand(batch, -1, -1, -1)
        feat_s1 = feat_s1.expand(batch, -1, -1, -1)
        return tuple(
            traceable(self.model, "decode")(
                feat_with_mem, feat_s0, feat_s1, point_coords, point_labels, mask_inputs, self.multimask_output
            )
        )


class MemoryEncoderExport(nn.Module):
    """(feat (1 or B, C, h, w), high_res_masks (B, 1, S, S), object_score_logits (B, 1)) -> (mem_feat, mem_pos);
    see SAM2Model.encode_memory."""

    def __init__(self, model: SAM2Model, is_mask_from_pts: bool) -> None:
        super().__init__()
        self.model = model
        self.is_mask_from_pts = is_mask_from_pts

    def forward(
        self, feat: torch.Tensor, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        feat = feat.expand(high_res_masks.shape[0], -1, -1, -1)
        return traceable(self.model, "encode_memory")(feat, high_res_masks, object_score_logits, self.is_mask_from_pts)


class MemoryAttentionExport(nn.Module):
    """Fixed memory slots and pointer slots with validity masks -> (B, C, h, w); see
    SAM2Model.attend_memory. feat is (1 or B, C, h, w), pos (1, C, h, w); mem_pos may be (1, 1, D, h, w):
    every slot shares one position encoding."""

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
        return traceable(self.model, "attend_memory")(
            feat, pos, mem_feats, mem_pos.expand_as(mem_feats), mem_tpos_index, mem_valid, ptrs, ptr_tpos, ptr_valid
        )


class SteadyMemoryAttentionExport(MemoryAttentionExport):
    """Memory attention over a FULL memory (every slot and pointer valid): the inputs of MemoryAttentionExport
    without mem_valid and ptr_valid, and no key mask in the graph, so scaled_dot_product_attention may run
    FlashAttention / cuDNN / memory-efficient kernels. Same result as the masked graph with all-True masks."""

    def forward(  # type: ignore[override]
        self,
        feat: torch.Tensor,
        pos: torch.Tensor,
        mem_feats: torch.Tensor,
        mem_pos: torch.Tensor,
        mem_tpos_index: torch.Tensor,
        ptrs: torch.Tensor,
        ptr_tpos: torch.Tensor,
    ) -> torch.Tensor:
        return traceable(self.model, "attend_memory")(
            feat, pos, mem_feats, mem_pos.expand_as(mem_feats), mem_tpos_index, None, ptrs, ptr_tpos, None
        )


class MaskAsOutputExport(nn.Module):
    """(feat, feat_s0, feat_s1, mask (B, 1, S, S)) -> DecodeOutput fields as a tuple; see
    SAM2Model.mask_as_output (mask prompts; the tracker runs it eager)."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, feat: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, ...]:
        return tuple(traceable(self.model, "mask_as_output")(feat, feat_s0, feat_s1, mask))


class AutocastExport(nn.Module):
    """Runs `module` under autocast to `dtype` (none for float32) and returns a tuple, floating outputs
    as float32.

    Reduced precision thus lives in the graph (torch.export records autocast's casts: matmuls and
    convolutions in `dtype`, LayerNorm, softmax and reductions in float32 on CUDA), never in a compiler's
    precision flags. Inputs and outputs stay float32, so engines of any precision are interchangeable.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.autocast(inputs[0].device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            outputs = self.module(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(out.float() if out.is_floating_point() else out for out in outputs)


# The per-frame components of the tracker, in the order a frame runs them.
COMPONENTS = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")


def traceable(model: SAM2Model, method: str) -> Callable[..., Any]:
    """`model.<method>` without its ``@torch.inference_mode()`` (bound to `model`).

    The model's entry points enter inference mode for their direct callers. A traced graph (torch.compile,
    torch.export) must not hold that switch: AOT autograd cannot functionalise the views it makes of
    parameters inside it ("Cannot set version_counter for inference tensor"). The tracker, which calls the
    wrappers below, is in inference mode already.
    """
    return inspect.unwrap(getattr(type(model), method)).__get__(model)


def component_module(model: SAM2Model, component: str, steady: bool = False) -> nn.Module:
    """The static-shape wrapper of one per-frame component (see COMPONENTS); `steady`: memory attention's
    mask-free wrapper of a full memory (SteadyMemoryAttentionExport)."""
    if steady and component != "memory_attention":
        raise ValueError(f"only memory_attention has a steady-state graph, not {component!r}")
    wrappers: Dict[str, nn.Module] = {
        "image_encoder": ImageEncoderExport(model),
        "memory_attention": SteadyMemoryAttentionExport(model) if steady else MemoryAttentionExport(model),
        "mask_decoder": PromptDecoderExport(model, model.use_multimask(False, 0)),
        "memory_encoder": MemoryEncoderExport(model, is_mask_from_pts=False),
    }
    if component not in wrappers:
        raise ValueError(f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}")
    return wrappers[component]


def tracking_prompt(batch: int, device: torch.device = torch.device("cpu")) -> Tuple[torch.Tensor, torch.Tensor]:
    """The prompt of objects tracked from memory: one padding point each, coords (B, 1, 2) zeros and
    labels (B, 1) int32 -1 (what SAM2Model.decode uses when given no points)."""
    return torch.zeros(batch, 1, 2, device=device), torch.full((batch, 1), -1, dtype=torch.int32, device=device)


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


def mask_as_output_inputs(config: ModelConfig, batch: int = 1, seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """Random (feat, feat_s0, feat_s1, 0/1 mask (B, 1, S, S)) for MaskAsOutputExport."""
    generator = torch.Generator().manual_seed(seed)
    feat, feat_s0, feat_s1 = decoder_inputs(config, batch, seed=seed)[:3]
    mask = (torch.rand((batch, 1, config.image_size, config.image_size), generator=generator) > 0.5).float()
    return feat, feat_s0, feat_s1, mask


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
    num_ptrs to max_obj_ptrs_in_encoder); mem_pos is (1, 1, *slot), shared by every slot (slot:
    ModelConfig.memory_slot_shape)."""
    generator = torch.Generator().manual_seed(seed)
    slots = config.num_maskmem if num_slots is None else num_slots
    ptr_slots = config.max_obj_ptrs_in_encoder if num_ptrs is None else num_ptrs
    size, hidden, slot = config.feat_size, config.hidden_dim, config.memory_slot_shape
    return (
        _randn(generator, batch, hidden, size, size),
        _randn(generator, batch, hidden, size, size),
        _randn(generator, batch, slots, *slot),
        _randn(generator, 1, 1, *slot),
        torch.randint(0, config.num_maskmem, (batch, slots), generator=generator),
        torch.ones(batch, slots, dtype=torch.bool),
        _randn(generator, batch, ptr_slots, hidden),
        torch.randint(1, config.max_obj_ptrs_in_encoder, (batch, ptr_slots), generator=generator).float(),
        torch.ones(batch, ptr_slots, dtype=torch.bool),
    )


def component_inputs(
    config: ModelConfig,
    component: str,
    batch: int,
    num_conditioning: int,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    per_row_frames: bool = False,
    steady: int = 0,
) -> Tuple[torch.Tensor, ...]:
    """Random inputs of `component_module(model, component)` for `batch` objects, in the shapes and dtypes
    the fixed-shape backends pass (float32 features, int64 / bool slot indices and masks).

    Arguments:
      config: the model's configuration.
      component: one of COMPONENTS (for the image encoder, `batch` counts frames).
      batch: objects per call (a bucket).
      num_conditioning: conditioning slots per object (TrackerConfig.max_conditioning_frames): memory attention
        gets num_conditioning + num_maskmem - 1 memory slots and num_conditioning + max_obj_ptrs_in_encoder - 1
        pointers.
      device: where the tensors live.
      per_row_frames: frame features (feat, feat_s0, feat_s1) one per row, for rows of several frames;
        False: batch 1, shared by every row.
      steady: memory attention only; c >= 1: the inputs of SteadyMemoryAttentionExport for a full memory
        with c conditioning frames (c + num_maskmem - 1 slots, c + max_obj_ptrs_in_encoder - 1 pointers, no
        validity masks); 0: the masked wrapper's inputs with num_conditioning conditioning slots.
    """
    generator = torch.Generator().manual_seed(seed)
    hidden, size = config.hidden_dim, config.feat_size
    frames = batch if per_row_frames else 1
    if component == "image_encoder":
        inputs: Tuple[torch.Tensor, ...] = image_encoder_inputs(config, batch, seed=seed)
    elif component == "memory_attention":
        conditioning = steady or num_conditioning
        feat, pos, *memory = memory_attention_inputs(
            config,
            batch,
            num_slots=conditioning + config.num_maskmem - 1,
            num_ptrs=conditioning + config.max_obj_ptrs_in_encoder - 1,
            seed=seed,
        )
        if steady:
            del memory[6], memory[3]  # ptr_valid, mem_valid
        inputs = (feat[:frames], pos[:1], *memory)
    elif component == "mask_decoder":
        inputs = (
            _randn(generator, batch, hidden, size, size),
            _randn(generator, frames, hidden // 8, 4 * size, 4 * size),
            _randn(generator, frames, hidden // 4, 2 * size, 2 * size),
            *tracking_prompt(batch),
        )
    elif component == "memory_encoder":
        feat, masks, scores = memory_encoder_inputs(config, batch, seed=seed)
        inputs = (feat[:frames], masks, scores)
    else:
        raise ValueError(f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}")
    return tuple(tensor.to(device) for tensor in inputs)
