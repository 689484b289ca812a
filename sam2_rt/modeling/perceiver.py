"""EdgeTAM's spatial perceiver: compresses one memory frame (mem_dim x h x w) into a fixed set of tokens.

Two kinds of learned latents read the memory through the same layers:
- global latents (``latents``, N1 of them) each attend to every position of the map; the map's keys and
  values carry its sine position encoding; the latents themselves get a zero position encoding;
- 2-D latents (``latents_2d``, N2 = n x n of them) each attend only to its own window of the map (an n x n
  split of h x w, no position encoding), and are then placed on the n x n grid: their position encoding is
  the sine encoding of that grid, and memory attention rotates them with RoPE on it.
So every memory is N1 + N2 tokens (512 for EdgeTAM), whatever the image size: memory attention's cost
and a stream's memory no longer grow with the frame's h x w.

Parameter names equal Meta's EdgeTAM (``spatial_perceiver.*`` of edgetam-dimos==1.0.1), so its checkpoint
loads strictly. Inference only: Meta's dropouts (0 in EdgeTAM) are not part of this module.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_rt.modeling.position_encoding import PositionEmbeddingSine


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Pre-norm MLP without biases: LayerNorm, Linear(dim, mult * dim), GELU, Linear(mult * dim, dim)
    (keys ``0`` norm, ``1`` and ``3`` linears). Shapes: (..., dim) -> (..., dim)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, mult * dim, bias=False),
        nn.GELU(),
        nn.Linear(mult * dim, dim, bias=False),
    )


class _HeadsAttention(nn.Module):
    """Shared projections of the perceiver's attentions: to_q, to_kv (keys and values in one matrix), to_out,
    all without bias; inner width heads * dim_head."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # SDPA's own default, 1 / sqrt(dim_head), given explicitly: torch-tensorrt's attention converter takes
        # the default's path through the query's runtime shape, which fails when the query is a constant (the
        # first layer's queries are learned latents only, folded into one constant tensor when exported).
        self.scale = 1.0 / math.sqrt(dim_head)
        inner = dim_head * heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """(B, Nq, inner), (B, Nk, inner) x2 -> (B, Nq, dim): SDPA per head (scale 1 / sqrt(dim_head)), merged,
        to_out."""

        def heads(x: Tensor) -> Tensor:
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=self.scale)
        return self.to_out(out.transpose(1, 2).flatten(2))


