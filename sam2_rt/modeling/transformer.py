"""Attention layers of SAM 2: plain multi-head attention, attention with 2-D rotary position encoding
(RoPE), and the two-way transformer of the mask decoder.

RoPE is computed with real cos/sin tables (no complex numbers), so the graph exports and compiles with
backends that lack complex support (TensorRT). Parameter names equal Meta's `sam2==1.1.0` modules.
"""
import math
from typing import Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_rt.modeling.common import MLP


def axial_rope_angles(head_dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> Tensor:
    """Rotation angles of 2-D axial RoPE for a row-major grid of `end_y` rows by `end_x` columns.

    Channel pairs (2j, 2j+1) of a head are rotated together. The first head_dim/4 pairs rotate with the
    column index x, the last head_dim/4 pairs with the row index y, both at frequencies
    theta ** (-4 i / head_dim), i = 0 .. head_dim/4 - 1 (Meta's `compute_axial_cis`).

    Returns: (end_x * end_y, head_dim // 2) float32 angles in radians, one per pair; token n sits at
    x = n % end_x, y = n // end_x.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim))
    token = torch.arange(end_x * end_y, dtype=torch.float32)
    col = token % end_x
    row = torch.div(token, end_x, rounding_mode="floor")
    return torch.cat([torch.outer(col, inv_freq), torch.outer(row, inv_freq)], dim=-1)


def half_split_rope_tables(angles: Tensor) -> Tuple[Tensor, Tensor]:
    """Tables for `rotate_half_split` from (L, P) pair angles: cos (L, 2P) = [cos, cos], sin (L, P)."""
    cos = angles.cos()
    return torch.cat((cos, cos), dim=-1), angles.sin()


def rotate_half_split(x: Tensor, cos_table: Tensor, sin: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """Rotate channel pairs stored half-split: pair j is (x[..., j], x[..., j + D/2]).

    x: (..., L, D); cos_table (L, D) and sin (L, D/2) from `half_split_rope_tables`, broadcast over the
    leading dims. Returns a new tensor shaped like x, or writes into `out` (shaped like x, not overlapping
    it) and returns it. Every operand is contiguous in its last dim, so the kernels vectorise (an
    interleaved pair layout needs stride-2 kernels, several times slower on CPU), and the result is written
    in place into one fresh tensor (large temporaries cost page faults).
    """
    first, second = x.chunk(2, dim=-1)
    half = x.shape[-1] // 2
    out = x * cos_table if out is None else torch.mul(x, cos_table, out=out)
    out[..., :half].addcmul_(second, sin, value=-1.0)
    # An explicit end: an open slice exports as slice_scatter with end=INT64_MAX, which torch-tensorrt's
    # converter does not clamp (memory attention then fails to build an engine).
    out[..., half : 2 * half].addcmul_(first, sin)
    return out


class Attention(nn.Module):
    """Multi-head attention whose inner width can be smaller than the embedding (downsample_rate).

    Arguments (as Meta's): embedding_dim of queries and output; num_heads; downsample_rate divides the
    internal width; dropout on attention weights (training only); kv_in_dim channels of keys and values
    (defaults to embedding_dim).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide the internal width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _heads(self, x: Tensor) -> Tensor:
        """(B, N, internal_dim) -> (B, heads, N, head_dim) view."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_valid: Optional[Tensor]) -> Tensor:
        """SDPA over split heads, then merge heads and project: (B, heads, Nq, d) x3 -> (B, Nq, embedding_dim)."""
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_valid: Optional[Tensor] = None) -> Tensor:
        """Attend queries to keys.

        q: (B, Nq, embedding_dim); k, v: (B, Nk, kv_in_dim); key_valid: optional (B, Nk) bool, False keys
        are left out of the softmax (every row needs at least one True).
        Returns (B, Nq, embedding_dim).
        """
        return self._attend(
            self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v)), key_valid
        )


class RoPEAttention(Attention):
    """Attention with 2-D axial rotary position encoding on queries and keys.

    Queries are a row-major feat_sizes grid (Nq = w * h tokens). Keys are either the same grid
    (self-attention) or, with rope_k_repeat, several stacked copies of it (memories of past frames,
    each rotated like the query grid) followed by `num_k_exclude_rope` keys without rotation
    (object pointers).

    Arguments: those of `Attention`, plus rope_theta (frequency base), rope_k_repeat, and
    feat_sizes = (w, h) of the query grid the cos/sin tables are built for. A query length that does
    not match w * h is served from a square grid computed in forward (as Meta does for other sizes).

    Implementation: RoPE rotates channel pairs (2j, 2j+1) of each head. The query and key projections
    are evaluated with their output channels reordered per head to (0, 2, 4, ..., 1, 3, 5, ...), so each
    pair is split across the two halves of the head and the rotation needs only contiguous elementwise
    ops. Dot products of queries with keys do not depend on a channel order both share, and values keep
    Meta's order, so the output is Meta's.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: Sequence[int] = (64, 64),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.head_dim = self.internal_dim // self.num_heads
        angles = axial_rope_angles(self.head_dim, int(feat_sizes[0]), int(feat_sizes[1]), rope_theta)
        cos_table, sin = half_split_rope_tables(angles)
        in_head = torch.cat((torch.arange(0, self.head_dim, 2), torch.arange(1, self.head_dim, 2)))
        order = (torch.arange(self.num_heads)[:, None] * self.head_dim + in_head).flatten()
        # Derived constants, not weights: kept out of the state_dict so its keys equal Meta's.
        self.register_buffer("rope_cos", cos_table, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("half_split_order", order, persistent=False)

    def _tables(self, num_tokens: int, like: Tensor) -> Tuple[Tensor, Tensor]:
        """cos (num_tokens, head_dim) and sin (num_tokens, head_dim / 2) tables in the dtype of `like`."""
        if self.rope_cos.shape[0] == num_tokens:
            return self.rope_cos.to(like.dtype), self.rope_sin.to(like.dtype)
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"RoPE needs a square token grid, got {num_tokens} query tokens")
        angles = axial_rope_angles(self.head_dim, side, side, self.rope_theta).to(like.device)
        cos_table, sin = half_split_rope_tables(angles)
        return cos_table.to(like.dtype), sin.to(like.dtype)

    def _project_half_split(self, proj: nn.Linear, x: Tensor) -> Tensor:
        """proj(x) with output channels in half-split order, split into heads: (B, heads, N, head_dim)."""
        order = self.half_split_order
        return self._heads(F.linear(x, proj.weight.index_select(0, order), proj.bias.index_select(0, order)))

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        num_k_exclude_rope: int = 0,
        key_valid: Optional[Tensor] = None,
    ) -> Tensor:
        """Attend with RoPE.

        q: (B, Nq, embedding_dim), Nq = grid tokens; k, v: (B, Nk, kv_in_dim) with
        Nk = r * Nq + num_k_exclude_rope (r = 1 unless rope_k_repeat); key_valid: optional (B, Nk) bool
        (False keys are left out of the softmax). Returns (B, Nq, embedding_dim).
        """
        q = self._project_half_split(self.q_proj, q)
        k = self._project_half_split(self.k_proj, k)
        v = self._heads(self.v_proj(v))
        num_q = q.shape[2]
        num_rope = k.shape[2] - num_k_exclude_rope
        if num_rope != num_q and not self.rope_k_repeat:
            raise ValueError(f"{num_rope} rotated keys for {num_q} queries needs rope_k_repeat=True")
        if num_rope % num_q != 0:
            raise ValueError(f"{num_rope} rotated keys are not a whole number of {num_q}-token grids")
        cos_table, sin = self._tables(num_q, q)
        q = rotate_half_split(q, cos_table, sin)
        # Keys: each stacked grid gets the query grid's rotation; the tables broadcast over the copies.
        k_grids = k[:, :, :num_rope].unflatten(2, (num_rope // num_q, num_q))
        if num_k_exclude_rope == 0:
            k = rotate_half_split(k_grids, cos_table, sin).flatten(2, 3)
        elif torch.compiler.is_compiling():
            k = torch.cat((rotate_half_split(k_grids, cos_table, sin).flatten(2, 3), k[:, :, num_rope:]), dim=2)
        else:
            # Eager: rotate straight into the full key tensor rather than concatenating (a copy of every key).
            keys = torch.empty_like(k)
            rotate_half_split(k_grids, cos_table, sin, out=keys[:, :, :num_rope].unflatten(2, k_grids.shape[2:4]))
            keys[:, :, num_rope:] = k[:, :, num_rope:]
            k = keys
        return self._attend(q, k, v, key_valid)


class TwoWayAttentionBlock(nn.Module):
    """One block of the two-way transformer: token self-attention, tokens -> image cross-attention,
    token MLP, image -> tokens cross-attention; post-norm residuals.

    Arguments (as Meta's): embedding_dim, num_heads, mlp_dim (hidden width of the token MLP),
    activation of the MLP, attention_downsample_rate of both cross-attentions, skip_first_layer_pe
    (first block: the sparse tokens replace, not add to, the self-attention input).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        """queries, query_pe: (B, Nt, C) sparse tokens; keys: (B, HW, C) image tokens; key_pe: (B or 1, HW, C).
        Returns the updated (queries, keys)."""
        if self.skip_first_layer_pe:
            queries = self.norm1(self.self_attn(queries, queries, queries))
        else:
            q = queries + query_pe
            queries = self.norm1(queries + self.self_attn(q, q, queries))

        keys_with_pe = keys + key_pe
        q = queries + query_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, keys_with_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_with_pe, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Transformer of the SAM mask decoder: sparse tokens and image tokens attend to each other.

    Arguments (as Meta's): depth (number of blocks), embedding_dim, num_heads, mlp_dim, activation of
    the token MLPs, attention_downsample_rate of the cross-attentions.
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(index == 0),
            )
            for index in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the blocks.

        image_embedding: (B, C, h, w); image_pe: (B or 1, C, h, w) positional encoding of the image grid;
        point_embedding: (B, Nt, C) output tokens + prompt tokens (also their positional encoding).
        Returns (tokens (B, Nt, C), image tokens (B, h*w, C)).
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        queries = queries + self.final_attn_token_to_image(q, keys + key_pe, keys)
        return self.norm_final_attn(queries), keys
