"""Streaming multi-object tracker: SAM 2's video semantics with a bounded memory, one model, many streams.

Semantics (Meta's SAM2VideoPredictor of sam2==1.1.0, driven frame by frame):
  - `add_prompt` queues a prompt; it is applied on the next `step`. A new object id starts an object on
    that frame as an *initial conditioning frame* (no memory; the no-memory embedding is added to the
    image features). A known id refines the object: the frame is first tracked from memory, then the
    prompt is decoded together with the tracked mask logits (clamped to +-32) on the same memory-conditioned
    features, and that frame becomes a conditioning frame of the object. This equals Meta's predictor
    with ``add_all_frames_to_correct_as_cond=True`` when the prompt is added after the frame was tracked.
  - Boxes are two points with labels 2, 3 placed before any clicks; coordinates are scaled like Meta's
    (divided by the frame's width / height, times image_size). Mask prompts are used as the output mask
    directly (``use_mask_input_as_output_without_sam``), for new and known objects alike.
  - Every object gets a memory on every frame, also where it is absent (object score <= 0): its mask
    logits are then -1024 (zero after the sigmoid) and SAM 2.1 adds the no-object embedding. Masks of
    prompted frames are binarised before the memory encoder, tracked ones are not.
  - Objects not prompted on a frame are tracked normally on it. Objects are independent.
Object pointers' temporal distances are normalised by max_obj_ptrs_in_encoder - 1, as Meta does for
videos of at least that many frames (a stream has no length; Meta uses num_frames - 1 for shorter videos).

What is kept per object is bounded (see `sam2_rt.tracking.memory`): the first and the most recent prompted frames
(`TrackerConfig.max_conditioning_frames`), the last num_maskmem - 1 frames' memories and the last
max_obj_ptrs_in_encoder - 1 frames' object pointers. With no more prompted frames than the cap, outputs
equal Meta's predictor; beyond the cap, the evicted prompted frames are no longer attended to.

Batching: the image is encoded once per frame; memory attention runs once for all tracked objects, the
mask decoder once for all of them, the memory encoder once for every object. Only prompted objects need
extra decoder calls on the frame of their prompt (one per distinct number of prompt points, since SAM's
prompt encoder cannot pad point lists without changing the result); these always run eager.
`Tracker.step_many` steps several streams (cameras) together: one image-encoder call for all their frames,
and the calls above over the objects of all streams, each object reading its own frame's features.

Backends (`TrackerConfig.backend`, sam2_rt.runtime.backends): the four per-frame calls above run eager, or at fixed
shapes (every memory slot, objects padded to buckets) through torch.compile graphs or TensorRT engines that
`Tracker.warmup` builds before the first frame; `Tracker.compilations` counts them.

Frame size changes mid-stream are allowed: memory lives at the model resolution, so tracking continues;
a warning is logged, pending point prompts (kept in model coordinates) keep their relative position, and
outputs come at the new size.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sam2_rt.runtime.backends import (
    BACKENDS,
    PRECISIONS,
    CompileEvent,
    RunnerOptions,
    ShapePlan,
    resolve_precision,
)
from sam2_rt.runtime.choice import make_runner
from sam2_rt.modeling.config import PRECISION_NAMES
from sam2_rt.runtime.readout import MemoryReadout
from sam2_rt.tracking.memory import EMPTY, MemoryBank
from sam2_rt.modeling.sam2 import DecodeOutput, SAM2Model
from sam2_rt.tracking.transforms import Frame, boxes_from_masks, label_image, preprocess, resize_mask_prompt, upsample_logits

logger = logging.getLogger(__name__)

# Meta clamps the previous mask logits it feeds back with a correction click (rare numerical issues).
PREV_MASK_LOGIT_LIMIT = 32.0
# Largest object id (the label image is int32; 0 is background).
MAX_OBJECT_ID = 2**31 - 1

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float], Sequence[Sequence[float]]]


class TrackerInputError(ValueError):
    """A frame or prompt the tracker cannot use. The stream's state is unchanged when it is raised."""


class ObjectState(enum.IntEnum):
    """Per-object tracking state of one frame."""

    TRACKING = 0  # the object is predicted present (object score > 0)
    OCCLUDED = 1  # predicted absent on this frame
    LOST = 2  # predicted absent for more than TrackerConfig.lost_after_frames consecutive frames


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


def _cpu_has_native(precision: str) -> bool:
    """Whether this CPU computes `precision` ("bf16"/"fp16") in hardware, as oneDNN reports it."""
    try:
        if precision == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch build without these queries: do not warn
        return True


@dataclass
class TrackResult:
    """What `Tracker.step` returns for one frame (N objects, frame of H x W pixels, S = image_size).

    Attributes:
      frame_index: index of the frame in its stream (0 for the first frame after creation or reset).
      object_ids: the N object ids, in the order of every tensor below.
      masks: (N, H, W) bool masks at the frame's resolution.
      logits: (N, H, W) float32 mask logits at the frame's resolution (mask = logits > 0).
      low_res_logits: (N, 1, S/4, S/4) float32 mask logits as the model produced them.
      ious: (N,) float32 predicted IoU of each mask (1 for a mask prompt).
      presence: (N,) float32 probability that the object is visible, sigmoid(object score).
      states: per object, TRACKING / OCCLUDED / LOST.
      boxes: (N, 4) float32 (x0, y0, x1, y1) enclosing each mask in pixels (x1, y1 exclusive), zeros if empty.
    """

    frame_index: int
    object_ids: List[int]
    masks: torch.Tensor
    logits: torch.Tensor
    low_res_logits: torch.Tensor
    ious: torch.Tensor
    presence: torch.Tensor
    states: List[ObjectState]
    boxes: torch.Tensor

    def label_image(self) -> torch.Tensor:
        """(H, W) int32 image: object id per pixel, 0 for background; the higher logit wins on overlap."""
        return label_image(self.logits, torch.tensor(self.object_ids, dtype=torch.int32))


@dataclass
class PreparedPrompt:
    """A validated prompt in model coordinates (`Tracker.prepare_prompt`), queued for the next frame.

    Either points (with labels; a box is its two first points, labels 2 and 3) or a mask.
    """

    points: Optional[torch.Tensor] = None  # (P, 2) float32 x, y in pixels of the S x S model input (CPU)
    labels: Optional[torch.Tensor] = None  # (P,) int32 Meta's point labels (CPU)
    mask: Optional[torch.Tensor] = None  # (1, S, S) float32 0/1 on the model's device


