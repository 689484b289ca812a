"""EdgeTAM's own parts (the memory encoder with its perceiver, memory attention over 512-token memories) export
with static shapes through the wrappers of sam2_rt.runtime.export, and the exported programs compute what the
eager model does (the trunk, neck and decoder are SAM 2's wrappers over timm / SAM 2 modules)."""

from __future__ import annotations

import torch

from sam2_rt.runtime.export import MemoryAttentionExport, MemoryEncoderExport, memory_encoder_inputs
from sam2_rt.weights.checkpoint import random_model

IMAGE_SIZE = 256
BATCH = 2


def assert_program_equals_eager(module: torch.nn.Module, inputs: tuple) -> None:
    program = torch.export.export(module, inputs)
    with torch.inference_mode():
        exported, eager = program.module()(*inputs), module(*inputs)
    exported = exported if isinstance(exported, tuple) else (exported,)
    eager = eager if isinstance(eager, tuple) else (eager,)
    assert len(exported) == len(eager)
    for got, want in zip(exported, eager):
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())


def test_memory_encoder_with_perceiver_exports() -> None:
    model = random_model("edgetam", IMAGE_SIZE)
    inputs = memory_encoder_inputs(model.config, batch=BATCH)
    assert_program_equals_eager(MemoryEncoderExport(model, is_mask_from_pts=False), inputs)


def test_memory_attention_over_512_token_memories_exports() -> None:
    model = random_model("edgetam", IMAGE_SIZE)
    config = model.config
    generator = torch.Generator().manual_seed(0)
    side, tokens, mem_dim = config.feat_size, config.memory_tokens, config.mem_dim
    num_slots, num_ptrs = config.num_maskmem, config.max_obj_ptrs_in_encoder
    mem_valid = torch.ones(BATCH, num_slots, dtype=torch.bool)
    mem_valid[0, 3:] = False
    inputs = (
        torch.randn(1, config.hidden_dim, side, side, generator=generator),
        torch.randn(1, config.hidden_dim, side, side, generator=generator),
        torch.randn(BATCH, num_slots, tokens, mem_dim, generator=generator),
        torch.randn(1, 1, tokens, mem_dim, generator=generator),
        torch.arange(num_slots).repeat(BATCH, 1),
        mem_valid,
        torch.randn(BATCH, num_ptrs, config.hidden_dim, generator=generator),
        torch.randn(BATCH, num_ptrs, generator=generator),
        torch.ones(BATCH, num_ptrs, dtype=torch.bool),
    )
    assert_program_equals_eager(MemoryAttentionExport(model), inputs)
