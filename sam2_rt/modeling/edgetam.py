"""EdgeTAM (Meta, CVPR 2025): SAM 2's functional steps with a RepViT trunk and compressed memories.

``EdgeTAMModel`` is a ``SAM2Model`` with the same entry points, so whatever drives SAM 2 drives it:
- forward_image: a RepViT-M1 trunk (timm) and SAM 2's FPN neck; same outputs and shapes;
- encode_memory: SAM 2's memory encoder, then the spatial perceiver: a memory is T = 512 tokens of width
  D (global latents, then a 16 x 16 latent grid) instead of an h x w map;
- attend_memory: 2 layers; the cross-attention rotates the latent grid of each memory with its own RoPE
  (LatentRoPEAttention); memories come in as (B, M, T, D) tokens;
- decode, mask_as_output, no_memory_features: SAM 2's.
State_dict keys equal Meta's EdgeTAM (edgetam-dimos==1.0.1, configs/edgetam.yaml), so ``edgetam.pt`` loads
strictly.
"""

from __future__ import annotations

import inspect
import math
from typing import Tuple

import torch
from torch import nn

from sam2_rt.modeling.config import ModelConfig
from sam2_rt.modeling.latent_attention import LatentRoPEAttention
from sam2_rt.modeling.perceiver import PerceiverResampler
from sam2_rt.modeling.repvit import TimmTrunk
from sam2_rt.modeling.sam2 import SAM2Model

# SAM2Model.encode_memory without its @torch.inference_mode(): a traced graph (sam2_rt.runtime.export.traceable
# unwraps the entry point it traces) must not switch inference mode on inside.
_encode_memory_map = inspect.unwrap(SAM2Model.encode_memory)


class EdgeTAMModel(SAM2Model):
    """EdgeTAM weights (Meta's keys, ``spatial_perceiver.*`` included) and SAM2Model's functional steps.

    Shapes as SAM2Model's, except memories: T = config.memory_tokens (512) tokens per memory frame.
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.trunk == "hiera" or config.perceiver_depth <= 0:
            raise ValueError(f"{config.name} is not an EdgeTAM config (trunk {config.trunk!r}, no perceiver)")
        super().__init__(config)
        self.spatial_perceiver = PerceiverResampler(
            dim=config.mem_dim,
            depth=config.perceiver_depth,
            num_latents=config.perceiver_num_latents,
            num_latents_2d=config.perceiver_num_latents_2d,
            dim_head=config.mem_dim,
            heads=1,
            ff_mult=config.perceiver_ff_mult,
            use_self_attn=True,
        )

    def prepare_for_inference(self) -> "EdgeTAMModel":
        """Eval mode, and the RepViT trunk folded into its inference form in place (TimmTrunk.reparameterize:
        BatchNorms and parallel branches into single convolutions; the same features to float rounding, 1.2x as
        fast on a CPU). Its state_dict then no longer has Meta's trunk keys: load a checkpoint before."""
        super().prepare_for_inference()
        self.image_encoder.trunk.reparameterize()
        return self

    def _build_trunk(self, config: ModelConfig) -> nn.Module:
        return TimmTrunk(config.trunk)

    def _build_memory_cross_attention(self, config: ModelConfig) -> LatentRoPEAttention:
        grid = math.isqrt(config.perceiver_num_latents_2d)
        return LatentRoPEAttention(
            embedding_dim=config.hidden_dim,
            num_heads=config.mem_attn_num_heads,
            downsample_rate=1,
            dropout=config.mem_attn_dropout,
            kv_in_dim=config.mem_dim,
            rope_theta=config.rope_theta,
            q_sizes=(config.feat_size, config.feat_size),
            k_sizes=(grid, grid),
            num_unrotated_keys=config.perceiver_num_latents,
        )

    def _memory_slot_tokens(
        self, mem_feats: torch.Tensor, mem_pos: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Memories are already tokens: (B, M, T, D) features and positions, unchanged."""
        if mem_feats.ndim != 4 or mem_feats.shape[2] != self.spatial_perceiver.num_tokens:
            raise ValueError(
                f"EdgeTAM memories are (B, M, {self.spatial_perceiver.num_tokens}, D) tokens, got {tuple(mem_feats.shape)}"
            )
        return mem_feats, mem_pos

    @torch.inference_mode()
    def encode_memory(
        self,
        feat: torch.Tensor,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
        channels_last: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode a frame and its predicted mask into a compressed memory (Meta's _encode_new_memory with
        the spatial perceiver).

        Arguments: as SAM2Model.encode_memory.
        Returns:
          mem_feat (B, T, D) and mem_pos (B, T, D), T = config.memory_tokens (see PerceiverResampler).
        """
        mem_map, mem_map_pos = _encode_memory_map(self, feat, high_res_masks, object_score_logits, is_mask_from_pts,
                                                  channels_last)
        return self.spatial_perceiver(mem_map, mem_map_pos)
