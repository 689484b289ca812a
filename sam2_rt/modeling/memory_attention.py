"""Memory attention of SAM 2: the current frame's features attend to themselves (RoPE self-attention)
and to a FIXED number of memory slots plus object-pointer tokens (RoPE cross-attention), with a key
mask for empty slots so shapes never change from frame to frame.

With n valid slots of an M-slot memory the result equals Meta's attention over exactly those n
memories: masked keys get zero softmax weight. Parameter names equal Meta's `sam2==1.1.0` modules.
"""
import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_rt.modeling.common import activation_from_name
from sam2_rt.modeling.transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: self-attention, cross-attention to memories, feed-forward; each residual.

    Arguments (as Meta's): activation name of the feed-forward ("relu"/"gelu"/"glu"); cross_attention
    (queries d_model, keys/values memory channels); d_model; dim_feedforward; dropout (training only);
    pos_enc_at_attn (add the query positional encoding before self-attention);
    pos_enc_at_cross_attn_keys / pos_enc_at_cross_attn_queries (add positional encodings to the
    cross-attention keys / queries); self_attention.
    """

    def __init__(
        self,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: nn.Module,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.activation_str = activation
        self.activation = activation_from_name(activation)
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _dropout(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout_value, self.training)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        num_k_exclude_rope: int = 0,
        memory_valid: Optional[Tensor] = None,
    ) -> Tensor:
        """tgt, query_pos: (B, HW, d_model); memory, pos: (B, Nm, mem channels); num_k_exclude_rope: trailing
        memory tokens without RoPE (object pointers); memory_valid: optional (B, Nm) bool key mask.
        Returns (B, HW, d_model)."""
        normed = self.norm1(tgt)
        q = normed + query_pos if self.pos_enc_at_attn else normed
        tgt = tgt + self._dropout(self.self_attn(q, q, normed))

        normed = self.norm2(tgt)
        q = normed + query_pos if self.pos_enc_at_cross_attn_queries else normed
        k = memory + pos if self.pos_enc_at_cross_attn_keys else memory
        if isinstance(self.cross_attn_image, RoPEAttention):
            attended = self.cross_attn_image(q, k, memory, num_k_exclude_rope, memory_valid)
        else:
            attended = self.cross_attn_image(q, k, memory, memory_valid)
        tgt = tgt + self._dropout(attended)

        hidden = self._dropout(self.activation(self.linear1(self.norm3(tgt))))
        return tgt + self._dropout(self.linear2(hidden))


class MemoryAttention(nn.Module):
    """Stack of MemoryAttentionLayer followed by a final LayerNorm (batch-first tensors).

    Arguments (as Meta's): d_model; pos_enc_at_input (add 0.1 x the query positional encoding to the
    input); layer (cloned num_layers times); num_layers; batch_first (kept for config compatibility: this
    module always takes batch-first tensors).
    """

    def __init__(
        self,
        d_model: int,
        pos_enc_at_input: bool,
        layer: nn.Module,
        num_layers: int,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("MemoryAttention takes batch-first tensors only (batch_first=True)")
        self.d_model = d_model
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(
        self,
        curr: Tensor,
        curr_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        num_obj_ptr_tokens: int = 0,
        memory_valid: Optional[Tensor] = None,
    ) -> Tensor:
        """Condition the current frame's features on memories.

        curr, curr_pos: (B, HW, d_model) features of the current frame (row-major h x w grid) and their
          positional encoding.
        memory, memory_pos: (B, Nm, mem_dim) keys/values and their positional encoding: first
          Nm - num_obj_ptr_tokens tokens are whole h x w memory slots (RoPE repeated per slot), the last
          num_obj_ptr_tokens are object-pointer tokens (no RoPE).
        memory_valid: optional (B, Nm) bool, True = real key; False keys (empty slots, unused pointers)
          are left out of the softmax. Every row needs at least one True.
        Returns (B, HW, d_model).
        """
        if curr.shape[0] != memory.shape[0]:
            raise ValueError(f"batch of curr ({curr.shape[0]}) and memory ({memory.shape[0]}) differ")
        if memory_valid is not None and not torch.compiler.is_compiling() and bool(memory_valid.all()):
            # Eager fast path for the steady state (every slot and pointer filled): a masked softmax costs
            # ~10% more on CPU than an unmasked one with the same result. Traced graphs (export, compile)
            # keep the mask so their shapes and ops do not depend on the data.
            memory_valid = None
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        for layer in self.layers:
            output = layer(output, memory, memory_pos, curr_pos, num_obj_ptr_tokens, memory_valid)
        return self.norm(output)
