"""Options of a tracker, and what its warm-up did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from sam2_rt.modeling.config import PRECISION_NAMES
from sam2_rt.runtime.backends import BACKENDS, CompileEvent
from sam2_rt.tracking.motion import MOTION_NAMES, SamuraiConfig


@dataclass(frozen=True)
class TrackerConfig:
    """Options of a `Tracker` (shared by all its streams)."""

    # Most objects one stream tracks at once (memory is preallocated for all of them).
    max_objects: int = 16
    # Prompted (conditioning) frames kept per object: the first one and the most recent ones.
    max_conditioning_frames: int = 4
    # An object absent for more than this many consecutive frames is reported LOST (it is still tracked).
    lost_after_frames: int = 30
    # Compute precision of the model calls: "auto" (bf16 on a CUDA device that has it, else fp32), "fp32",
    # or "bf16" / "fp16" autocast (memory stays bfloat16). See `resolve_precision`.
    precision: str = "auto"
    # fp32 on CUDA: matrix products and convolutions may use TF32 tensor cores (set for the tracker's own calls
    # only, restored after each step). False: full fp32 products.
    allow_tf32: bool = True
    # Eager backend: skip memory slots no object uses (less attention work, shapes vary from frame to
    # frame). False: every slot always. The compile and tensorrt backends read every slot with a key mask
    # until a stream's memory is full, then exactly the filled slots without a mask (steady_conditioning_frames).
    compact_memory: bool = True
    # compile / tensorrt: the conditioning-frame counts (1 .. max_conditioning_frames) for which memory
    # attention gets a mask-free steady-state program per bucket, built by warmup. A stream whose memory is full
    # (every recent frame and pointer slot filled) with one of these counts runs it; other states run the
    # masked program over every slot. Each count costs one more program per bucket at warm-up.
    steady_conditioning_frames: Tuple[int, ...] = (1,)
    # Objects per memory-attention call. None: all objects in one call on CUDA, one at a time elsewhere (on
    # CPU one call over 8 objects is ~15% slower than 8 calls: its element-wise ops fall out of cache).
    # The results do not depend on it; compiled graphs always take all objects at once.
    memory_attention_batch: Optional[int] = None
    # How the per-frame components run (sam2_rt.runtime.backends): "eager"; "compile" (torch.compile) or
    # "tensorrt" (TensorRT engines, CUDA only) at fixed shapes, built by Tracker.warmup() before the first
    # frame. An unavailable backend falls back (tensorrt -> compile -> eager) with a warning.
    backend: str = "eager"
    # torch.compile backend of backend="compile": "inductor", or a registered name such as "eager" (tests).
    compiler: str = "inductor"
    # backend="compile" on CUDA: replay each compiled graph as a CUDA graph (less launch overhead).
    cuda_graphs: bool = False
    # Where backend="tensorrt" caches its engines (None: sam2_rt.runtime.engines.default_engine_cache_dir()).
    engine_cache_dir: Optional[str] = None
    # Where backend="compile" with inductor keeps its compiled artifacts between processes, so that a warm-up
    # after a reboot loads instead of compiling (None: sam2_rt.runtime.compile_cache.default_compile_cache_dir()).
    compile_cache_dir: Optional[str] = None
    # Motion-aware tracking: "none" (SAM 2's choice: the candidate mask of highest predicted IoU, every tracked
    # frame into memory) or "samurai" (SAMURAI: a Kalman filter per object scores the candidates by motion,
    # and only frames that pass `samurai`'s thresholds stay in memory; see sam2_rt.tracking.motion).
    motion: str = "none"
    # SAMURAI's parameters (motion="samurai").
    samurai: SamuraiConfig = SamuraiConfig()

    def __post_init__(self) -> None:
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.max_conditioning_frames < 1:
            raise ValueError(f"max_conditioning_frames must be >= 1, got {self.max_conditioning_frames}")
        if self.lost_after_frames < 0:
            raise ValueError(f"lost_after_frames must be >= 0, got {self.lost_after_frames}")
        if self.memory_attention_batch is not None and self.memory_attention_batch < 1:
            raise ValueError(f"memory_attention_batch must be >= 1 or None, got {self.memory_attention_batch}")
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"precision must be one of {list(PRECISION_NAMES)}, got {self.precision!r}")
        bad = [c for c in self.steady_conditioning_frames if not 1 <= c <= self.max_conditioning_frames]
        if bad:
            raise ValueError(f"steady_conditioning_frames must lie in 1..max_conditioning_frames "
                             f"({self.max_conditioning_frames}), got {bad}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.motion not in MOTION_NAMES:
            raise ValueError(f"motion must be one of {list(MOTION_NAMES)}, got {self.motion!r}")


def cpu_has_native(precision: str) -> bool:
    """Whether this CPU computes `precision` ("bf16"/"fp16") in hardware, as oneDNN reports it."""
    try:
        if precision == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch build without these queries: do not warn
        return True


@dataclass(frozen=True)
class WarmupReport:
    """What `Tracker.warmup` did.

    Attributes:
      backend: the backend that runs (after fallbacks).
      precision: "fp32", "bf16" or "fp16".
      buckets: object buckets warmed up (empty for eager).
      frame_buckets: frames per image-encoder call warmed up for several streams (empty for one stream).
      stream_buckets: buckets of the rows of several streams warmed up (empty for one stream).
      events: each graph compiled or engine built / loaded, with its seconds.
      seconds: wall time of the whole warm-up.
    """

    backend: str
    precision: str
    buckets: Tuple[int, ...]
    events: Tuple[CompileEvent, ...]
    seconds: float
    frame_buckets: Tuple[int, ...] = ()
    stream_buckets: Tuple[int, ...] = ()

    def summary(self) -> str:
        """One line: how many graphs / engines per action, per component."""
        if not self.events:
            return f"backend {self.backend}: nothing to build"
        counts: Dict[str, Dict[str, int]] = {}
        for event in self.events:
            per_action = counts.setdefault(event.component, {})
            per_action[event.action] = per_action.get(event.action, 0) + 1
        parts = [
            f"{component} " + "/".join(f"{n} {action}" for action, n in actions.items())
            for component, actions in counts.items()
        ]
        streams = (f", frames {list(self.frame_buckets)}, rows of several streams {list(self.stream_buckets)}"
                   if self.frame_buckets else "")
        return f"backend {self.backend} ({self.precision}), buckets {list(self.buckets)}{streams}: " + ", ".join(parts)
