"""Execution backends for SAM2Model: eager, torch.compile, torch-tensorrt.

A backend replaces how the heavy components run; it never changes what they compute or the model's
parameter names. The components compiled are the four that carry nearly all of the per-frame cost:

- ``image_encoder``    (1, 3, S, S) -> FPN levels, once per frame
- ``memory_attention`` all objects of a frame in one call, fixed memory slots + key mask
- ``sam_mask_decoder`` all objects of a frame in one call
- ``memory_encoder``   all objects of a frame in one call

``tensorrt`` uses torch-tensorrt's dynamo backend through ``torch.compile(backend="tensorrt")``: each
distinct input shape (number of objects) is compiled once into a TensorRT engine, kept in an on-disk
engine cache so a restart reuses it. Its shapes are static per engine, which the fixed memory slots make
possible (no shape depends on how many frames were seen).

Availability is checked up front; an unavailable backend falls back (tensorrt -> compile -> eager) with a
warning that names the reason. torch-tensorrt is an optional extra (``pip install sam2-rt[tensorrt]``)
for CUDA machines: its TensorRT libraries come from NVIDIA's index, not PyPI.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from sam2_rt.config import BACKEND_NAMES

LOG = logging.getLogger(__name__)

BACKENDS = BACKEND_NAMES
# Submodules of SAM2Model that a backend compiles (Meta's names, so state_dict keys do not change).
COMPILED_COMPONENTS = ("image_encoder", "memory_attention", "sam_mask_decoder", "memory_encoder")
# Fallback order when a backend is unavailable.
_FALLBACK = {"tensorrt": "compile", "compile": "eager"}
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BackendChoice:
    """What ``apply_backend`` did."""

    requested: str  # the backend asked for
    used: str  # the backend actually applied (after fallbacks)
    reasons: tuple[str, ...]  # why each fallback happened (empty when requested == used)


def default_engine_cache_dir() -> Path:
    """Where TensorRT engines are cached: $SAM2_RT_ENGINE_CACHE or ~/.cache/sam2_rt/trt_engines."""
    env = os.environ.get("SAM2_RT_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sam2_rt" / "trt_engines"


def unavailable_reason(backend: str, device: torch.device) -> Optional[str]:
    """Why ``backend`` cannot run on ``device`` here, or None when it can."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "eager":
        return None
    if backend == "compile":
        if device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
            return "torch.compile on CPU needs a C++ compiler (g++) on PATH"
        return None
    if device.type != "cuda":
        return f"TensorRT needs a CUDA device (model is on {device})"
    if not torch.cuda.is_available():
        return "TensorRT needs CUDA, which torch reports unavailable"
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not installed (pip install 'sam2-rt[tensorrt]' on a CUDA machine)"
    return None


def resolve_backend(backend: str, device: torch.device) -> BackendChoice:
    """The first usable backend along the fallback chain of ``backend``, with the reasons for skipping."""
    reasons: list[str] = []
    current = backend
    while (reason := unavailable_reason(current, device)) is not None:
        reasons.append(f"{current}: {reason}")
        current = _FALLBACK[current]
    return BackendChoice(requested=backend, used=current, reasons=tuple(reasons))


def _compile_options(backend: str, precision: str, cache_dir: Path) -> tuple[str, dict]:
    if backend == "compile":
        return "inductor", {}
    import torch_tensorrt  # noqa: F401  (registers the "tensorrt" torch.compile backend)

    cache_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "enabled_precisions": {torch.float32, _PRECISIONS[precision]},
        "min_block_size": 1,
        "cache_built_engines": True,
        "reuse_cached_engines": True,
        "engine_cache_dir": str(cache_dir),
    }
    return "tensorrt", options


def apply_backend(
    model: nn.Module,
    backend: str,
    *,
    precision: str = "fp32",
    engine_cache_dir: Optional[Path] = None,
) -> BackendChoice:
    """Compile the heavy components of ``model`` in place with ``backend`` (or its fallback).

    Arguments:
      model: a SAM2Model, already on its device and in its dtype.
      backend: "eager", "compile" or "tensorrt".
      precision: "fp32", "fp16" or "bf16"; for tensorrt, the precision TensorRT may use besides fp32.
      engine_cache_dir: TensorRT engine cache (default :func:`default_engine_cache_dir`).
    Returns:
      The choice made. Fallbacks are logged as warnings. Compilation itself is lazy: the first call of
      each component with a new shape compiles it (seconds to minutes), later calls reuse it.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(_PRECISIONS)}")
    device = next(model.parameters()).device
    choice = resolve_backend(backend, device)
    for reason in choice.reasons:
        LOG.warning("backend %r unavailable, falling back: %s", backend, reason)
    if choice.used == "eager":
        return choice
    compiler, options = _compile_options(choice.used, precision, engine_cache_dir or default_engine_cache_dir())
    # Each number of objects is its own static shape: allow one graph per count up to a generous limit
    # instead of dynamo's default of 8, past which it would silently run eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for name in COMPILED_COMPONENTS:
        component = getattr(model, name)
        # nn.Module.compile compiles the module's forward in place: parameter names, state_dict and
        # hooks stay those of the eager module.
        component.compile(backend=compiler, options=options or None, dynamic=False)
    LOG.info("compiled %s with backend %s (%s)", ", ".join(COMPILED_COMPONENTS), choice.used, compiler)
    return choice

