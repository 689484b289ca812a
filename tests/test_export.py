"""Every component exports with torch.export at static shapes, and the exported program gives the eager
result (random seeded weights, sam2.1 tiny)."""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import pytest
import torch
from torch import nn

from testkit.oracle import seeded_model
from sam2_rt.runtime.export import (
    ImageEncoderExport,
    MemoryAttentionExport,
    MemoryEncoderExport,
    PromptDecoderExport,
    decoder_inputs,
    image_encoder_inputs,
    memory_attention_inputs,
    memory_encoder_inputs,
)
from sam2_rt.modeling.sam2 import SAM2Model

Outputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return seeded_model(512)


def as_tuple(outputs: Outputs) -> Tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def export_and_compare(wrapper: nn.Module, inputs: Sequence[torch.Tensor]) -> torch.export.ExportedProgram:
    """Export at the shapes of inputs, run both, and require equal outputs (same tolerance as parity)."""
    program = torch.export.export(wrapper, tuple(inputs))
    with torch.inference_mode():
        eager = as_tuple(wrapper(*inputs))
        exported = as_tuple(program.module()(*inputs))
    assert len(exported) == len(eager)
    for index, (ref, out) in enumerate(zip(eager, exported)):
        assert out.shape == ref.shape and out.dtype == ref.dtype, f"output {index}"
        bound = 1e-4 * max(1.0, ref.float().abs().max().item())
        assert (out.float() - ref.float()).abs().max().item() <= bound, f"output {index}"
    return program


def test_image_encoder_exports_at_512(model: SAM2Model) -> None:
    export_and_compare(ImageEncoderExport(model), image_encoder_inputs(model.config))


@pytest.mark.slow  # exports and runs a 1024-px image encoder
def test_image_encoder_exports_at_1024() -> None:
    big = seeded_model(1024)
    export_and_compare(ImageEncoderExport(big), image_encoder_inputs(big.config))


@pytest.mark.parametrize(
    "multimask, with_mask_input", [(True, False), (False, True)], ids=["multimask_points", "single_mask_prompt"]
)
def test_prompt_decoder_exports(model: SAM2Model, multimask: bool, with_mask_input: bool) -> None:
    inputs = decoder_inputs(model.config, batch=2, num_points=3, with_mask_input=with_mask_input)
    export_and_compare(PromptDecoderExport(model, multimask), inputs)


@pytest.mark.parametrize("is_mask_from_pts", [True, False], ids=["from_points", "tracked"])
def test_memory_encoder_exports(model: SAM2Model, is_mask_from_pts: bool) -> None:
    export_and_compare(MemoryEncoderExport(model, is_mask_from_pts), memory_encoder_inputs(model.config, batch=2))


def test_memory_attention_exports_with_full_slots_and_serves_partial_fill(model: SAM2Model) -> None:
    wrapper = MemoryAttentionExport(model)
    inputs = list(memory_attention_inputs(model.config, batch=1))
    program = export_and_compare(wrapper, inputs)
    complex_ops = [
        str(node.target)
        for node in program.graph.nodes
        if node.op == "call_function" and any(word in str(node.target) for word in ("complex", "polar"))
    ]
    assert not complex_ops, f"complex ops stay outside TensorRT: {complex_ops}"

    # The same graph serves memories with empty slots (validity masks are inputs, not shapes).
    inputs[5] = torch.tensor([[True, False, False, True, False, False, False]])
    inputs[8] = torch.arange(16)[None] < 3
    with torch.inference_mode():
        eager = wrapper(*inputs)
        exported = program.module()(*inputs)
    assert (exported - eager).abs().max().item() <= 1e-4 * max(1.0, eager.abs().max().item())