@dataclass
class StreamState:
    """Everything one stream (camera) owns; create it with `Tracker.create_stream`.

    Attributes:
      frame_index: index the next stepped frame gets.
      frame_size: (H, W) of the last frame stepped, None before the first frame.
    """

    frame_index: int
    frame_size: Optional[Tuple[int, int]]
    _bank: MemoryBank
    # ids of the objects in the bank, row order
    _ids: List[int] = field(default_factory=list)
    # consecutive frames each object (row order) was absent
    _absent_frames: List[int] = field(default_factory=list)
    # prompts to apply on the next frame, by object id (new objects in the order they were added)
    _pending: Dict[int, PreparedPrompt] = field(default_factory=dict)

    @property
    def object_ids(self) -> List[int]:
        """Ids of the stream's objects: tracked ones, then new ones whose first prompt is pending."""
        return self._ids + [obj_id for obj_id in self._pending if obj_id not in self._ids]

    def state_nbytes(self) -> int:
        """Bytes of all tensors the stream holds (memory bank and pending prompts)."""
        pending = sum(
            t.numel() * t.element_size()
            for prompt in self._pending.values()
            for t in (prompt.points, prompt.labels, prompt.mask)
            if t is not None
        )
        return self._bank.nbytes() + pending


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


class _StepOutputs(NamedTuple):
    """Per-object model outputs of one frame, in row order (N objects)."""

    low_res_masks: torch.Tensor  # (N, 1, S/4, S/4) float32 logits
    high_res_masks: torch.Tensor  # (N, 1, S, S) float32 logits fed to the memory encoder
    ious: torch.Tensor  # (N,) float32
    obj_ptr: torch.Tensor  # (N, hidden_dim)
    object_score_logits: torch.Tensor  # (N, 1)


