"""Typed configuration of the official SAM 2 / SAM 2.1 models and of EdgeTAM.

Values follow Meta's yaml files of sam2==1.1.0 (``configs/sam2/*.yaml`` and ``configs/sam2.1/*.yaml``) plus
the overrides Meta's ``build_sam2_video_predictor`` applies on top (dynamic multimask via stability,
``binarize_mask_from_pts_for_mem_enc=True``). Meta's hole filling (``fill_hole_area``) is not part of the
model here: we never fill holes.

Architectural facts shared by all eight models are not fields, they are how ``SAM2Model`` is built: high-res
features in the mask decoder, object-score MLP head, object pointers in memory attention through a 3-layer
MLP, a fixed no-object pointer, the no-memory embedding added directly on initial conditioning frames.

EdgeTAM (Meta, CVPR 2025; ``configs/edgetam.yaml`` of ``edgetam-dimos==1.0.1``) is SAM 2 with a RepViT-M1 trunk
from timm, 2 memory attention layers whose cross-attention rotates a 16 x 16 key grid, and a perceiver that
compresses every memory frame to 512 tokens. Its behaviour flags are SAM 2's (not SAM 2.1's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

# Meta's SAM 2 (July 2024) and SAM 2.1 (September 2024) models.
SAM2_MODEL_NAMES: Tuple[str, ...] = (
    "sam2_hiera_tiny",
    "sam2_hiera_small",
    "sam2_hiera_base_plus",
    "sam2_hiera_large",
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
)
# Meta's EdgeTAM (CVPR 2025): light trunk, compressed memories (sam2_rt.modeling.edgetam).
EDGETAM_NAME = "edgetam"
# Every model: what the tracker, CLI, node and tools offer.
MODEL_NAMES: Tuple[str, ...] = SAM2_MODEL_NAMES + (EDGETAM_NAME,)
# Output channels of the trunks that come from timm, coarsest level first (the order of the neck).
TIMM_TRUNK_CHANNELS: Dict[str, Tuple[int, int, int, int]] = {"repvit_m1": (384, 192, 96, 48)}

# The choices every front end offers (node parameters, launch arguments, CLI flags, tools): one source.
# Where the model runs: "auto" = cuda when available, else cpu.
DEVICE_NAMES: Tuple[str, ...] = ("auto", "cuda", "cpu")
# Compute precision: "auto" (bf16 on CUDA devices that have it, fp32 elsewhere: sam2_rt.runtime.backends.resolve_precision),
# fp32, or bf16 / fp16 autocast (sam2_rt.runtime.backends.PRECISIONS maps them to dtypes).
PRECISION_NAMES: Tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
# Execution backends of the heavy components (sam2_rt.runtime.backends).
BACKEND_NAMES: Tuple[str, ...] = ("eager", "compile", "tensorrt")

# Every stage of the backbone halves the resolution starting from stride 4, down to stride 32, and the
# windowed positional embedding tiles the stride-4 map by 8x8 windows: sizes must be multiples of 32.
IMAGE_SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one SAM 2 / SAM 2.1 / EdgeTAM model at one input resolution."""

    # Registry name, one of MODEL_NAMES.
    name: str
    # "2" for SAM 2 (July 2024 checkpoints), "2.1" for SAM 2.1 (September 2024 checkpoints), "edgetam".
    version: str
    # Square model input side in pixels (frames are resized to image_size x image_size).
    image_size: int = 1024
    # Image trunk: "hiera" (the fields below), or a timm model of TIMM_TRUNK_CHANNELS ("repvit_m1", EdgeTAM).
    trunk: str = "hiera"

    # --- Hiera trunk (image_encoder.trunk) ---
    # Channels of the first stage; doubled at every stage change.
    embed_dim: int = 96
    # Attention heads of the first stage; doubled at every stage change.
    num_heads: int = 1
    # Number of blocks in each of the four stages.
    stages: Tuple[int, int, int, int] = (1, 2, 7, 2)
    # Indices of the blocks that attend globally instead of inside windows.
    global_att_blocks: Tuple[int, ...] = (5, 7, 9)
    # Window side (in tokens) of the windowed blocks of each stage.
    window_spec: Tuple[int, int, int, int] = (8, 4, 14, 7)
    # Grid of the background positional embedding, bicubically resized to the stride-4 token grid.
    window_pos_embed_bkg_spatial_size: Tuple[int, int] = (7, 7)
    # Number of stage changes that pool the queries (and so halve the resolution).
    q_pool: int = 3
    # Pooling stride of the queries at a stage change.
    q_stride: Tuple[int, int] = (2, 2)
    # Channel multiplier at a stage change.
    dim_mul: float = 2.0
    # Head-count multiplier at a stage change.
    head_mul: float = 2.0
    # MLP hidden size of each Hiera block relative to its width.
    trunk_mlp_ratio: float = 4.0

    # --- FPN neck (image_encoder.neck) ---
    # Pyramid levels (0 = stride 4 ... 3 = stride 32) that receive the upsampled coarser level.
    fpn_top_down_levels: Tuple[int, ...] = (2, 3)
    # Interpolation used to upsample the coarser level in the top-down path.
    fpn_interp_mode: str = "nearest"
    # Number of coarsest levels dropped after the neck (1 drops stride 32, leaving strides 4, 8, 16).
    scalp: int = 1
    # Temperature of the sine position encodings of the image and memory features.
    pos_enc_temperature: float = 10000.0

    # --- widths ---
    # Width of image features, prompt tokens and object pointers (neck d_model).
    hidden_dim: int = 256
    # Width of memory features (memory encoder output channels).
    mem_dim: int = 64
    # Stride of the image features used by the decoder and the memories.
    backbone_stride: int = 16

    # --- memory attention ---
    # Number of memory attention layers (self-attention, cross-attention to memories, MLP).
    mem_attn_num_layers: int = 4
    # Hidden size of the MLP of each memory attention layer.
    mem_attn_dim_feedforward: int = 2048
    # Attention heads of the memory attention.
    mem_attn_num_heads: int = 1
    # Dropout of the memory attention (inactive in eval mode).
    mem_attn_dropout: float = 0.1
    # Base of the rotary position encoding frequencies.
    rope_theta: float = 10000.0

    # --- spatial perceiver (EdgeTAM; 0 layers = none, memories stay h x w maps) ---
    # Layers of the perceiver that compresses each memory frame (cross-attention + feed-forward, then
    # self-attention + feed-forward).
    perceiver_depth: int = 0
    # Global latents: each attends to the whole h x w memory (with its sine position encoding).
    perceiver_num_latents: int = 256
    # 2-D latents, a square grid: each attends to its own window of the memory. Memory attention rotates
    # them with RoPE on their grid; the global latents and the object pointers stay unrotated.
    perceiver_num_latents_2d: int = 256
    # Hidden size of the perceiver feed-forwards relative to mem_dim.
    perceiver_ff_mult: int = 4

    # --- memory encoder ---
    # Kernel size of the depth-wise convolution of the fuser's ConvNeXt blocks.
    mem_enc_fuser_kernel_size: int = 7
    # Number of ConvNeXt blocks in the fuser.
    mem_enc_fuser_num_layers: int = 2
    # Initial value of the ConvNeXt layer scale (only an init value; the checkpoint overrides it).
    mem_enc_layer_scale_init_value: float = 1e-6

    # --- prompt encoder and mask decoder ---
    # Hidden channels of the mask-prompt downscaling convolutions.
    mask_in_chans: int = 16
    # Number of candidate masks besides the single-mask output.
    num_multimask_outputs: int = 3
    # Two-way transformer depth, MLP width and heads of the mask decoder.
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    # Depth and width of the IoU prediction head.
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # Squash predicted IoUs into [0, 1] with a sigmoid.
    iou_prediction_use_sigmoid: bool = True
    # Single-mask output falls back to the best multimask candidate when its stability is low.
    dynamic_multimask_via_stability: bool = True
    # Logit threshold offset of the stability score.
    dynamic_multimask_stability_delta: float = 0.05
    # Stability score below which the single mask is replaced.
    dynamic_multimask_stability_thresh: float = 0.98
    # The object pointer comes from the chosen multimask token (not always token 0).
    use_multimask_token_for_obj_ptr: bool = True

    # --- memory and tracking behaviour (SAM2Base) ---
    # Memory slots attended per frame: 1 conditioning frame + (num_maskmem - 1) previous frames.
    num_maskmem: int = 7
    # At most this many object pointers (1 per frame) reach memory attention; also normalises their
    # temporal distance.
    max_obj_ptrs_in_encoder: int = 16
    # Most conditioning frames attended at once (-1: no limit, the closest are kept otherwise). The tracker
    # implements -1 only (every official model) and refuses other values.
    max_cond_frames_in_attn: int = -1
    # Temporal stride r of the non-conditioning memories during evaluation.
    memory_temporal_stride_for_eval: int = 1
    # Mask probabilities are scaled by this before the memory encoder ...
    sigmoid_scale_for_mem_enc: float = 20.0
    # ... and shifted by this.
    sigmoid_bias_for_mem_enc: float = -10.0
    # Masks predicted from clicks are binarised (logit > 0) before the memory encoder.
    binarize_mask_from_pts_for_mem_enc: bool = True
    # A mask prompt is used directly as the output mask (the decoder only yields the pointer).
    use_mask_input_as_output_without_sam: bool = True
    # The decoder may output 3 candidate masks ...
    multimask_output_in_sam: bool = True
    # ... when the number of prompt points lies in [multimask_min_pt_num, multimask_max_pt_num] ...
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    # ... also on tracked (non-initial) frames.
    multimask_output_for_tracking: bool = True
    # Only pointers of conditioning frames in the past are attended during evaluation. A stream has no
    # future frames, so the tracker behaves the same either way and reads neither value.
    only_obj_ptrs_in_the_past_for_eval: bool = True
    # Pointers carry a sine encoding of their temporal distance (False: zero encoding). SAM 2.1 only.
    add_tpos_enc_to_obj_ptrs: bool = True
    # That encoding is hidden_dim wide and projected to mem_dim by obj_ptr_tpos_proj. SAM 2.1 only.
    proj_tpos_enc_in_obj_ptrs: bool = True
    # The temporal distance is signed (frame_idx - t) instead of absolute. SAM 2.1 only.
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    # A learned embedding is added to memories of frames where the object is absent. SAM 2.1 only.
    no_obj_embed_spatial: bool = True

    @property
    def backbone_channel_list(self) -> Tuple[int, int, int, int]:
        """Trunk output channels, coarsest level first (the order of Meta's neck)."""
        if self.trunk != "hiera":
            return TIMM_TRUNK_CHANNELS[self.trunk]
        widths = [int(self.embed_dim * self.dim_mul**stage) for stage in range(len(self.stages))]
        return tuple(reversed(widths))  # type: ignore[return-value]

    @property
    def feat_size(self) -> int:
        """Side h = w of the stride-16 feature grid."""
        return self.image_size // self.backbone_stride

    @property
    def memory_tokens(self) -> int:
        """Tokens of one memory frame: h * w, or the perceiver's latents (512 for EdgeTAM at any size)."""
        if self.perceiver_depth > 0:
            return self.perceiver_num_latents + self.perceiver_num_latents_2d
        return self.feat_size**2

    @property
    def memory_slot_shape(self) -> Tuple[int, ...]:
        """Shape of one stored memory frame: (mem_dim, h, w) maps, or (tokens, mem_dim) for EdgeTAM's perceiver."""
        if self.perceiver_depth > 0:
            return (self.memory_tokens, self.mem_dim)
        return (self.mem_dim, self.feat_size, self.feat_size)

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (and of mask prompts), image_size / 4."""
        return self.image_size // 4


_SIZES: Dict[str, Dict[str, object]] = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                 window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                  window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
                      window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(14, 14)),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                  window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7)),
}

# SAM 2 (July 2024) lacks the pointer temporal encoding and the spatial no-object embedding of SAM 2.1.
_SAM2_0_FLAGS: Dict[str, object] = dict(
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
    no_obj_embed_spatial=False,
)


# EdgeTAM (configs/edgetam.yaml): SAM 2 flags; hiera fields unused.
_EDGETAM: Dict[str, object] = dict(
    _SAM2_0_FLAGS,
    trunk="repvit_m1",
    mem_attn_num_layers=2,
    perceiver_depth=2,
)


def get_config(name: str, image_size: int = 1024) -> ModelConfig:
    """Return the configuration of an official model at the given input size.

    Arguments:
      name: one of MODEL_NAMES, e.g. "sam2.1_hiera_tiny" or "edgetam".
      image_size: square model input side in pixels; a positive multiple of 32 (1024 is Meta's). EdgeTAM's
        perceiver splits the stride-16 map into sqrt(perceiver_num_latents_2d) = 16 windows a side, so its
        sizes are multiples of 256.
    Raises:
      ValueError: unknown name or unsupported image size.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if image_size <= 0 or image_size % IMAGE_SIZE_MULTIPLE != 0:
        raise ValueError(f"image_size must be a positive multiple of {IMAGE_SIZE_MULTIPLE}, got {image_size}")
    if name == EDGETAM_NAME:
        config = ModelConfig(name=name, version="edgetam", image_size=image_size, **_EDGETAM)  # type: ignore[arg-type]
        windows = math.isqrt(config.perceiver_num_latents_2d)
        if config.feat_size % windows != 0:
            raise ValueError(
                f"EdgeTAM needs an image_size that is a multiple of {windows * config.backbone_stride} "
                f"(its perceiver splits the memory into {windows} x {windows} windows), got {image_size}"
            )
        return config
    family, size = name.split("_hiera_")
    version = "2.1" if family == "sam2.1" else "2"
    fields: Dict[str, object] = dict(_SIZES[size])
    if version == "2":
        fields.update(_SAM2_0_FLAGS)
    return ModelConfig(name=name, version=version, image_size=image_size, **fields)  # type: ignore[arg-type]



def model_size_problem(name: Any, image_size: Any) -> Optional[str]:
    """Why model `name` cannot run at `image_size` (get_config's reason, e.g. EdgeTAM's multiple of 256); None when
    it can, or when either value is unknown or invalid on its own (the front ends check those one by one)."""
    if name not in MODEL_NAMES or not isinstance(image_size, int) or isinstance(image_size, bool):
        return None
    try:
        get_config(name, image_size)
    except ValueError as error:
        return str(error)
    return None
