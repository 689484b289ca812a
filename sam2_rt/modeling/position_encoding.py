"""Fixed sine position encodings (2-D for feature maps, 1-D for temporal distances).

Both are pure functions of shapes and constants, recomputed in forward: no caches, nothing to load, and
torch.export folds them into constants of the static-shape graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _inverse_frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """Divisors temperature ** (2 * (i // 2) / num_feats) for i in [0, num_feats): pairs share a frequency.

    Returns: (num_feats,) float32.
    """
    pair_index = torch.div(torch.arange(num_feats, device=device), 2, rounding_mode="floor")
    return temperature ** (2 * pair_index.to(torch.float32) / num_feats)


def sine_1d_pe(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer-style sine encoding of scalar positions (Meta's get_1d_sine_pe).

    Arguments:
      positions: (...) float positions (e.g. normalised temporal distances).
      dim: even output width.
    Returns:
      (..., dim) float32: first half sin(p / d_i), second half cos(p / d_i), d_i = temperature ** (2*(i//2)/(dim/2)).
    """
    divisors = _inverse_frequencies(dim // 2, temperature, positions.device)
    angles = positions.to(torch.float32).unsqueeze(-1) / divisors
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PositionEmbeddingSine(nn.Module):
    """2-D sine encoding of a feature grid, normalised to (0, 2*pi] along each axis (DETR style).

    The output channels are [y-encoding, x-encoding], each num_pos_feats / 2 wide and alternating
    sin/cos (channel 2k is sin, channel 2k+1 is cos of the same frequency).
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        """
        Arguments:
          num_pos_feats: total output channels (even).
          temperature: frequency base.
          normalize: divide grid coordinates by the grid extent (required when scale is given).
          scale: coordinate range after normalisation (default 2*pi).
        """
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale requires normalize=True")
        self.half_feats = num_pos_feats // 2
        self.temperature = float(temperature)
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else float(scale)

    def _encode_axis(self, length: int, device: torch.device) -> torch.Tensor:
        """Encoding of the 1-based coordinates 1..length of one axis. Returns: (length, half_feats) float32."""
        coords = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        if self.normalize:
            coords = coords / (length + 1e-6) * self.scale
        angles = coords[:, None] / _inverse_frequencies(self.half_feats, self.temperature, device)
        # Even channels take sin, odd channels cos: interleave (sin_0, cos_1, sin_2, cos_3, ...).
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)

    def grid(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Encoding of a height x width grid. Returns: (num_pos_feats, height, width) float32."""
        enc_y = self._encode_axis(height, device).t()[:, :, None].expand(-1, height, width)
        enc_x = self._encode_axis(width, device).t()[:, None, :].expand(-1, height, width)
        return torch.cat([enc_y, enc_x], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          x: (B, C, H, W) feature map; only its shape, device and dtype are used.
        Returns:
          (B, num_pos_feats, H, W) in x's dtype.
        """
        batch, _, height, width = x.shape
        return self.grid(height, width, x.device).to(x.dtype)[None].expand(batch, -1, -1, -1)
