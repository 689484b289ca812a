"""Backends: availability, fallbacks with reasons, and compiled components computing what eager computes."""
from __future__ import annotations

import pytest
import torch

from sam2_rt.runtime import backends
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
