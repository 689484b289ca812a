"""Hiera image trunk (hierarchical ViT with windowed attention and query pooling), as used by SAM 2.

Parameter names follow Meta's ``image_encoder.trunk.*`` keys. Token maps are channels-last (B, H, W, C)
inside the trunk; the outputs are channels-first.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2_rt.modeling.common import MLP


def partition_windows(x: torch.Tensor, window: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Cut a token map into non-overlapping square windows, zero-padding bottom/right to a whole number.

    Arguments:
      x: (B, H, W, C) token map.
      window: window side in tokens.
    Returns:
      windows (B * nH * nW, window, window, C), row-major over (image, window row, window column),
      and the padded size (nH * window, nW * window).
    """
    batch, height, width, channels = x.shape
    rows = -(-height // window)
    cols = -(-width // window)
    padded_h, padded_w = rows * window, cols * window
    if padded_h != height or padded_w != width:
        x = F.pad(x, (0, 0, 0, padded_w - width, 0, padded_h - height))
    x = x.reshape(batch, rows, window, cols, window, channels).transpose(2, 3)
    return x.reshape(batch * rows * cols, window, window, channels), (padded_h, padded_w)


def merge_windows(
    windows: torch.Tensor, window: int, padded_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of partition_windows: stitch windows back and crop the padding.

    Arguments:
      windows: (B * nH * nW, window, window, C).
      padded_hw: (nH * window, nW * window).
      hw: (H, W) to crop to.
    Returns:
      (B, H, W, C).
    """
    rows, cols = padded_hw[0] // window, padded_hw[1] // window
    channels = windows.shape[-1]
    batch = windows.shape[0] // (rows * cols)
    x = windows.reshape(batch, rows, cols, window, window, channels).transpose(2, 3)
    x = x.reshape(batch, rows * window, cols * window, channels)
    return x[:, : hw[0], : hw[1]]


def _max_pool_channels_last(x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """Max-pool a (B, H, W, C) map spatially. Returns (B, H', W', C)."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Stride-4 patchify convolution (7x7 kernel, padding 3): (B, 3, S, S) -> (B, S/4, S/4, C)."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention over each (window of a) token map, with optional query max-pooling.

    When pooling, queries are pooled spatially before attention while keys and values keep the full
    resolution, so the output map is smaller than the input by the pooling stride.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: Optional[nn.MaxPool2d] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h, w, dim) -> (N, h', w', dim_out); h' = h / stride when pooling, else h."""
        num, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(num, height * width, 3, self.num_heads, -1)
        # (3, N, heads, tokens, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.q_pool is not None:
            head_dim = query.shape[-1]
            query_map = query.permute(0, 2, 1, 3).reshape(num, height, width, -1)
            query_map = _max_pool_channels_last(query_map, self.q_pool)
            height, width = query_map.shape[1:3]
            query = query_map.reshape(num, height * width, self.num_heads, head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(1, 2).reshape(num, height, width, -1)
        return self.proj(attended)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block: (windowed) attention + MLP; at a stage change it widens the channels
    (linear shortcut projection) and halves the resolution (query pooling)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: Optional[Tuple[int, int]] = None,
        window_size: int = 0,
    ) -> None:
        """
        Arguments:
          dim, dim_out: input and output channels.
          num_heads: attention heads.
          mlp_ratio: MLP hidden width / dim_out.
          q_stride: query pooling stride (stage change), None otherwise.
          window_size: attention window side in input tokens; 0 = global attention.
        """
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', dim_out), H' = H / q_stride at a stage change."""
        normed = self.norm1(x)
        shortcut = x
        if self.dim != self.dim_out:
            shortcut = self.proj(normed)
            if self.pool is not None:
                shortcut = _max_pool_channels_last(shortcut, self.pool)

        if self.window_size > 0:
            windows, padded_hw = partition_windows(normed, self.window_size)
            attended = self.attn(windows)
            # Pooled queries shrink every window (and so the padded grid) by the pooling stride.
            out_window = attended.shape[1]
            scale = self.window_size // out_window
            attended = merge_windows(
                attended,
                out_window,
                (padded_hw[0] // scale, padded_hw[1] // scale),
                (shortcut.shape[1], shortcut.shape[2]),
            )
        else:
            attended = self.attn(normed)

        x = shortcut + attended
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Four-stage Hiera trunk (https://arxiv.org/abs/2306.00989) with windowed absolute position
    embeddings (https://arxiv.org/abs/2311.05613)."""

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        q_pool: int = 3,
        q_stride: Tuple[int, int] = (2, 2),
        stages: Sequence[int] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        mlp_ratio: float = 4.0,
    ) -> None:
        """
        Arguments (Meta's names and defaults):
          embed_dim, num_heads: width and heads of stage 1, multiplied by dim_mul / head_mul per stage.
          q_pool: how many stage changes pool (halve the resolution), q_stride: their stride.
          stages: blocks per stage.
          window_pos_embed_bkg_spatial_size: grid of the interpolated background position embedding.
          window_spec: window side per stage; global_att_blocks: blocks with global attention.
          mlp_ratio: MLP width / block width.
        """
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError("stages and window_spec must have one entry per stage")
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        if not 0 <= q_pool < len(stages):
            raise ValueError(f"q_pool must be in [0, {len(stages) - 1}], got {q_pool}")
        pooling_blocks = {end + 1 for end in self.stage_ends[:-1][:q_pool]}

        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        self.blocks = nn.ModuleList()
        width, heads, stage = embed_dim, num_heads, 0
        for index in range(sum(stages)):
            # A stage's first block still uses the previous stage's window: it sees the unpooled map.
            window = 0 if index in global_att_blocks else window_spec[stage]
            width_out = width
            if index - 1 in self.stage_ends:
                width_out = int(width * dim_mul)
                heads = int(heads * head_mul)
                stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    width,
                    width_out,
                    heads,
                    mlp_ratio=mlp_ratio,
                    q_stride=q_stride if index in pooling_blocks else None,
                    window_size=window,
                )
            )
            width = width_out
        self.channel_list = [self.blocks[end].dim_out for end in reversed(self.stage_ends)]

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """Background embedding resized (bicubic) to the token grid plus the per-window embedding tiled
        over it. Returns (1, height, width, embed_dim); height and width must be multiples of the
        first-stage window."""
        window = self.pos_embed_window.shape[-1]
        background = F.interpolate(self.pos_embed, size=(height, width), mode="bicubic")
        tiled = self.pos_embed_window.tile(1, 1, height // window, width // window)
        return (background + tiled).permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """
        Arguments:
          images: (B, 3, S, S) normalised RGB.
        Returns:
          one feature map per stage, finest first: (B, C_i, S / 2**(i+2), S / 2**(i+2)),
          C_i = embed_dim * dim_mul**i.
        """
        x = self.patch_embed(images)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        stage_outputs = []
        ends = set(self.stage_ends)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in ends:
                stage_outputs.append(x.permute(0, 3, 1, 2))
        return stage_outputs
