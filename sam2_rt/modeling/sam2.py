"""The assembled SAM 2 / SAM 2.1 model with functional, static-shape entry points.

``SAM2Model`` owns the weights only; the tracker owns every per-stream state (memories, pointers) and
passes it in as fixed-size tensors with validity masks, so no shape depends on how many frames were seen.

Frames: S = config.image_size, h = w = S / 16, C = hidden_dim (256), D = mem_dim (64).
Point coordinates are pixels (x, y) of the S x S model input. Labels (int32): 1 positive, 0 negative,
2 box top-left, 3 box bottom-right, -1 padding.
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2_rt.modeling.config import ModelConfig
from sam2_rt.modeling.common import MLP, downsample_antialiased
from sam2_rt.modeling.hiera import Hiera
from sam2_rt.modeling.mask_decoder import MaskDecoder
from sam2_rt.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2_rt.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2_rt.modeling.neck import FpnNeck
from sam2_rt.modeling.position_encoding import PositionEmbeddingSine, sine_1d_pe
from sam2_rt.modeling.prompt_encoder import PromptEncoder
from sam2_rt.modeling.transformer import RoPEAttention, TwoWayTransformer

# Mask logit written where the object is predicted absent (Meta's NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0
# A binary mask used as output becomes logits of -10 / +10 (sigmoid ~ 4.5e-5 / 1 - 4.5e-5).
MASK_AS_OUTPUT_SCALE = 20.0
MASK_AS_OUTPUT_BIAS = -10.0


class DecodeOutput(NamedTuple):
    """Result of the prompt decoder (Meta's _forward_sam_heads, without the K high-res candidates)."""

    # (B, K, S/4, S/4) float32 candidate mask logits (K = 3 with multimask output, else 1); NO_OBJ_SCORE
    # everywhere when the object is predicted absent.
    low_res_multimasks: torch.Tensor
    # (B, K) predicted IoU of each candidate.
    ious: torch.Tensor
    # (B, 1, S/4, S/4) float32 logits of the chosen mask (highest predicted IoU).
    low_res_masks: torch.Tensor
    # (B, 1, S, S) float32 logits of the chosen mask, bilinearly upsampled.
    high_res_masks: torch.Tensor
    # (B, C) object pointer (the no-object pointer where the object is absent).
    obj_ptr: torch.Tensor
    # (B, 1) object presence logit (> 0: present).
    object_score_logits: torch.Tensor


class DecodeCandidates(NamedTuple):
    """Every candidate of the mask decoder (`SAM2Model.decode_candidates`; K = 3 with multimask output, else 1)."""

    # (B, K, S/4, S/4) float32 mask logits; NO_OBJ_SCORE everywhere when the object is predicted absent.
    multimasks: torch.Tensor
    # (B, K) predicted IoU of each candidate.
    ious: torch.Tensor
    # (B, K, C) the decoder's output token of each candidate (its object pointer, once projected).
    tokens: torch.Tensor
    # (B, 1) object presence logit (> 0: present).
    object_score_logits: torch.Tensor


class ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck (``image_encoder.*``), dropping the ``scalp`` coarsest levels."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(f"trunk channels {trunk.channel_list} != neck channels {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, S, S) -> [(B, d_model, S/4, S/4), (B, d_model, S/8, S/8), (B, d_model, S/16, S/16)]
        for scalp = 1 (finest first)."""
        levels = self.neck(self.trunk(images))
        return levels[: len(levels) - self.scalp]


class SAM2Model(nn.Module):
    """SAM 2 / SAM 2.1 weights (Meta's state_dict keys) and the functional steps of tracking.

    The weights stay float32: reduced precision comes from autocast (``TrackerConfig.precision``, and the
    TensorRT engines of ``sam2_rt.runtime.engines``), which keeps LayerNorm, softmax and the position encodings in
    float32. ``model.half()`` / ``.to(torch.bfloat16)`` are refused with a TypeError.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        hidden, mem_dim, feat_size = config.hidden_dim, config.mem_dim, config.feat_size
        if hidden % mem_dim != 0:
            raise ValueError(f"hidden_dim {hidden} must be a multiple of mem_dim {mem_dim}")

        trunk = self._build_trunk(config)
        neck = FpnNeck(
            position_encoding=PositionEmbeddingSine(hidden, temperature=config.pos_enc_temperature),
            d_model=hidden,
            backbone_channel_list=config.backbone_channel_list,
            fpn_interp_model=config.fpn_interp_mode,
            fpn_top_down_levels=config.fpn_top_down_levels,
        )
        self.image_encoder = ImageEncoder(trunk, neck, config.scalp)

        self.memory_attention = MemoryAttention(
            d_model=hidden,
            pos_enc_at_input=True,
            layer=MemoryAttentionLayer(
                activation="relu",
                cross_attention=self._build_memory_cross_attention(config),
                d_model=hidden,
                dim_feedforward=config.mem_attn_dim_feedforward,
                dropout=config.mem_attn_dropout,
                pos_enc_at_attn=False,
                pos_enc_at_cross_attn_keys=True,
                pos_enc_at_cross_attn_queries=False,
                self_attention=self._rope_attention(config),
            ),
            num_layers=config.mem_attn_num_layers,
        )
        self.memory_encoder = MemoryEncoder(
            out_dim=mem_dim,
            mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
            fuser=Fuser(
                CXBlock(
                    dim=hidden,
                    kernel_size=config.mem_enc_fuser_kernel_size,
                    padding=config.mem_enc_fuser_kernel_size // 2,
                    layer_scale_init_value=config.mem_enc_layer_scale_init_value,
                    use_dwconv=True,
                ),
                num_layers=config.mem_enc_fuser_num_layers,
            ),
            position_encoding=PositionEmbeddingSine(mem_dim, temperature=config.pos_enc_temperature),
            in_dim=hidden,
        )

        # Turns a binary mask prompt (S x S) into S/4 logits for the decoder that makes its pointer.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        # Temporal encoding of memory slot t_pos (indexed num_maskmem - t_pos - 1): (num_maskmem, 1, 1, D).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, mem_dim))
        # Added to the image feature of an initial conditioning frame (no memory yet): (1, 1, C).
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        # Meta's position of the dummy memory token (unused with directly_add_no_mem_embed; kept for loading).
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        # Object pointer of frames where the object is absent: (1, C).
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        # SAM 2.1: added to the memory of frames where the object is absent: (1, D).
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim)) if config.no_obj_embed_spatial else None
        for embedding in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr):
            nn.init.trunc_normal_(embedding, std=0.02)
        if self.no_obj_embed_spatial is not None:
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)

        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=hidden,
            image_embedding_size=(feat_size, feat_size),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        )
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=hidden,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=hidden,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            use_high_res_features=True,
            iou_prediction_use_sigmoid=config.iou_prediction_use_sigmoid,
            pred_obj_scores=True,
            pred_obj_scores_mlp=True,
            use_multimask_token_for_obj_ptr=config.use_multimask_token_for_obj_ptr,
            dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh,
        )
        # Decoder output token -> object pointer.
        self.obj_ptr_proj = MLP(hidden, hidden, hidden, 3)
        # SAM 2.1: projects the hidden_dim-wide temporal encoding of a pointer to mem_dim.
        self.obj_ptr_tpos_proj: nn.Module = (
            nn.Linear(hidden, mem_dim) if config.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        )

    def _build_trunk(self, config: ModelConfig) -> nn.Module:
        """The image trunk (``image_encoder.trunk``): Hiera. Subclasses with another trunk override it."""
        return Hiera(
            embed_dim=config.embed_dim,
            num_heads=config.num_heads,
            q_pool=config.q_pool,
            q_stride=config.q_stride,
            stages=config.stages,
            dim_mul=config.dim_mul,
            head_mul=config.head_mul,
            window_pos_embed_bkg_spatial_size=config.window_pos_embed_bkg_spatial_size,
            window_spec=config.window_spec,
            global_att_blocks=config.global_att_blocks,
            mlp_ratio=config.trunk_mlp_ratio,
        )

    @staticmethod
    def _rope_attention(config: ModelConfig, **extra: object) -> RoPEAttention:
        """RoPE attention of memory attention over the stride-16 grid (self-attention unless extra says)."""
        return RoPEAttention(
            embedding_dim=config.hidden_dim,
            num_heads=config.mem_attn_num_heads,
            downsample_rate=1,
            dropout=config.mem_attn_dropout,
            rope_theta=config.rope_theta,
            feat_sizes=(config.feat_size, config.feat_size),
            **extra,
        )

    def _build_memory_cross_attention(self, config: ModelConfig) -> RoPEAttention:
        """Cross-attention of memory attention: every memory an h x w map rotated like the query grid."""
        return self._rope_attention(config, rope_k_repeat=True, kv_in_dim=config.mem_dim)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "SAM2Model":
        """nn.Module's conversion hook (``.to``, ``.cuda``, ``.half`` ...), refusing a change of float dtype."""
        probe = fn(torch.zeros((), dtype=torch.float32))
        if probe.dtype != torch.float32:
            raise TypeError(
                f"SAM2Model keeps float32 weights (asked for {probe.dtype}): its position encodings and memory "
                "stay float32, so a cast model mixes dtypes. Use TrackerConfig(precision='fp16' or 'bf16'), "
                "which runs the model under autocast"
            )
        return super()._apply(fn, recurse)

    # --- image -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward_image(
        self, images: torch.Tensor, channels_last: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode frames (Meta's forward_image + _prepare_backbone_features).

        Arguments:
          images: (B, 3, S, S) float RGB, resized to S x S and normalised with ImageNet mean/std.
          channels_last: run the convolutions in channels-last layout (oneDNN's fast path on a CPU: forward_image
            of EdgeTAM -30 %, of sam2.1_hiera_tiny -7 % at 1024 px, bench/RESULTS.md); the same results to float
            rounding, returned in the usual layout. The eager runner asks for it on a CPU.
        Returns:
          feat_s0 (B, C/8, S/4, S/4) and feat_s1 (B, C/4, S/8, S/8): high-res features, already projected
            by the decoder's conv_s0 / conv_s1;
          feat (B, C, h, w): the image feature (input of memory attention and of the memory encoder);
          pos (B, C, h, w): its sine position encoding.
        """
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        stride4, stride8, feat = self.image_encoder(images)
        feat_s0 = self.sam_mask_decoder.conv_s0(stride4)
        feat_s1 = self.sam_mask_decoder.conv_s1(stride8)
        if channels_last:  # what follows expects the usual layout
            feat_s0, feat_s1, feat = feat_s0.contiguous(), feat_s1.contiguous(), feat.contiguous()
        pos = self.image_encoder.neck.position_encoding(feat)
        return feat_s0, feat_s1, feat, pos

    def prepare_for_inference(self) -> "SAM2Model":
        """The model in the form the tracker runs: eval mode (EdgeTAMModel also folds its trunk). Returns self."""
        return self.eval()

    # --- memory ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def no_memory_features(self, feat: torch.Tensor) -> torch.Tensor:
        """Feature of an initial conditioning frame (no memory yet): feat + no_mem_embed.

        Arguments: feat (B, C, h, w). Returns: (B, C, h, w).
        """
        return feat + self.no_mem_embed.reshape(1, -1, 1, 1)

    @torch.inference_mode()
    def attend_memory(
        self,
        feat: torch.Tensor,
        pos: torch.Tensor,
        mem_feats: torch.Tensor,
        mem_pos: torch.Tensor,
        mem_tpos_index: torch.Tensor,
        mem_valid: Optional[torch.Tensor],
        ptrs: torch.Tensor,
        ptr_tpos: torch.Tensor,
        ptr_valid: Optional[torch.Tensor],
        batch_chunk: Optional[int] = None,
    ) -> torch.Tensor:
        """Condition a frame's feature on fixed-size memory (Meta's _prepare_memory_conditioned_features
        for a non-initial frame).

        Empty slots are masked out of the attention, so n valid slots give Meta's result over exactly
        those n memories; the order of slots and pointers does not matter.

        Arguments:
          feat, pos: (B, C, h, w) image feature and its position encoding (forward_image); batch 1 serves
            all B objects of one frame (and their first self-attention runs once). Rows of several frames
            pass one feature per row (B) with pos of batch 1 (the encoding is the same for every frame).
          mem_feats, mem_pos: (B, M, D, h, w) memories and their position encodings (encode_memory); EdgeTAM:
            (B, M, T, D) tokens (sam2_rt.modeling.edgetam).
          mem_tpos_index: (B, M) long, row of maskmem_tpos_enc of each slot, i.e. num_maskmem - t_pos - 1
            (t_pos = 0 for conditioning frames, num_maskmem - t_rel for the frame t_rel frames back).
          mem_valid: (B, M) bool, True for filled slots; None with ptr_valid None: every slot and pointer is
            filled, and attention runs without a key mask (the steady state of a stream).
          ptrs: (B, P, C) object pointers (decode / mask_as_output).
          ptr_tpos: (B, P) float frame distance of each pointer, frame_idx - t (signed for SAM 2.1); it is
            normalised by max_obj_ptrs_in_encoder - 1, as Meta does for videos of at least that many frames.
          ptr_valid: (B, P) bool, True for filled pointer slots (None: all, see mem_valid).
          batch_chunk: objects per memory-attention call (None: all at once); the result is the same.
        Returns:
          (B, C, h, w) memory-conditioned feature for decode.
        """
        _, hidden, height, width = feat.shape
        slot_tokens, slot_pos = self._memory_slot_tokens(mem_feats, mem_pos)
        batch, num_slots, tokens_per_slot, mem_dim = slot_tokens.shape
        # (B, M, T, D) -> (B, M * T, D), slot-major like Meta's concatenation.
        spatial = slot_tokens.reshape(batch, num_slots * tokens_per_slot, mem_dim)
        tpos = self.maskmem_tpos_enc.reshape(-1, mem_dim)[mem_tpos_index]  # (B, M, D)
        spatial_pos = (slot_pos + tpos[:, :, None, :]).reshape(batch, num_slots * tokens_per_slot, mem_dim)
        if (mem_valid is None) != (ptr_valid is None):
            raise ValueError("mem_valid and ptr_valid are both given or both None (a full memory)")
        ptr_tokens, ptr_pos = self._pointer_tokens(ptrs, ptr_tpos)
        memory = torch.cat([spatial, ptr_tokens], dim=1)
        memory_pos = torch.cat([spatial_pos, ptr_pos], dim=1)
        memory_valid = None
        if mem_valid is not None and ptr_valid is not None:
            spatial_valid = mem_valid[:, :, None].expand(-1, -1, tokens_per_slot).reshape(batch, -1)
            ptr_token_valid = ptr_valid.repeat_interleave(ptr_tokens.shape[1] // ptrs.shape[1], dim=1)
            memory_valid = torch.cat([spatial_valid, ptr_token_valid], dim=1)

        conditioned = self.memory_attention(
            curr=feat.flatten(2).transpose(1, 2),
            curr_pos=pos.flatten(2).transpose(1, 2),
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=ptr_tokens.shape[1],
            memory_valid=memory_valid,
            batch_chunk=batch_chunk,
        )
        return conditioned.transpose(1, 2).reshape(batch, hidden, height, width)

    def _memory_slot_tokens(
        self, mem_feats: torch.Tensor, mem_pos: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Memory slots as tokens: (B, M, D, h, w) maps -> (B, M, h * w, D) row-major, features and positions."""
        return mem_feats.flatten(3).transpose(2, 3), mem_pos.flatten(3).transpose(2, 3)

    def _pointer_tokens(self, ptrs: torch.Tensor, ptr_tpos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Split each C-wide pointer into C / D tokens of width D, consecutive per pointer, each with the
        pointer's temporal encoding. Returns tokens and positions, (B, P * C/D, D) each."""
        batch, num_ptrs, hidden = ptrs.shape
        mem_dim = self.config.mem_dim
        splits = hidden // mem_dim
        config = self.config
        if config.add_tpos_enc_to_obj_ptrs:
            distance = ptr_tpos if config.use_signed_tpos_enc_to_obj_ptrs else ptr_tpos.abs()
            width = hidden if config.proj_tpos_enc_in_obj_ptrs else mem_dim
            encoding = sine_1d_pe(distance / (config.max_obj_ptrs_in_encoder - 1), dim=width)
            ptr_pos = self.obj_ptr_tpos_proj(encoding.to(ptrs.dtype))
        else:
            ptr_pos = ptrs.new_zeros(batch, num_ptrs, mem_dim)
        tokens = ptrs.reshape(batch, num_ptrs * splits, mem_dim)
        return tokens, ptr_pos.repeat_interleave(splits, dim=1)

    @torch.inference_mode()
    def encode_memory(
        self,
        feat: torch.Tensor,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
        channels_last: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode a frame and its predicted mask into a memory (Meta's _encode_new_memory).

        Arguments:
          feat: (B, C, h, w) raw image feature of the frame (forward_image, without memory).
          high_res_masks: (B, 1, S, S) mask logits (DecodeOutput.high_res_masks).
          object_score_logits: (B, 1) presence logits; absent objects get no_obj_embed_spatial (SAM 2.1).
          is_mask_from_pts: the mask came from clicks on this frame; then it is binarised first.
          channels_last: run the memory encoder's convolutions in channels-last layout (faster on a CPU, as in
            forward_image: -27 % at 1024 px, bench/RESULTS.md); results in the usual layout.
        Returns:
          mem_feat (B, D, h, w) and mem_pos (B, D, h, w).
        """
        config = self.config
        if config.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts:
            mask = (high_res_masks > 0).to(feat.dtype)
        else:
            mask = torch.sigmoid(high_res_masks.to(feat.dtype))
        mask = mask * config.sigmoid_scale_for_mem_enc + config.sigmoid_bias_for_mem_enc
        if channels_last:
            layout = torch.channels_last
            feat, mask = feat.contiguous(memory_format=layout), mask.contiguous(memory_format=layout)
        mem_feat, mem_pos = self.memory_encoder(feat, mask, skip_mask_sigmoid=True)
        if channels_last:
            mem_feat = mem_feat.contiguous()
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).to(mem_feat.dtype)  # (B, 1)
            mem_feat = mem_feat + absent[:, :, None, None] * self.no_obj_embed_spatial[:, :, None, None]
        return mem_feat, mem_pos

    # --- prompts -----------------------------------------------------------------------------------

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """Whether the decoder outputs 3 candidates (Meta's _use_multimask); a box counts as 2 points."""
        config = self.config
        return (
            config.multimask_output_in_sam
            and (is_init_cond_frame or config.multimask_output_for_tracking)
            and config.multimask_min_pt_num <= num_points <= config.multimask_max_pt_num
        )

    @torch.inference_mode()
    def decode(
        self,
        feat_with_mem: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        mask_inputs: Optional[torch.Tensor],
        multimask_output: bool,
    ) -> DecodeOutput:
        """Prompt encoder + mask decoder + object pointer (Meta's _forward_sam_heads).

        Arguments:
          feat_with_mem: (B, C, h, w) no_memory_features or attend_memory output.
          feat_s0, feat_s1: high-res features from forward_image.
          point_coords: (B, N, 2) float pixels (x, y) of the S x S input, or None (no points).
          point_labels: (B, N) int32 labels (see module doc), None with point_coords None.
          mask_inputs: (B, 1, S/4, S/4) mask logits prompt (other sizes are resized), or None.
          multimask_output: 3 candidates and pick the best by predicted IoU (see use_multimask).
        Returns:
          DecodeOutput.
        """
        candidates = self.decode_candidates(feat_with_mem, feat_s0, feat_s1, point_coords, point_labels, mask_inputs,
                                             multimask_output)
        best = torch.argmax(candidates.ious, dim=-1) if multimask_output else None
        return self.choose_candidate(candidates, best)

    def decode_candidates(
        self,
        feat_with_mem: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        mask_inputs: Optional[torch.Tensor],
        multimask_output: bool,
    ) -> DecodeCandidates:
        """Prompt encoder + mask decoder, every candidate kept (arguments of `decode`); `choose_candidate` then
        makes the output of the one chosen (by predicted IoU in `decode`; by motion too in SAMURAI's tracking)."""
        batch = feat_with_mem.shape[0]
        if point_coords is None or point_labels is None:
            # No points: one padding point, as Meta does.
            point_coords = feat_with_mem.new_zeros(batch, 1, 2)
            point_labels = torch.full((batch, 1), -1, dtype=torch.int32, device=feat_with_mem.device)
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs.to(feat_with_mem.dtype)
            if tuple(mask_inputs.shape[-2:]) != tuple(self.sam_prompt_encoder.mask_input_size):
                mask_prompt = F.interpolate(
                    mask_prompt,
                    size=self.sam_prompt_encoder.mask_input_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=mask_prompt)
        multimasks, ious, output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=feat_with_mem,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=[feat_s0, feat_s1],
        )
        present = object_score_logits > 0  # (B, 1)
        multimasks = torch.where(present[:, :, None, None], multimasks, NO_OBJ_SCORE).float()
        return DecodeCandidates(multimasks, ious, output_tokens, object_score_logits)

    def choose_candidate(self, candidates: DecodeCandidates, best: Optional[torch.Tensor]) -> DecodeOutput:
        """The output of candidate `best` (B,) of each object (None: the only candidate): its mask, upsampled,
        and its object pointer (the no-object pointer where the object is absent)."""
        multimasks, ious, output_tokens, object_score_logits = candidates
        batch = multimasks.shape[0]
        token = output_tokens[:, 0]
        best_masks = multimasks
        if best is not None:
            size = multimasks.shape[-1]
            best_masks = torch.gather(multimasks, 1, best.reshape(batch, 1, 1, 1).expand(-1, 1, size, size))
            if output_tokens.shape[1] > 1:
                token = torch.gather(
                    output_tokens, 1, best.reshape(batch, 1, 1).expand(-1, 1, output_tokens.shape[-1])
                )[:, 0]
        high_res = F.interpolate(
            best_masks, size=(self.config.image_size, self.config.image_size), mode="bilinear", align_corners=False
        )
        present = object_score_logits > 0
        obj_ptr = self._gate_pointer(self.obj_ptr_proj(token), present.to(token.dtype))
        return DecodeOutput(multimasks, ious, best_masks, high_res, obj_ptr, object_score_logits)

    def _gate_pointer(self, obj_ptr: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Replace the pointer of absent objects (presence (B, 1) in {0, 1}) by no_obj_ptr."""
        return presence * obj_ptr + (1 - presence) * self.no_obj_ptr

    @torch.inference_mode()
    def mask_as_output(
        self, feat: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor, mask: torch.Tensor
    ) -> DecodeOutput:
        """Use a mask prompt directly as the output (Meta's _use_mask_as_output).

        The mask becomes -10/+10 logits; the decoder only runs to produce the object pointer from the
        mask; the object counts as present when any mask pixel is > 0.

        Arguments:
          feat: (B, C, h, w) raw image feature (forward_image; no memory, no no_mem_embed).
          feat_s0, feat_s1: high-res features from forward_image.
          mask: (B, 1, S, S) float or bool mask in the model input frame.
        Returns:
          DecodeOutput with K = 1 and ious = 1.
        """
        mask = mask.float()
        high_res = mask * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        # Meta's antialiased bilinear resize to S/4, written as a strided convolution (the same numbers)
        # so the graph builds in TensorRT.
        low_res = downsample_antialiased(high_res, 4)
        ious = mask.new_ones(mask.shape[0], 1)
        pointer_source = self.decode(
            feat, feat_s0, feat_s1, None, None, self.mask_downsample(mask.to(feat.dtype)), multimask_output=False
        )
        presence = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()  # (B, 1)
        object_score_logits = MASK_AS_OUTPUT_SCALE * presence + MASK_AS_OUTPUT_BIAS
        obj_ptr = self._gate_pointer(pointer_source.obj_ptr, presence.to(pointer_source.obj_ptr.dtype))
        return DecodeOutput(low_res, ious, low_res, high_res, obj_ptr, object_score_logits)