class LatentCrossAttention(_HeadsAttention):
    """Latents (queries) attend to memory tokens; each side has its own LayerNorm (norm_latents, norm_x).

    The position encoding, when given, is added to the projected keys AND values (Meta's choice), which
    needs pos of width heads * dim_head.
    """

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__(dim, dim_head, heads)
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)

    def forward(self, latents: Tensor, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """latents (B, L, dim), x (B, N, dim), pos optional (B, N, inner). Returns (B, L, dim)."""
        q = self.to_q(self.norm_latents(latents))
        k, v = self.to_kv(self.norm_x(x)).chunk(2, dim=-1)
        if pos is not None:
            k, v = k + pos, v + pos
        return self._attend(q, k, v)


class LatentSelfAttention(_HeadsAttention):
    """Self-attention among the latents (pre-norm ``norm``)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__(dim, dim_head, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, latents: Tensor) -> Tensor:
        """(B, L, dim) -> (B, L, dim)."""
        normed = self.norm(latents)
        k, v = self.to_kv(normed).chunk(2, dim=-1)
        return self._attend(self.to_q(normed), k, v)


class PerceiverLayer(nn.Module):
    """Residual blocks: cross-attention to the memory (attn), feed-forward (ff), then, with use_self_attn,
    self-attention among the latents (self_attn) and a feed-forward (self_ff)."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int, use_self_attn: bool) -> None:
        super().__init__()
        self.attn = LatentCrossAttention(dim, dim_head, heads)
        self.ff = feed_forward(dim, ff_mult)
        self.use_self_attn = use_self_attn
        if use_self_attn:
            self.self_attn = LatentSelfAttention(dim, dim_head, heads)
            self.self_ff = feed_forward(dim, ff_mult)

    def forward(self, latents: Tensor, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """latents (B, L, dim), x (B, N, dim), pos optional (B, N, dim). Returns (B, L, dim)."""
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        if self.use_self_attn:
            latents = latents + self.self_attn(latents)
            latents = latents + self.self_ff(latents)
        return latents


class PerceiverResampler(nn.Module):
    """Memory frame (B, dim, h, w) + its position encoding -> (B, N1 + N2, dim) tokens + encodings.

    Arguments:
      dim: memory channels (mem_dim, 64).
      depth: number of PerceiverLayers, shared by both kinds of latents.
      num_latents: N1 global latents.
      num_latents_2d: N2 2-D latents, a square number n * n; h and w must be multiples of n.
      dim_head, heads: attention width per head and head count.
      ff_mult: feed-forward hidden size relative to dim.
      use_self_attn: layers also run self-attention among the latents.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_latents: int,
        num_latents_2d: int,
        dim_head: int = 64,
        heads: int = 1,
        ff_mult: int = 4,
        use_self_attn: bool = True,
    ) -> None:
        super().__init__()
        grid = math.isqrt(num_latents_2d)
        if num_latents <= 0 or grid * grid != num_latents_2d:
            raise ValueError(
                f"need num_latents > 0 and a square num_latents_2d, got {num_latents} and {num_latents_2d}"
            )
        if dim_head * heads != dim:
            raise ValueError(f"heads * dim_head must equal dim ({dim}): the position encoding is added per head")
        self.grid = grid
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.latents_2d = nn.Parameter(torch.randn(num_latents_2d, dim))
        self.layers = nn.ModuleList(
            PerceiverLayer(dim, dim_head, heads, ff_mult, use_self_attn) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        # Position encoding of the 2-D latents: the sine encoding of their n x n grid, row-major, (N2, dim).
        # A constant of the architecture, not a weight: a buffer outside the state_dict.
        grid_pos = PositionEmbeddingSine(dim).grid(grid, grid, torch.device("cpu"))
        self.register_buffer("latents_2d_pos", grid_pos.flatten(1).t().contiguous(), persistent=False)

    @property
    def num_tokens(self) -> int:
        """N1 + N2, the tokens of one compressed memory."""
        return self.latents.shape[0] + self.latents_2d.shape[0]

    def forward(self, feat: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor]:
        """Compress memories.

        Arguments:
          feat: (B, dim, h, w) memory features (MemoryEncoder output).
          pos: (B, dim, h, w) their sine position encoding.
        Returns:
          tokens (B, N1 + N2, dim): normed global latents, then normed 2-D latents in row-major grid order;
          pos (B, N1 + N2, dim): zeros for the global latents, the grid's sine encoding for the 2-D ones.
        """
        batch, dim, height, width = feat.shape
        if height % self.grid or width % self.grid:
            raise ValueError(f"a {height}x{width} memory does not split into {self.grid}x{self.grid} windows")
        tokens = feat.flatten(2).transpose(1, 2)  # (B, h*w, dim)
        global_latents = self.latents.expand(batch, -1, -1)
        token_pos = pos.flatten(2).transpose(1, 2).to(feat.dtype)
        for layer in self.layers:
            global_latents = layer(global_latents, tokens, token_pos)

        # One 2-D latent per window: a batch of B * N2 single-query attentions over the window's tokens.
        win_h, win_w = height // self.grid, width // self.grid
        windows = (
            feat.reshape(batch, dim, self.grid, win_h, self.grid, win_w)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(batch * self.grid * self.grid, win_h * win_w, dim)
        )
        local_latents = self.latents_2d.expand(batch, -1, -1).reshape(-1, 1, dim)
        for layer in self.layers:
            local_latents = layer(local_latents, windows)
        local_latents = local_latents.reshape(batch, self.grid * self.grid, dim)

        latents = self.norm(torch.cat((global_latents, local_latents), dim=1))
        latent_pos = torch.cat(
            (
                feat.new_zeros(batch, global_latents.shape[1], dim),
                self.latents_2d_pos.to(feat.dtype).expand(batch, -1, -1),
            ),
            dim=1,
        )
        return latents, latent_pos
