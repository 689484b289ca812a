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
        # Inference skips the call (dropout is the identity in eval mode; the call costs per-op overhead).
        return F.dropout(x, self.dropout_value, True) if self.training else x

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
        tgt = self.self_attend(tgt, query_pos)
        return self.attend_to_memory(tgt, memory, pos, query_pos, num_k_exclude_rope, memory_valid)

    def self_attend(self, tgt: Tensor, query_pos: Optional[Tensor]) -> Tensor:
        """The self-attention residual block alone: it does not read the memory."""
        normed = self.norm1(tgt)
        q = normed + query_pos if self.pos_enc_at_attn else normed
        return tgt + self._dropout(self.self_attn(q, q, normed))

    def attend_to_memory(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor],
        query_pos: Optional[Tensor],
        num_k_exclude_rope: int = 0,
        memory_valid: Optional[Tensor] = None,
    ) -> Tensor:
        """The cross-attention and feed-forward residual blocks (the rest of forward)."""
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
        batch_chunk: Optional[int] = None,
    ) -> Tensor:
        """Condition the current frame's features on memories.

        curr, curr_pos: (B, HW, d_model) features of the current frame (row-major h x w grid) and their
          positional encoding; batch 1 is broadcast to all B memories (several objects of one frame), and
          curr_pos may have batch 1 with curr of batch B (rows of several frames share one encoding).
        memory, memory_pos: (B, Nm, mem_dim) keys/values and their positional encoding: first
          Nm - num_obj_ptr_tokens tokens are whole h x w memory slots (RoPE repeated per slot), the last
          num_obj_ptr_tokens are object-pointer tokens (no RoPE).
        memory_valid: optional (B, Nm) bool, True = real key; False keys (empty slots, unused pointers)
          are left out of the softmax. Every row needs at least one True.
        batch_chunk: run the memory-dependent part for at most this many batch rows at a time (None: all
          at once). The result does not depend on it; on CPU several small calls beat one large one.
        Returns (B, HW, d_model).

        With a broadcast frame (curr batch 1) the first layer's self-attention, which reads no memory,
        runs once for all B rows.
        """
        batch = memory.shape[0]
        if curr.shape[0] not in (1, batch) or curr_pos.shape[0] not in (1, curr.shape[0]):
            raise ValueError(
                f"batch of curr ({curr.shape[0]}), curr_pos ({curr_pos.shape[0]}) and memory ({batch}) differ"
            )
        if batch_chunk is not None and batch_chunk < 1:
            raise ValueError(f"batch_chunk must be >= 1, got {batch_chunk}")
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        first, *rest = self.layers
        output = first.self_attend(output, curr_pos)  # batch 1 when the frame is shared
        chunk = batch if batch_chunk is None or torch.compiler.is_compiling() else batch_chunk
        pieces = []
        for start in range(0, batch, chunk):
            rows = slice(start, min(start + chunk, batch))
            pieces.append(
                self._attend_rows(
                    output if output.shape[0] == 1 else output[rows],
                    curr_pos if curr_pos.shape[0] == 1 else curr_pos[rows],
                    memory[rows],
                    memory_pos[rows],
                    num_obj_ptr_tokens,
                    None if memory_valid is None else memory_valid[rows],
                )
            )
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)

    def _attend_rows(
        self,
        output: Tensor,
        curr_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        num_obj_ptr_tokens: int,
        memory_valid: Optional[Tensor],
    ) -> Tensor:
        """Everything after the first self-attention, for rows of the batch (output/curr_pos batch 1 or rows)."""
        batch = memory.shape[0]
        output = output.expand(batch, *output.shape[1:])
        curr_pos = curr_pos.expand(batch, *curr_pos.shape[1:])
        first, *rest = self.layers
        output = first.attend_to_memory(output, memory, memory_pos, curr_pos, num_obj_ptr_tokens, memory_valid)
        for layer in rest:
            output = layer(output, memory, memory_pos, curr_pos, num_obj_ptr_tokens, memory_valid)
        return self.norm(output)
