"""EdgeTAM's memory cross-attention: RoPE on the query grid and on the 2-D latents of each memory.

SAM 2 rotates each memory like the query grid (every memory is an h x w map). EdgeTAM's memories are
perceiver outputs (sam2_rt.modeling.perceiver): per frame, N1 global latents (not rotated) followed by
N2 = n x n 2-D latents, rotated with the axial RoPE of their own n x n grid. Object-pointer tokens at the
end are not rotated. Meta's class is ``RoPEAttentionv2`` (edgetam-dimos==1.0.1); like our RoPEAttention this
one uses real cos/sin tables and the half-split channel order (see RoPEAttention), so the output is Meta's.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from sam2_rt.modeling.transformer import (
    RoPEAttention,
    axial_rope_angles,
    half_split_rope_tables,
    rotate_half_split,
)


class LatentRoPEAttention(RoPEAttention):
    """Cross-attention from an h x w query grid to memories of (unrotated latents, rotated latent grid).

    Arguments: those of Attention (embedding_dim, num_heads, downsample_rate, dropout, kv_in_dim), plus
      rope_theta: frequency base;
      q_sizes: (w, h) of the query grid (the stride-16 feature map);
      k_sizes: (w, h) of the latent grid of each memory (16 x 16 for EdgeTAM);
      num_unrotated_keys: keys before the latent grid in each memory (the global latents, 256).
    """

    def __init__(
        self,
        *args,
        q_sizes: Sequence[int],
        k_sizes: Sequence[int],
        num_unrotated_keys: int,
        rope_theta: float = 10000.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, rope_theta=rope_theta, rope_k_repeat=True, feat_sizes=q_sizes, **kwargs)
        key_angles = axial_rope_angles(self.head_dim, int(k_sizes[0]), int(k_sizes[1]), rope_theta)
        key_cos, key_sin = half_split_rope_tables(key_angles)
        # Derived constants like the query tables: outside the state_dict.
        self.register_buffer("key_rope_cos", key_cos, persistent=False)
        self.register_buffer("key_rope_sin", key_sin, persistent=False)
        self.num_unrotated_keys = num_unrotated_keys

    @property
    def keys_per_memory(self) -> int:
        """Keys of one memory frame: unrotated latents + the latent grid."""
        return self.num_unrotated_keys + self.key_rope_cos.shape[0]

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        num_k_exclude_rope: int = 0,
        key_valid: Optional[Tensor] = None,
    ) -> Tensor:
        """Attend with RoPE.

        q: (B, Nq, embedding_dim), the query grid (Nq = w * h of q_sizes; another square size is served
          from tables computed in forward); k, v: (B, Nk, kv_in_dim) with Nk = r * keys_per_memory +
          num_k_exclude_rope (r memories, then object-pointer tokens); key_valid: optional (B, Nk) bool
          (False keys are left out of the softmax). Returns (B, Nq, embedding_dim).
        """
        q = self._project_half_split(self.q_proj, q)
        k = self._project_half_split(self.k_proj, k)
        v = self._heads(self.v_proj(v))
        cos_table, sin = self._tables(q.shape[2], q)
        q = rotate_half_split(q, cos_table, sin)

        num_memory_keys = k.shape[2] - num_k_exclude_rope
        per_memory = self.keys_per_memory
        if num_memory_keys % per_memory != 0:
            raise ValueError(f"{num_memory_keys} memory keys are not a whole number of {per_memory}-token memories")
        memories = k[:, :, :num_memory_keys].unflatten(2, (num_memory_keys // per_memory, per_memory))
        unrotated = self.num_unrotated_keys
        rotated = rotate_half_split(
            memories[..., unrotated:, :], self.key_rope_cos.to(k.dtype), self.key_rope_sin.to(k.dtype)
        )
        memories = torch.cat((memories[..., :unrotated, :], rotated), dim=3).flatten(2, 3)
        k = torch.cat((memories, k[:, :, num_memory_keys:]), dim=2)
        return self._attend(q, k, v, key_valid)
