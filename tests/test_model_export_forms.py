"""Formulations that let every per-frame component build in TensorRT, with unchanged numbers:
the antialiased mask downsample as a strided convolution, the RoPE write with an explicit end, and float32
weights only (reduced precision is autocast)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from testkit.oracle import seeded_model
from sam2_rt.modeling.config import get_config
from sam2_rt.runtime.export import MaskAsOutputExport, MemoryAttentionExport, mask_as_output_inputs, memory_attention_inputs
from sam2_rt.modeling.common import downsample_antialiased
from sam2_rt.modeling.sam2 import SAM2Model


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
@pytest.mark.parametrize("size", [(1, 1), (8, 5), (64, 64)], ids=["one_output", "8x5", "64x64"])
def test_strided_conv_downsample_equals_torchs_antialiased_bilinear(factor: int, size: tuple) -> None:
    generator = torch.Generator().manual_seed(factor)
    x = 10 * torch.randn(3, 2, size[0] * factor, size[1] * factor, generator=generator)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    got = downsample_antialiased(x, factor)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_downsample_rejects_sides_that_are_not_multiples() -> None:
    with pytest.raises(ValueError, match="multiples"):
        downsample_antialiased(torch.zeros(1, 1, 10, 8), 4)


def test_mask_as_output_graph_has_no_antialiased_resize() -> None:
    model = SAM2Model(get_config("sam2.1_hiera_tiny", 128)).eval()
    inputs = mask_as_output_inputs(model.config)
    program = torch.export.export(MaskAsOutputExport(model), inputs).run_decompositions({})
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not [t for t in targets if "_aa" in t], targets


def test_rope_writes_have_an_explicit_end() -> None:
    """An open-ended in-place slice write exports as slice_scatter(end=INT64_MAX), which torch-tensorrt's
    converter does not clamp (reads of open slices convert fine)."""
    model = seeded_model(128)
    program = torch.export.export(MemoryAttentionExport(model), memory_attention_inputs(model.config))
    program = program.run_decompositions({})
    open_ends = [
        node.format_node()
        for node in program.graph.nodes
        if node.op == "call_function"
        and "slice_scatter" in str(node.target)
        and any(isinstance(arg, int) and arg >= sys.maxsize for arg in node.args)
    ]
    scatters = [node for node in program.graph.nodes if "slice_scatter" in str(node.target)]
    assert scatters, "the RoPE write is expected to export as slice_scatter"
    assert not open_ends, open_ends[:3]


@pytest.mark.parametrize("cast", ["half", "bfloat16", "to_float16"])
def test_casting_the_weights_is_refused_with_a_clear_error_and_changes_nothing(cast: str) -> None:
    model = SAM2Model(get_config("sam2.1_hiera_tiny", 128))
    calls = {
        "half": model.half,
        "bfloat16": model.bfloat16,
        "to_float16": lambda: model.to("cpu", torch.float16),
    }
    with pytest.raises(TypeError, match="precision='fp16' or 'bf16'"):
        calls[cast]()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.to("cpu") is model  # a move without a cast is fine
