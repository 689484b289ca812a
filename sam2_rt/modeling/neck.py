"""FPN neck of the SAM 2 image encoder (``image_encoder.neck.*``): 1x1 lateral projections to d_model,
with a top-down path only on the levels listed in ``fpn_top_down_levels``."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sam2_rt.modeling.position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """Feature pyramid without output convolutions.

    Level i of the input (finest first) is projected by ``convs[n - i]`` (Meta's order: convs[0] is the
    coarsest level). A level listed in ``fpn_top_down_levels`` adds the 2x-upsampled result of the next
    coarser level; any other level keeps only its lateral projection and restarts the top-down chain.
    """

    def __init__(
        self,
        position_encoding: PositionEmbeddingSine,
        d_model: int,
        backbone_channel_list: Sequence[int],
        fpn_interp_model: str = "bilinear",
        fpn_top_down_levels: Optional[Sequence[int]] = None,
    ) -> None:
        """
        Arguments:
          position_encoding: sine encoding of the output maps (no parameters; used by the image encoder).
          d_model: output channels of every level.
          backbone_channel_list: trunk channels, coarsest level first.
          fpn_interp_model: "nearest" or "bilinear" top-down upsampling.
          fpn_top_down_levels: levels with a top-down input (default: all).
        """
        super().__init__()
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for channels in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(channels, d_model, kernel_size=1))
            self.convs.append(lateral)
        self.fpn_interp_model = fpn_interp_model
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.fpn_top_down_levels = frozenset(levels)

    def forward(self, trunk_features: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Arguments:
          trunk_features: per level, finest first, (B, C_i, H_i, W_i) with H_i = 2 * H_{i+1}.
        Returns:
          per level, finest first, (B, d_model, H_i, W_i).
        """
        last = len(self.convs) - 1
        coarse_to_fine: List[torch.Tensor] = []
        coarser: Optional[torch.Tensor] = None
        for level in range(last, -1, -1):
            lateral = self.convs[last - level](trunk_features[level])
            if coarser is not None and level in self.fpn_top_down_levels:
                upsampled = F.interpolate(
                    coarser,
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                )
                lateral = lateral + upsampled
            coarse_to_fine.append(lateral)
            coarser = lateral
        return coarse_to_fine[::-1]
