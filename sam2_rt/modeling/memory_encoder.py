"""Memory encoder of SAM 2: fuses a frame's image features with its predicted mask into a compact memory
(mem_dim channels at stride 16) plus its sine positional encoding.

Parameter names equal Meta's `sam2==1.1.0` modules (`mask_downsampler.encoder.{i}`, `pix_feat_proj`,
`fuser.layers.{i}.{dwconv,norm,pwconv1,pwconv2,gamma}`, `out_proj`).
"""
import copy
import math
from typing import Optional, Tuple, Type

import torch
from torch import Tensor, nn

from sam2_rt.modeling.common import LayerNorm2d, drop_path


class MaskDownSampler(nn.Module):
    """Downsample a mask by `total_stride` with repeated strided convolutions.

    Each stage: Conv(stride) -> LayerNorm2d -> activation, multiplying channels by stride**2; a final
    1x1 conv projects to embed_dim. Arguments as Meta's (embed_dim, kernel_size, stride, padding,
    total_stride, activation). Shapes: (B, 1, H, W) -> (B, embed_dim, H / total_stride, W / total_stride).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        num_stages = round(math.log(total_stride, stride))
        if stride**num_stages != total_stride:
            raise ValueError(f"total_stride={total_stride} is not a power of stride={stride}")
        stages = []
        channels = 1
        for _ in range(num_stages):
            widened = channels * stride**2
            stages += [
                nn.Conv2d(channels, widened, kernel_size=kernel_size, stride=stride, padding=padding),
                LayerNorm2d(widened),
                activation(),
            ]
            channels = widened
        stages.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv -> LayerNorm over channels -> pointwise MLP (x4, GELU) ->
    layer scale -> residual.

    Arguments as Meta's (dim, kernel_size, padding, drop_path, layer_scale_init_value, use_dwconv).
    Shapes: (B, dim, H, W) -> (B, dim, H, W).
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1
        )
        # Applied channels-last, so a plain LayerNorm (same `weight`/`bias` as Meta's LayerNorm2d).
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma: Optional[nn.Parameter] = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None
        )
        self.drop_path_prob = drop_path

    def forward(self, x: Tensor) -> Tensor:
        branch = self.dwconv(x).permute(0, 2, 3, 1)
        branch = self.pwconv2(self.act(self.pwconv1(self.norm(branch))))
        if self.gamma is not None:
            branch = branch * self.gamma
        return x + drop_path(branch.permute(0, 3, 1, 2), self.drop_path_prob, self.training)


class Fuser(nn.Module):
    """`num_layers` copies of `layer` applied in sequence, after an optional 1x1 input projection.

    Arguments as Meta's (layer, num_layers, dim, input_projection). Shapes: (B, C, H, W) -> same.
    """

    def __init__(self, layer: nn.Module, num_layers: int, dim: Optional[int] = None, input_projection: bool = False):
        super().__init__()
        self.proj: nn.Module = nn.Identity()
        if input_projection:
            if dim is None:
                raise ValueError("Fuser with input_projection needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode (image features, mask) of one frame into a memory and its positional encoding.

    Arguments (as Meta's): out_dim (memory channels, mem_dim), mask_downsampler (mask (B,1,S,S) ->
    (B,in_dim,S/16,S/16)), fuser (in_dim channels), position_encoding (module mapping a (B,C,h,w) map to
    its (B,C,h,w) sine encoding), in_dim (channels of the image features).
    """

    def __init__(
        self,
        out_dim: int,
        mask_downsampler: nn.Module,
        fuser: nn.Module,
        position_encoding: nn.Module,
        in_dim: int = 256,
    ) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj: nn.Module = nn.Identity() if out_dim == in_dim else nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat: Tensor, masks: Tensor, skip_mask_sigmoid: bool = False) -> Tuple[Tensor, Tensor]:
        """Encode a memory.

        pix_feat: (B, in_dim, h, w) image features of the frame (stride 16).
        masks: (B, 1, 16h, 16w) mask logits, or probabilities with skip_mask_sigmoid=True (SAM 2 passes
          its own scaled sigmoid).
        Returns (features (B, out_dim, h, w), positional encoding (B, out_dim, h, w)) in pix_feat's dtype.
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        fused = self.pix_feat_proj(pix_feat.to(masks.device)) + self.mask_downsampler(masks)
        features = self.out_proj(self.fuser(fused))
        return features, self.position_encoding(features).to(features.dtype)
