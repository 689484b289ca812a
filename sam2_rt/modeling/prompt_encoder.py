"""Prompt encoder of SAM 2: embeds clicks, boxes and mask prompts for the mask decoder.

Parameter and buffer names equal Meta's `sam2==1.1.0` PromptEncoder
(`pe_layer.positional_encoding_gaussian_matrix`, `point_embeddings.{0..3}`, `not_a_point_embed`,
`mask_downscaling.{0,1,3,4,6}`, `no_mask_embed`).
"""
import math
from typing import Optional, Tuple, Type

import torch
from torch import Tensor, nn

from sam2_rt.modeling.common import LayerNorm2d

# Point label codes (Meta's): -1 padding (not a point), 0 negative click, 1 positive click,
# 2 box top-left corner, 3 box bottom-right corner.
PADDING_LABEL = -1
BOX_TOP_LEFT_LABEL = 2
BOX_BOTTOM_RIGHT_LABEL = 3


class RandomFourierPositionEncoding(nn.Module):
    """Positional encoding of 2-D coordinates with fixed random Fourier features.

    Buffer `positional_encoding_gaussian_matrix` (2, num_pos_feats) ~ scale * N(0, 1) (loaded from the
    checkpoint). A point with normalised coordinates p in [0, 1]^2 maps to
    [sin(2 pi (2p - 1) G), cos(2 pi (2p - 1) G)], i.e. 2 * num_pos_feats channels.
    """

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def encode_unit(self, coords: Tensor) -> Tensor:
        """(..., 2) float coordinates in [0, 1] (x, y) -> (..., 2 * num_pos_feats)."""
        phase = (2.0 * math.pi) * ((2.0 * coords - 1.0) @ self.positional_encoding_gaussian_matrix)
        return torch.cat((phase.sin(), phase.cos()), dim=-1)

    def encode_pixels(self, coords: Tensor, image_size: Tuple[int, int]) -> Tensor:
        """(B, N, 2) pixel coordinates (x, y) of an image of size (H, W) -> (B, N, 2 * num_pos_feats)."""
        height, width = image_size
        scale = coords.new_tensor([1.0 / width, 1.0 / height])
        return self.encode_unit(coords.float() * scale)

    def forward(self, size: Tuple[int, int]) -> Tensor:
        """Encoding of the centres of an (h, w) grid of cells -> (2 * num_pos_feats, h, w) float32."""
        height, width = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)
        return self.encode_unit(grid).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Embeds prompts into sparse tokens (points, box corners) and a dense map (mask prompt).

    Arguments (as Meta's):
      embed_dim: channels of the embeddings (the decoder's transformer_dim).
      image_embedding_size: (h, w) of the image embedding (image_size / 16).
      input_image_size: (H, W) of the model input image in pixels; point coordinates are in this frame.
      mask_in_chans: hidden channels of the mask-prompt downscaler.
      activation: activation class of the mask-prompt downscaler.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = RandomFourierPositionEncoding(embed_dim // 2)
        # One learned offset per label code 0..3 (negative, positive, box top-left, box bottom-right).
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image-embedding grid: (1, embed_dim, h, w) float32."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_offsets(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, N) label codes -> (B, N, embed_dim) learned offsets; codes outside -1..3 get zeros."""
        table = torch.cat([self.not_a_point_embed.weight] + [emb.weight for emb in self.point_embeddings], dim=0)
        codes = torch.arange(PADDING_LABEL, self.num_point_embeddings, device=labels.device)
        one_hot = (labels.unsqueeze(-1) == codes).to(dtype)
        return one_hot @ table.to(dtype)

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """(B, N, 2) pixel coords + (B, N) labels -> (B, N (+1 if pad), embed_dim)."""
        if pad:
            points = torch.cat((points, points.new_zeros(points.shape[0], 1, 2)), dim=1)
            labels = torch.cat((labels, labels.new_full((labels.shape[0], 1), PADDING_LABEL)), dim=1)
        # +0.5: a pixel index addresses the centre of its pixel.
        position = self.pe_layer.encode_pixels(points + 0.5, self.input_image_size)
        is_point = (labels != PADDING_LABEL).unsqueeze(-1)
        position = position * is_point.to(position.dtype)
        return position + self._label_offsets(labels, position.dtype)

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """(B, 4) boxes x0 y0 x1 y1 in pixels -> (B, 2, embed_dim) corner tokens."""
        corners = boxes.reshape(-1, 2, 2) + 0.5
        position = self.pe_layer.encode_pixels(corners, self.input_image_size)
        corner_offsets = torch.cat(
            (self.point_embeddings[BOX_TOP_LEFT_LABEL].weight, self.point_embeddings[BOX_BOTTOM_RIGHT_LABEL].weight)
        )
        return position + corner_offsets.to(position.dtype)

    def forward(
        self,
        points: Optional[Tuple[Tensor, Tensor]],
        boxes: Optional[Tensor],
        masks: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """Embed prompts.

        points: optional (coords (B, N, 2) float pixels (x, y) of the input image, labels (B, N) int codes
          -1 padding / 0 negative / 1 positive / 2 box top-left / 3 box bottom-right). Without `boxes`, one
          padding token is appended (as Meta's SAM does).
        boxes: optional (B, 4) x0 y0 x1 y1 pixels.
        masks: optional (B, 1, 4h, 4w) mask logits.
        Returns sparse (B, N', embed_dim) and dense (B, embed_dim, h, w) embeddings.
        """
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        weight = self.no_mask_embed.weight
        sparse = [weight.new_empty((batch, 0, self.embed_dim))]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1) if len(sparse) > 1 else sparse[0]
        if masks is not None:
            dense_embeddings = self.mask_downscaling(masks)
        else:
            dense_embeddings = weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse_embeddings, dense_embeddings