class Tracker:
    """Tracks prompted objects through streams of frames with one SAM 2 model.

    Threads: a stream is used by one thread at a time. With the eager backend, different streams may be stepped
    by different threads at the same time (the tracker keeps no state but the streams'; the weights are only
    read). The compile and tensorrt backends run one step at a time (their graphs and engines are shared): a
    step of another thread waits for the running one (a lock).

    Arguments:
      model: the SAM 2 model (put in eval mode here); any device.
      config: tracker options.
    Raises:
      ValueError: a model configuration this tracker does not implement (all official ones are).
    """

    def __init__(self, model: SAM2Model, config: TrackerConfig = TrackerConfig()) -> None:
        self.model = model.eval()
        self.config = config
        self.model_config = model.config
        if not self.model_config.use_mask_input_as_output_without_sam:
            raise ValueError("use_mask_input_as_output_without_sam=False (mask prompts through the SAM decoder) is not "
                             "implemented (no official model uses it)")
        if self.model_config.memory_temporal_stride_for_eval != 1:
            raise ValueError("only memory_temporal_stride_for_eval == 1 is implemented (as in every official model)")
        if self.model_config.max_cond_frames_in_attn != -1:
            raise ValueError("only max_cond_frames_in_attn == -1 (every conditioning frame of the bounded memory "
                             "bank is attended) is implemented, as in every official model")
        self.device = next(model.parameters()).device
        self.image_size = self.model_config.image_size
        # The compute precision that runs ("auto" resolved for this device): fp32, bf16 or fp16.
        self.precision = resolve_precision(config.precision, self.device)
        self._autocast_dtype = PRECISIONS[self.precision]
        # Objects per memory-attention call (TrackerConfig.memory_attention_batch; None = all at once).
        self._memory_attention_batch = config.memory_attention_batch
        if self._memory_attention_batch is None and self.device.type != "cuda":
            self._memory_attention_batch = 1
        if self.device.type == "cpu" and self.precision != "fp32" and not _cpu_has_native(self.precision):
            logger.warning(
                "precision=%r on a CPU without native %s arithmetic (capability %s): expect it to be several "
                "times slower than fp32 (bf16 ran 5.6x slower on an AVX2 CPU); use fp32 here",
                self.precision, self.precision, torch.backends.cpu.get_cpu_capability(),
            )
        # Fixed-shape runners share their graphs / engines (and CUDA-graph output buffers) between streams:
        # one step at a time, enforced here (the eager runner keeps no state, so its streams may step at once).
        self._step_lock: Optional[threading.Lock] = None
        # How the per-frame components run; `backend` says what was asked for and what runs.
        self.runner, self.backend = make_runner(
            model,
            RunnerOptions(
                backend=config.backend,
                precision=self.precision,
                max_objects=config.max_objects,
                num_conditioning=config.max_conditioning_frames,
                compiler=config.compiler,
                cuda_graphs=config.cuda_graphs,
                engine_cache_dir=Path(config.engine_cache_dir) if config.engine_cache_dir else None,
                steady_conditioning=tuple(config.steady_conditioning_frames),
                compile_cache_dir=Path(config.compile_cache_dir) if config.compile_cache_dir else None,
            ),
        )
        if self.runner.fixed_shapes:
            self._step_lock = threading.Lock()

    @property
    def compilations(self) -> Dict[str, int]:
        """Per per-frame component: graphs compiled or engines built / loaded so far (0 on eager).

        After `warmup` these never move: every shape a frame can need was built.
        """
        return dict(self.runner.compilations)

    # ------------------------------------------------------------------ warm-up

    def warmup(self, object_counts: Optional[Sequence[int]] = None, max_streams: int = 1) -> WarmupReport:
        """Build (or load) every shape the per-frame path can need, before the first frame.

        compile: compiles each component's graph for every shape; tensorrt: builds or loads every engine (see
        sam2_rt.runtime.engines). Shapes: each bucket of objects of one stream; with max_streams > 1 also each bucket
        of frames of the image encoder and each bucket of the rows of several streams (`step_many`); memory
        attention also has its mask-free steady-state program per shape and count of
        `steady_conditioning_frames`. Both then step scratch streams of blank frames with one click per object,
        per shape, until each program has run twice (a CUDA graph is recorded on a graph's second call): the
        prompted frames, two tracked ones, and for the steady programs two more after the memory was filled by
        copies (`_scratch_frames`), so the calls are those of real frames. eager: nothing to build (returns at
        once). Progress and the total time are logged.

        Arguments:
          object_counts: only the buckets holding these object counts (default: every bucket up to
            max_objects), and for several streams the row buckets up to max_streams times the largest; a
            stream with another count then compiles on its first frame.
          max_streams: most streams `step_many` runs together (e.g. the cameras of a node). Fixed-shape
            backends run more in groups of this many.
        Returns:
          A WarmupReport (what was built or loaded, in how long).
        """
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        start = time.perf_counter()
        first_event = len(self.runner.events)
        plan = self.runner.serve_streams(max_streams)
        if self.runner.fixed_shapes:
            if object_counts is not None:
                largest = self.runner.batch_for(max_streams * max(object_counts))
                plan = ShapePlan(
                    frames=plan.frames,
                    rows=tuple(sorted({self.runner.batch_for(count) for count in object_counts})),
                    per_row=tuple(rows for rows in plan.per_row if rows <= largest),
                    steady=plan.steady,
                )
            logger.info("warm-up of backend %s (%s) for %s object(s)%s", self.backend.used, self.precision,
                        ", ".join(map(str, plan.rows)),
                        f", {max_streams} streams: {', '.join(map(str, plan.per_row))} rows" if plan.per_row else "")
            with self.runner.compiling():
                self.runner.prepare(plan)
                scratch = [[rows] for rows in plan.rows] + [_spread(rows, max_streams) for rows in plan.per_row]
                for index, counts in enumerate(scratch):
                    logger.info("warm-up: %s object(s) (%d/%d)", "+".join(map(str, counts)), index + 1,
                                len(scratch))
                    for conditioning in plan.steady or (0,):
                        self._scratch_frames(counts, conditioning)
                self.runner.finish_warmup()
        report = WarmupReport(
            backend=self.backend.used,
            precision=self.precision,
            buckets=plan.rows,
            events=tuple(self.runner.events[first_event:]),
            seconds=time.perf_counter() - start,
            frame_buckets=plan.frames if max_streams > 1 else (),
            stream_buckets=plan.per_row,
        )
        logger.info("warm-up done in %.1f s: %s", report.seconds, report.summary())
        return report

    def _scratch_frames(self, object_counts: Sequence[int], conditioning: int = 0) -> None:
        """Step throw-away streams (one per count, with that many clicked objects), all streams together.

        conditioning 0: a prompted and two tracked frames (every program but the steady-state ones).
        c >= 1: c prompted frames (the objects' first clicks, then c - 1 refinements) and two tracked frames
        (the masked programs), then the streams skip ahead with their memory filled by copies
        (MemoryBank.fill_history: what a stream reaches after max_obj_ptrs_in_encoder - 1 tracked frames,
        without computing them) and track two more frames (the steady-state program of c conditioning frames).
        """
        size = self.image_size
        frame = np.full((size, size, 3), 128, dtype=np.uint8)
        streams = [self.create_stream() for _ in object_counts]
        for prompted in range(max(conditioning, 1)):
            for stream, num_objects in zip(streams, object_counts):
                for obj_id in range(1, num_objects + 1):
                    point = [[size * obj_id / (num_objects + 1), size / 2 + prompted]]
                    self.add_prompt(stream, obj_id, points=point, labels=[1], frame_size=(size, size))
            self.step_many(streams, [frame] * len(streams))
        for _ in range(2):
            self.step_many(streams, [frame] * len(streams))
        if not conditioning:
            return
        gap = max(self.model_config.num_maskmem - 1, self.model_config.max_obj_ptrs_in_encoder - 1)
        with torch.inference_mode():
            for stream in streams:
                last = stream.frame_index - 1
                stream.frame_index += gap
                stream._bank.fill_history(len(stream._ids), last, stream.frame_index)
        for _ in range(2):
            self.step_many(streams, [frame] * len(streams))

    # ------------------------------------------------------------------ streams

    @torch.inference_mode()
    def create_stream(self) -> StreamState:
        """A new, empty stream with its memory preallocated for `config.max_objects` objects."""
        cfg = self.model_config
        bank = MemoryBank(
            capacity=self.config.max_objects,
            num_conditioning=self.config.max_conditioning_frames,
            num_recent=cfg.num_maskmem - 1,
            num_recent_ptrs=cfg.max_obj_ptrs_in_encoder - 1,
            mem_dim=cfg.mem_dim,
            hidden_dim=cfg.hidden_dim,
            feat_size=cfg.feat_size,
            device=self.device,
        )
        return StreamState(frame_index=0, frame_size=None, _bank=bank)

    @torch.inference_mode()
    def reset(self, state: StreamState) -> None:
        """Forget every object and prompt; the stream starts again at frame 0 (memory stays allocated)."""
        state._bank.clear()
        state._ids.clear()
        state._absent_frames.clear()
        state._pending.clear()
        state.frame_index = 0
        state.frame_size = None

    @torch.inference_mode()
    def remove_objects(self, state: StreamState, ids: Sequence[int]) -> None:
        """Stop tracking the given objects (also ones whose first prompt is still pending).

        Raises:
          TrackerInputError: an id the stream does not know (nothing is removed then).
        """
        known = set(state.object_ids)
        unknown = [obj_id for obj_id in ids if obj_id not in known]
        if unknown:
            raise TrackerInputError(f"cannot remove unknown object ids {unknown}; known ids: {state.object_ids}")
        removed = set(ids)
        for obj_id in removed:
            state._pending.pop(obj_id, None)
        keep = [row for row, obj_id in enumerate(state._ids) if obj_id not in removed]
        if len(keep) < len(state._ids):
            state._bank.keep_rows(keep, len(state._ids))
            state._ids[:] = [state._ids[row] for row in keep]
            state._absent_frames[:] = [state._absent_frames[row] for row in keep]

    # ------------------------------------------------------------------ prompts

    @torch.inference_mode()
    def add_prompt(
        self,
        state: StreamState,
        object_id: int,
        points: Optional[ArrayLike] = None,
        labels: Optional[ArrayLike] = None,
        box: Optional[ArrayLike] = None,
        mask: Optional[Union[np.ndarray, torch.Tensor]] = None,
        frame_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """Queue a prompt for `object_id`, applied on the next `step` (a new id adds an object).

        A later prompt for the same object before the next step replaces the earlier one. Same as
        ``queue_prompt(state, object_id, prepare_prompt(frame_size or state.frame_size, ...))``.

        Arguments:
          state: the stream.
          object_id: 1 .. 2**31 - 1 (0 is the background of the label image).
          points: (N, 2) x, y in pixels of the original frame, N >= 1; needs `labels`.
          labels: (N,) 1 = object, 0 = background.
          box: (x0, y0, x1, y1) in pixels of the original frame, x1 > x0 and y1 > y0; may come with points.
          mask: (H, W) bool (or integer 0/1) mask at the frame's resolution; not combined with points/box.
          frame_size: (H, W) of the frame the coordinates refer to; defaults to the stream's last frame
            size and is required before the first frame.
        Raises:
          TrackerInputError: invalid prompt, unknown frame size, or more than max_objects objects. The
            stream is unchanged then.
        """
        self.check_new_object(state.object_ids, object_id)
        prompt = self.prepare_prompt(self._prompt_frame_size(state, frame_size), points, labels, box, mask)
        self.queue_prompt(state, object_id, prompt)

    def check_new_object(self, known_ids: Sequence[int], object_id: int) -> None:
        """Whether a prompt for `object_id` may join a stream whose objects are `known_ids`.

        Raises:
          TrackerInputError: not an int in 1 .. 2**31 - 1, or a new id while max_objects are tracked.
        """
        if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
            raise TrackerInputError(f"object_id must be an int, got {type(object_id).__name__}")
        if not 1 <= int(object_id) <= MAX_OBJECT_ID:
            raise TrackerInputError(f"object_id must be in 1..{MAX_OBJECT_ID} (0 is background), got {object_id}")
        if int(object_id) not in known_ids and len(known_ids) >= self.config.max_objects:
            raise TrackerInputError(
                f"cannot add object {object_id}: the stream already has max_objects={self.config.max_objects}"
            )

    @torch.inference_mode()
    def prepare_prompt(
        self,
        frame_size: Tuple[int, int],
        points: Optional[ArrayLike] = None,
        labels: Optional[ArrayLike] = None,
        box: Optional[ArrayLike] = None,
        mask: Optional[Union[np.ndarray, torch.Tensor]] = None,
    ) -> PreparedPrompt:
        """Validate a prompt and convert it to model coordinates, touching no stream (any thread may call it).

        Arguments are those of `add_prompt`; `frame_size` (H, W) is required.
        Raises:
          TrackerInputError: invalid prompt or frame size.
        """
        size = self._prompt_frame_size(None, frame_size)
        if mask is not None:
            if points is not None or labels is not None or box is not None:
                raise TrackerInputError("a mask prompt cannot be combined with points or a box")
            return PreparedPrompt(mask=self._mask_prompt(mask, size))
        coords, point_labels = self._point_prompt(points, labels, box, size)
        return PreparedPrompt(points=coords, labels=point_labels)

    def queue_prompt(self, state: StreamState, object_id: int, prompt: PreparedPrompt) -> None:
        """Queue a prepared prompt for `object_id`, applied on the next `step` (a new id adds an object).

        Raises:
          TrackerInputError: invalid id or more than max_objects objects (the stream is unchanged then).
        """
        self.check_new_object(state.object_ids, object_id)
        state._pending[int(object_id)] = prompt

    def _prompt_frame_size(
        self, state: Optional[StreamState], frame_size: Optional[Tuple[int, int]]
    ) -> Tuple[int, int]:
        if frame_size is None:
            if state is None or state.frame_size is None:
                raise TrackerInputError("no frame stepped yet: pass frame_size=(H, W) with the prompt")
            return state.frame_size
        if len(frame_size) != 2 or any(int(v) != v or v < 1 for v in frame_size):
            raise TrackerInputError(f"frame_size must be (H, W) positive ints, got {frame_size!r}")
        return int(frame_size[0]), int(frame_size[1])

    def _point_prompt(
        self,
        points: Optional[ArrayLike],
        labels: Optional[ArrayLike],
        box: Optional[ArrayLike],
        frame_size: Tuple[int, int],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Validate clicks and/or a box; return (P, 2) float32 model coordinates and (P,) int32 labels."""
        height, width = frame_size
        if (points is None) != (labels is None):
            raise TrackerInputError("points and labels must be given together")
        if points is None and box is None:
            raise TrackerInputError("a prompt needs points (with labels), a box, or a mask")
        parts: List[np.ndarray] = []
        part_labels: List[np.ndarray] = []
        if box is not None:
            box_xy = _as_float_array(box, "box")
            if box_xy.shape != (4,):
                raise TrackerInputError(f"box must be (x0, y0, x1, y1), got shape {box_xy.shape}")
            x0, y0, x1, y1 = box_xy
            if not (x1 > x0 and y1 > y0):
                raise TrackerInputError(f"box must have x1 > x0 and y1 > y0, got {box_xy.tolist()}")
            parts.append(box_xy.reshape(2, 2))
            part_labels.append(np.array([2, 3]))
        if points is not None:
            xy = _as_float_array(points, "points")
            if xy.ndim != 2 or xy.shape[1] != 2:
                raise TrackerInputError(f"points must have shape (N, 2), got {xy.shape}")
            if xy.shape[0] == 0:
                raise TrackerInputError("points is empty: give at least one point")
            label_values = np.asarray(labels)
            if label_values.shape != (xy.shape[0],):
                raise TrackerInputError(
                    f"labels must have shape ({xy.shape[0]},) to match points, got {label_values.shape}"
                )
            if label_values.dtype.kind not in "biuf" or not np.isin(label_values, (0, 1)).all():
                raise TrackerInputError(f"labels must be 0 (background) or 1 (object), got {label_values.tolist()}")
            parts.append(xy)
            part_labels.append(label_values.astype(np.int64))
        coords = np.concatenate(parts)
        outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
        if outside.any():
            raise TrackerInputError(
                f"prompt coordinates {coords[outside].tolist()} lie outside the {width}x{height} frame"
            )
        # Meta's arithmetic, in float32: divide by (width, height), multiply by image_size.
        pixels = torch.tensor(coords, dtype=torch.float32)
        model_coords = pixels / torch.tensor([width, height]) * self.image_size
        return model_coords, torch.tensor(np.concatenate(part_labels), dtype=torch.int32)

    def _mask_prompt(self, mask: Union[np.ndarray, torch.Tensor], frame_size: Tuple[int, int]) -> torch.Tensor:
        """Validate an (H, W) mask prompt; return it resized to (1, S, S) float32 0/1 on the model's device."""
        mask_tensor = torch.as_tensor(mask)
        if mask_tensor.dtype != torch.bool and (mask_tensor.dtype.is_floating_point or mask_tensor.is_complex()):
            raise TrackerInputError(f"mask must be bool (or integer 0/1), got {mask_tensor.dtype}")
        if tuple(mask_tensor.shape) != tuple(frame_size):
            raise TrackerInputError(f"mask must have the frame's size {tuple(frame_size)}, got {tuple(mask_tensor.shape)}")
        if mask_tensor.dtype != torch.bool:
            if not ((mask_tensor == 0) | (mask_tensor == 1)).all():
                raise TrackerInputError("an integer mask must hold only 0 and 1")
            mask_tensor = mask_tensor != 0
        return resize_mask_prompt(mask_tensor.to(self.device), self.image_size)

    # ------------------------------------------------------------------ tracking

    @torch.inference_mode()
    def step(self, state: StreamState, frame: Frame) -> TrackResult:
        """Track every object of the stream on the next frame, applying the pending prompts first.

        Arguments:
          state: the stream.
          frame: (H, W, 3) uint8 RGB numpy array, or a (3, H, W) RGB tensor (uint8, or float in [0, 1]).
        Returns:
          The frame's TrackResult (tensors on the model's device).
        Raises:
          TrackerInputError: wrong frame shape or dtype (the stream is unchanged).
        """
        return self.step_many([state], [frame])[0]

    @torch.inference_mode()
    def step_many(self, states: Sequence[StreamState], frames: Sequence[Frame]) -> List[TrackResult]:
        """Step several streams (cameras) on one frame each, together; each result equals `step` on its own.

        Batching: ONE image-encoder call takes the frames of every stream that has objects; the decoder of
        tracked objects and the memory encoder each run once over the objects of all those streams (each
        object reads its own frame's features); memory attention runs over the objects of all streams
        whose memory readouts have one shape, except where it runs one object at a time anyway (eager on a
        CPU), where each frame's objects stay together so that the frame's first self-attention runs once.
        Prompted objects' decoder calls run per stream, per number of prompt points, as in `step`.
        Fixed-shape backends run at most as many streams together as `warmup(max_streams=...)` prepared
        (more run in groups of that many; results are the same).

        Arguments:
          states: the streams, each at most once.
          frames: one frame per stream, in the same order (see `step`); sizes may differ.
        Returns:
          One TrackResult per stream, in order.
        Raises:
          TrackerInputError: a frame of the wrong shape or dtype; with several streams the message names
            its position ("stream 1 of 3"). Nothing is changed then.
          ValueError: as many streams as frames are needed, and no stream twice.
        A failure anywhere (e.g. out of memory) leaves every stream as it was: memories and object states
        are written only once every model call of every stream went through.
        """
        if len(states) != len(frames):
            raise ValueError(f"step_many needs one frame per stream: {len(states)} streams, {len(frames)} frames")
        if len({id(state) for state in states}) != len(states):
            raise ValueError("step_many got the same stream twice")
        steps = [_StreamStep.start(state, frame, self._checked_frame_size(frame, index, len(frames)))
                 for index, (state, frame) in enumerate(zip(states, frames))]
        for step in steps:
            if step.state.frame_size is not None and step.frame_size != step.state.frame_size:
                logger.warning(
                    "frame size changed from %s to %s: tracking continues (memory is kept at the model "
                    "resolution), outputs follow the new size",
                    step.state.frame_size,
                    step.frame_size,
                )
        active = [step for step in steps if step.object_ids]
        group = self.runner.max_frames or max(len(active), 1)
        autocast = torch.autocast(self.device.type, dtype=self._autocast_dtype, enabled=self.precision != "fp32")
        with self._one_step_at_a_time(), self._matmul_precision():
            with autocast:
                for start in range(0, len(active), group):
                    self._track_frames(active[start:start + group])
            results = [self._frame_result(step) for step in steps]
        # Every stream changes only now that all frames went through: a failure above leaves their objects,
        # memories and pending prompts as they were.
        for step in active:
            self._write_memory(step)
        return [self._commit(step, *result) for step, result in zip(steps, results)]

    @contextlib.contextmanager
    def _one_step_at_a_time(self) -> Iterator[None]:
        """Holds the fixed-shape runner for one step (a step of another thread waits for it)."""
        if self._step_lock is None:
            yield
            return
        if not self._step_lock.acquire(blocking=False):
            logger.debug("step waits: another thread is stepping this tracker's shared %s programs", self.backend.used)
            self._step_lock.acquire()
        try:
            yield
        finally:
            self._step_lock.release()

    @contextlib.contextmanager
    def _matmul_precision(self) -> Iterator[None]:
        """fp32 on CUDA: TF32 matrix products and convolutions for the step when config.allow_tf32 (then the
        previous process-wide settings again); nothing changes elsewhere."""
        if self.device.type != "cuda" or self.precision != "fp32":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.config.allow_tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def _checked_frame_size(self, frame: Frame, index: int, count: int) -> Tuple[int, int]:
        """The (H, W) of a valid frame; TrackerInputError naming the frame's position among several."""
        try:
            return check_frame(frame)
        except TrackerInputError as err:
            if count == 1:
                raise
            raise TrackerInputError(f"stream {index} of {count}: {err}") from None

    def _track_frames(self, steps: List["_StreamStep"]) -> None:
        """Run the model for every object of `steps` on their frames and set each step's outputs and the
        memory to write (nothing is written to any stream here).

        Rows: every stream's objects in the order of its object_ids, the streams one after another; row r
        belongs to frame row_frame[r] of the batch of images.
        """
        model = self.model
        runner = self.runner
        images = torch.cat([preprocess(step.frame, self.image_size, self.device) for step in steps])
        runner.begin_frame()
        feat_s0, feat_s1, feat, pos = runner.encode_image(images)
        pos = pos[:1]  # the position encoding is the same for every frame
        row_frame: List[int] = []
        prompt_of_row: Dict[int, Optional[PreparedPrompt]] = {}
        known_rows: List[bool] = []
        for index, step in enumerate(steps):
            step.first_row = len(row_frame)
            row_frame += [index] * len(step.object_ids)
            prompt_of_row.update(zip(step.rows, step.prompts()))
            known_rows += step.known_rows()
        num_rows = len(row_frame)

        def expand(tensor: torch.Tensor, batch: int) -> torch.Tensor:
            return tensor.expand(batch, *tensor.shape[1:])

        decoded: Dict[int, Tuple[DecodeOutput, int]] = {}  # row -> (output of its group, index in the group)
        # Known objects without a mask prompt are tracked from memory (refined ones too, first), all streams
        # in one batch.
        tracked_rows = [r for r in range(num_rows) if known_rows[r] and not _is_mask(prompt_of_row[r])]
        if tracked_rows:
            batch = len(tracked_rows)
            # Fixed-shape backends run a bucket of rows: the padding repeats the last object and is dropped.
            read_rows = tracked_rows + tracked_rows[-1:] * (runner.batch_for(batch) - batch)
            feat_mem = self._attend_memory(steps, read_rows, feat, pos)
            read_frames = [row_frame[r] for r in read_rows]
            decoded_rows = runner.decode_tracked(
                feat_mem, _frame_rows(feat_s0, read_frames), _frame_rows(feat_s1, read_frames)
            )
            tracked = DecodeOutput(*(values[:batch] for values in decoded_rows))
            for i, row in enumerate(tracked_rows):
                decoded[row] = (tracked, i)
        # Prompted objects, stream by stream.
        for index, step in enumerate(steps):
            frame_feat = feat[index:index + 1]
            frame_s0, frame_s1 = feat_s0[index:index + 1], feat_s1[index:index + 1]
            # Refinement clicks on known objects: memory features + clicks + the tracked mask logits.
            refine_rows = [r for r in tracked_rows if r in step.rows and prompt_of_row[r] is not None]
            for group in _group_by_num_points(refine_rows, prompt_of_row):
                positions = torch.tensor([tracked_rows.index(r) for r in group], device=self.device)
                prev_logits = tracked.low_res_masks.index_select(0, positions).float()
                out = self._decode_points(
                    feat_mem.index_select(0, positions),
                    frame_s0,
                    frame_s1,
                    [prompt_of_row[r] for r in group],
                    prev_logits.clamp(-PREV_MASK_LOGIT_LIMIT, PREV_MASK_LOGIT_LIMIT),
                    is_init_cond_frame=False,
                )
                for i, row in enumerate(group):
                    decoded[row] = (out, i)
            # New objects with clicks / a box: initial conditioning frames, no memory.
            init_rows = [r for r in step.rows if not known_rows[r] and not _is_mask(prompt_of_row[r])]
            if init_rows:
                feat_no_mem = model.no_memory_features(frame_feat)
                for group in _group_by_num_points(init_rows, prompt_of_row):
                    out = self._decode_points(
                        expand(feat_no_mem, len(group)),
                        frame_s0,
                        frame_s1,
                        [prompt_of_row[r] for r in group],
                        None,
                        is_init_cond_frame=True,
                    )
                    for i, row in enumerate(group):
                        decoded[row] = (out, i)
            # Mask prompts (new or known objects): the mask is the output.
            mask_rows = [r for r in step.rows if _is_mask(prompt_of_row[r])]
            if mask_rows:
                masks = torch.stack([prompt_of_row[r].mask for r in mask_rows])  # type: ignore[union-attr]
                batch = len(mask_rows)
                out = model.mask_as_output(
                    expand(frame_feat, batch), expand(frame_s0, batch), expand(frame_s1, batch), masks
                )
                # Meta encodes a prompted frame's memory from its low-res output upsampled to S x S, which for
                # a mask prompt is a smoothed copy of the mask, not the mask itself.
                size = (self.image_size, self.image_size)
                smoothed = F.interpolate(out.low_res_masks.float(), size=size, mode="bilinear", align_corners=False)
                out = out._replace(high_res_masks=smoothed)
                for i, row in enumerate(mask_rows):
                    decoded[row] = (out, i)

        outputs = _gather_rows(decoded, num_rows)
        prompted_rows = [r for r in range(num_rows) if prompt_of_row[r] is not None]
        mem_feat, mem_pos = self._encode_memory(_frame_rows(feat, row_frame), outputs, prompted_rows)
        for step in steps:
            rows = slice(step.first_row, step.first_row + len(step.object_ids))
            step.outputs = _StepOutputs(*(values[rows] for values in outputs))
            step.memory = _NewMemory(
                mem_feat=mem_feat[rows],
                obj_ptr=step.outputs.obj_ptr,
                mem_pos=mem_pos[0],
                prompted_rows=[r - step.first_row for r in prompted_rows if r in step.rows],
            )

    def _attend_memory(
        self, steps: List["_StreamStep"], rows: List[int], feat: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        """Memory-conditioned features (len(rows), C, h, w) of `rows` (ascending, padding repeats the last).

        Each stream's rows are read from its bank; streams whose readouts have the same number of slots run
        in one call. Where memory attention runs one row at a time anyway (memory_attention_batch 1, eager),
        each stream runs alone: its frame's first self-attention, which reads no memory, then runs once.
        """
        runner = self.runner
        one_row_at_a_time = self._memory_attention_batch == 1 and not runner.fixed_shapes
        local_rows = [(frame, step, [r - step.first_row for r in rows if r in step.rows])
                      for frame, step in enumerate(steps)]
        local_rows = [(frame, step, local) for frame, step, local in local_rows if local]
        if runner.fixed_shapes:
            # One program for the whole call: the mask-free steady-state one when every stream's memory is full
            # with the same number of conditioning frames (a count the runner has a program for), read
            # compact (exactly the filled slots); else the masked one over every slot.
            counts = {step.state._bank.steady_conditioning(local, step.frame_index) for _, step, local in local_rows}
            (count,) = counts if len(counts) == 1 else (None,)
            compact = count is not None and count in runner.steady
        else:
            compact = self.config.compact_memory
        parts: List[Tuple[int, MemoryReadout]] = []  # (frame, readout) of each stream with rows to read
        groups: Dict[Tuple[int, ...], List[int]] = {}  # readout shape (and frame) -> positions in parts
        for frame, step, local in local_rows:
            readout = step.state._bank.read(local, step.frame_index, self.model_config.num_maskmem, feat.dtype, compact)
            key = (readout.mem_feats.shape[1], readout.ptrs.shape[1]) + ((frame,) if one_row_at_a_time else ())
            groups.setdefault(key, []).append(len(parts))
            parts.append((frame, readout))
        pieces: List[torch.Tensor] = [feat] * len(parts)  # every one replaced below
        for members in groups.values():
            sizes = [parts[m][1].mem_feats.shape[0] for m in members]
            frames = [parts[m][0] for m, size in zip(members, sizes) for _ in range(size)]
            memory = _concat_readouts([parts[m][1] for m in members])
            out = runner.attend_memory(_frame_rows(feat, frames), pos, memory, self._memory_attention_batch)
            for m, piece in zip(members, out.split(sizes)):
                pieces[m] = piece
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _decode_points(
        self,
        features: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        prompts: List[PreparedPrompt],
        mask_logits: Optional[torch.Tensor],
        is_init_cond_frame: bool,
    ) -> DecodeOutput:
        """Decode B objects of one frame that all have P prompt points (features (B, 256, h, w))."""
        batch = features.shape[0]
        coords = torch.stack([p.points for p in prompts]).to(self.device)  # type: ignore[misc]
        labels = torch.stack([p.labels for p in prompts]).to(self.device)  # type: ignore[misc]
        return self.model.decode(
            features,
            feat_s0.expand(batch, *feat_s0.shape[1:]),
            feat_s1.expand(batch, *feat_s1.shape[1:]),
            coords,
            labels,
            mask_logits,
            self.model.use_multimask(is_init_cond_frame, coords.shape[1]),
        )

    def _encode_memory(
        self, feat: torch.Tensor, outputs: _StepOutputs, prompted_rows: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode this frame's memory of every row in one batch: (N, D, h, w) features and positions.

        feat is (1 or N, C, h, w): the frame's feature, or each row's frame's. Prompted objects' masks are
        binarised (Meta: is_mask_from_pts=True for every prompted frame, mask prompts included). To keep one
        memory-encoder batch, their logits become +-inf: the encoder's sigmoid then yields exactly the
        1.0 / 0.0 that binarisation gives.
        """
        high_res = outputs.high_res_masks
        if prompted_rows and self.model_config.binarize_mask_from_pts_for_mem_enc:
            is_prompted = torch.zeros(high_res.shape[0], 1, 1, 1, dtype=torch.bool, device=self.device)
            is_prompted[prompted_rows] = True
            hard = torch.where(high_res > 0, math.inf, -math.inf)
            high_res = torch.where(is_prompted, hard, high_res)
        return self.runner.encode_memory(feat, high_res, outputs.object_score_logits)

    def _write_memory(self, step: "_StreamStep") -> None:
        """Store the frame's memory of every object of the stream (prompted ones as conditioning memory)."""
        memory = step.memory
        assert memory is not None, "_track_frames sets the memory of every stream with objects"
        bank = step.state._bank
        bank.mem_pos.copy_(memory.mem_pos)
        num_objects = memory.mem_feat.shape[0]
        prompted = set(memory.prompted_rows)
        tracked_rows = [r for r in range(num_objects) if r not in prompted]
        if len(tracked_rows) == num_objects:
            bank.write_recent(tracked_rows, step.frame_index, memory.mem_feat, memory.obj_ptr)
            return
        for rows, write in ((tracked_rows, bank.write_recent), (memory.prompted_rows, bank.write_conditioning)):
            if rows:
                index = torch.tensor(rows, device=self.device)
                write(rows, step.frame_index, memory.mem_feat.index_select(0, index),
                      memory.obj_ptr.index_select(0, index))

    def _frame_result(self, step: "_StreamStep") -> Tuple[TrackResult, List[bool]]:
        """The step's outputs at the frame's resolution, and whether each object is absent (object score
        <= 0); object states are filled in by `_commit`."""
        outputs = step.outputs
        if outputs is None:
            return self._empty_result(step.frame_index, step.frame_size), []
        low_res = outputs.low_res_masks.float()
        logits = upsample_logits(low_res, step.frame_size)
        masks = logits > 0
        scores = outputs.object_score_logits.float()[:, 0]
        result = TrackResult(
            frame_index=step.frame_index,
            object_ids=list(step.object_ids),
            masks=masks,
            logits=logits,
            low_res_logits=low_res,
            ious=outputs.ious.float(),
            presence=torch.sigmoid(scores),
            states=[],
            boxes=boxes_from_masks(masks),
        )
        return result, (scores <= 0).tolist()

    def _commit(self, step: "_StreamStep", result: TrackResult, absent: List[bool]) -> TrackResult:
        """Move the stream past the frame: its objects, cleared prompts, frame index and size, and the objects'
        absence counts and states (the result gets those states)."""
        state = step.state
        state._absent_frames.extend([0] * (len(step.object_ids) - len(state._ids)))
        state._ids = list(step.object_ids)
        state._pending.clear()
        state.frame_index += 1
        state.frame_size = step.frame_size
        for row, is_absent in enumerate(absent):
            state._absent_frames[row] = state._absent_frames[row] + 1 if is_absent else 0
            if state._absent_frames[row] > self.config.lost_after_frames:
                result.states.append(ObjectState.LOST)
            else:
                result.states.append(ObjectState.OCCLUDED if is_absent else ObjectState.TRACKING)
        return result

    def _empty_result(self, frame_index: int, frame_size: Tuple[int, int]) -> TrackResult:
        low = self.image_size // 4
        height, width = frame_size
        return TrackResult(
            frame_index=frame_index,
            object_ids=[],
            masks=torch.zeros(0, height, width, dtype=torch.bool, device=self.device),
            logits=torch.zeros(0, height, width, device=self.device),
            low_res_logits=torch.zeros(0, 1, low, low, device=self.device),
            ious=torch.zeros(0, device=self.device),
            presence=torch.zeros(0, device=self.device),
            states=[],
            boxes=torch.zeros(0, 4, device=self.device),
        )


class _NewMemory(NamedTuple):
    """One stream's memory of a frame, computed and not yet written (N objects, row order)."""

    mem_feat: torch.Tensor  # (N, D, h, w)
    obj_ptr: torch.Tensor  # (N, C) float32
    mem_pos: torch.Tensor  # (D, h, w) the memory encoder's position encoding
    prompted_rows: List[int]  # rows whose memory is a conditioning memory


@dataclass
class _StreamStep:
    """One stream's part of a step: its objects on this frame, its rows among all streams', and what the
    model computed for it (outputs, memory to write) before anything of the stream changes."""

    state: StreamState
    frame: Frame
    frame_size: Tuple[int, int]
    frame_index: int
    object_ids: List[int]  # tracked objects, then new ones whose first prompt is pending (row order)
    first_row: int = 0  # its first row among the rows of all streams of its model calls
    outputs: Optional[_StepOutputs] = None
    memory: Optional[_NewMemory] = None

    @classmethod
    def start(cls, state: StreamState, frame: Frame, frame_size: Tuple[int, int]) -> "_StreamStep":
        return cls(state, frame, frame_size, state.frame_index, state.object_ids)

    @property
    def rows(self) -> range:
        """Its rows among the rows of all streams."""
        return range(self.first_row, self.first_row + len(self.object_ids))

    def prompts(self) -> List[Optional[PreparedPrompt]]:
        """The pending prompt of each object (None: tracked from memory only)."""
        return [self.state._pending.get(obj_id) for obj_id in self.object_ids]

    def known_rows(self) -> List[bool]:
        """Whether each object has a memory (was prompted on an earlier frame)."""
        return self.state._bank.cond_frames[: len(self.object_ids)].ne(EMPTY).any(dim=1).tolist()


def _frame_rows(tensor: torch.Tensor, row_frame: List[int]) -> torch.Tensor:
    """A frame feature (F, ...) for rows reading frames `row_frame`: batch 1 (a view, shared by every row)
    when they all read one frame, else one copy per row (index_select; SAM 2's components take either)."""
    first = row_frame[0]
    if all(frame == first for frame in row_frame):
        return tensor[first:first + 1]
    return tensor.index_select(0, torch.tensor(row_frame, device=tensor.device))


def _concat_readouts(readouts: List[MemoryReadout]) -> MemoryReadout:
    """The rows of several readouts with the same slot counts as one readout (the first one unchanged).

    The spatial position encoding of memory slots is the memory encoder's, the same in every stream's
    bank: the first readout's, expanded over all rows, serves them all without a copy.
    """
    if len(readouts) == 1:
        return readouts[0]
    first = readouts[0]
    rows = sum(readout.mem_feats.shape[0] for readout in readouts)

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(readout, name) for readout in readouts])

    return MemoryReadout(
        mem_feats=cat("mem_feats"),
        mem_pos=first.mem_pos[:1].expand(rows, *first.mem_pos.shape[1:]),
        mem_tpos_index=cat("mem_tpos_index"),
        mem_valid=cat("mem_valid"),
        ptrs=cat("ptrs"),
        ptr_tpos=cat("ptr_tpos"),
        ptr_valid=cat("ptr_valid"),
        complete=all(readout.complete for readout in readouts),
    )


def _spread(rows: int, max_streams: int) -> List[int]:
    """`rows` objects spread as evenly as possible over min(max_streams, rows) streams."""
    streams = min(max_streams, rows)
    return [rows // streams + (1 if index < rows % streams else 0) for index in range(streams)]


def _is_mask(prompt: Optional[PreparedPrompt]) -> bool:
    return prompt is not None and prompt.mask is not None


def _group_by_num_points(rows: List[int], prompt_of_row: Dict[int, Optional[PreparedPrompt]]) -> List[List[int]]:
    """Split rows with point prompts into groups of equal point count (one decoder batch each)."""
    groups: Dict[int, List[int]] = {}
    for row in rows:
        prompt = prompt_of_row[row]
        if prompt is not None and prompt.points is not None:
            groups.setdefault(prompt.points.shape[0], []).append(row)
    return list(groups.values())


def _gather_rows(decoded: Dict[int, Tuple[DecodeOutput, int]], num_objects: int) -> _StepOutputs:
    """Assemble per-object outputs of several decoder batches into row order."""
    sources = [decoded[row] for row in range(num_objects)]
    first = sources[0][0]
    if all(out is first for out, _ in sources) and [i for _, i in sources] == list(range(num_objects)):
        return _frame_outputs(first)  # the common case: every object tracked in one batch
    parts = [_frame_outputs(out) for out, _ in sources]
    return _StepOutputs(
        *(torch.stack([part[k][i] for part, (_, i) in zip(parts, sources)]) for k in range(len(_StepOutputs._fields)))
    )


def _frame_outputs(out: DecodeOutput) -> _StepOutputs:
    """The fields of a DecodeOutput the tracker keeps, as float32 where they leave the model."""
    return _StepOutputs(
        low_res_masks=out.low_res_masks.float(),
        high_res_masks=out.high_res_masks.float(),
        ious=out.ious.float().amax(dim=1),
        obj_ptr=out.obj_ptr.float(),
        object_score_logits=out.object_score_logits.float(),
    )


def _as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    """A prompt coordinate array as float64 numpy, rejecting non-numbers, NaN and infinity."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
        if array.dtype.kind == "c":  # a cast would drop the imaginary part (with only a warning)
            raise TrackerInputError(f"{name} must be real numbers, got complex values {array.tolist()}")
        array = array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TrackerInputError(f"{name} must be numbers, got {value!r}") from err
    if not np.isfinite(array).all():
        raise TrackerInputError(f"{name} must be finite numbers (no NaN or infinity), got {array.tolist()}")
    return array


def check_frame(frame: Frame) -> Tuple[int, int]:
    """The (H, W) of a frame `Tracker.step` accepts (see its `frame` argument).

    Raises:
      TrackerInputError: not a numpy array or tensor, wrong shape or dtype, or empty.
    """
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise TrackerInputError(f"a numpy frame must be (H, W, 3) RGB, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise TrackerInputError(f"a numpy frame must be uint8, got {frame.dtype}")
        height, width = frame.shape[:2]
    elif isinstance(frame, torch.Tensor):
        if frame.dim() != 3 or frame.shape[0] != 3:
            raise TrackerInputError(f"a tensor frame must be (3, H, W) RGB, got shape {tuple(frame.shape)}")
        if frame.dtype != torch.uint8 and not frame.dtype.is_floating_point:
            raise TrackerInputError(f"a tensor frame must be uint8 or floating point, got {frame.dtype}")
        height, width = frame.shape[1:]
    else:
        raise TrackerInputError(f"a frame must be a numpy array or a torch tensor, got {type(frame).__name__}")
    if height < 1 or width < 1:
        raise TrackerInputError(f"a frame must not be empty, got {height}x{width}")
    return int(height), int(width)
