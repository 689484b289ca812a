"""Backends: availability, fallbacks with reasons, and compiled components computing what eager computes."""
from __future__ import annotations

import logging

import pytest
import torch

from sam2_rt import backends
from sam2_rt.config import get_config
from sam2_rt.modeling.sam2 import SAM2Model


def tiny_model(seed: int = 0) -> SAM2Model:
    torch.manual_seed(seed)
    model = SAM2Model(get_config("sam2.1_hiera_tiny", image_size=256)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


def test_unknown_backend_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="eager, compile, tensorrt"):
        backends.resolve_backend("onnx", torch.device("cpu"))


def test_tensorrt_on_cpu_falls_back_to_compile_and_says_why() -> None:
    choice = backends.resolve_backend("tensorrt", torch.device("cpu"))
    assert (choice.requested, choice.used) == ("tensorrt", "compile")
    assert len(choice.reasons) == 1 and "CUDA" in choice.reasons[0]


def test_compile_without_a_compiler_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    choice = backends.resolve_backend("tensorrt", torch.device("cpu"))
    assert choice.used == "eager"
    assert [reason.split(":")[0] for reason in choice.reasons] == ["tensorrt", "compile"]


def test_eager_leaves_the_model_untouched() -> None:
    model = tiny_model()
    forwards = {name: getattr(model, name).forward for name in backends.COMPILED_COMPONENTS}
    choice = backends.apply_backend(model, "eager")
    assert choice.used == "eager" and choice.reasons == ()
    assert {name: getattr(model, name).forward for name in backends.COMPILED_COMPONENTS} == forwards


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="precision"):
        backends.apply_backend(tiny_model(), "eager", precision="int4")


def test_fallback_is_logged_and_compiled_memory_encoder_matches_eager(caplog: pytest.LogCaptureFixture) -> None:
    """tensorrt on CPU -> compile (warning), and the compiled component computes what eager computes."""
    eager, compiled = tiny_model(seed=1), tiny_model(seed=1)
    with caplog.at_level(logging.WARNING, logger="sam2_rt.backends"):
        choice = backends.apply_backend(compiled, "tensorrt")
    assert choice.used == "compile"
    assert any("falling back" in rec.message and "CUDA" in rec.message for rec in caplog.records)
    assert compiled.state_dict().keys() == eager.state_dict().keys()

    generator = torch.Generator().manual_seed(2)
    feat = torch.randn(2, 256, 16, 16, generator=generator)
    masks = torch.randn(2, 1, 256, 256, generator=generator) * 4
    scores = torch.tensor([[1.5], [-0.5]])
    with torch.inference_mode():
        expected = eager.encode_memory(feat, masks, scores, is_mask_from_pts=True)
        got = compiled.encode_memory(feat, masks, scores, is_mask_from_pts=True)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)
