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
import logging
import math
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sam2_rt.modeling.sam2 import DecodeOutput, SAM2Model
from sam2_rt.runtime.backends import PRECISIONS, RunnerOptions, resolve_precision
from sam2_rt.runtime.choice import make_runner
from sam2_rt.runtime.readout import MemoryReadout
from sam2_rt.runtime.transfer import to_device
from sam2_rt.tracking.config import TrackerConfig, WarmupReport, cpu_has_native
from sam2_rt.tracking.memory import MemoryBank
from sam2_rt.tracking.motion import MotionState, SamuraiConfig
from sam2_rt.tracking.state import PreparedPrompt, StreamState, TrackResult
from sam2_rt.tracking.step import (
    NewMemory,
    StepOutputs,
    StreamStep,
    concat_readouts,
    decode_chosen,
    frame_result,
    frame_rows,
    gather_rows,
    group_by_num_points,
    is_mask,
    write_memory,
)
from sam2_rt.tracking.transforms import Frame, preprocess
from sam2_rt.tracking.validation import ArrayLike, check_frame, check_object_id, checked_frame_size, prepare_prompt
from sam2_rt.tracking.warmup import run_warmup

logger = logging.getLogger(__name__)

# Meta clamps the previous mask logits it feeds back with a correction click (rare numerical issues).
PREV_MASK_LOGIT_LIMIT = 32.0


class Tracker:
    """Tracks prompted objects through streams of frames with one SAM 2 model.

    Threads: a stream is used by one thread at a time. With the eager backend, different streams may be stepped
    by different threads at the same time (the tracker keeps no state but the streams'; the weights are only
    read). The compile and tensorrt backends run one step at a time (their graphs and engines are shared): a
    step of another thread waits for the running one (a lock).

    Arguments:
      model: the SAM 2 or EdgeTAM model, any device; prepared for inference here, in place
        (`SAM2Model.prepare_for_inference`: eval mode; EdgeTAM's trunk folded, after which its state_dict has
        the folded trunk's keys).
      config: tracker options.
    Raises:
      ValueError: a model configuration this tracker does not implement (all official ones are).
    """

    def __init__(self, model: SAM2Model, config: TrackerConfig = TrackerConfig()) -> None:
        self.model = model.prepare_for_inference()
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
        if self.device.type == "cpu" and self.precision != "fp32" and not cpu_has_native(self.precision):
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
        # motion="samurai": SAMURAI's parameters (its decodes choose among the candidates eagerly).
        self._samurai: Optional[SamuraiConfig] = config.samurai if config.motion == "samurai" else None

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
        return run_warmup(self, object_counts, max_streams)

    # ------------------------------------------------------------------ streams

    @torch.inference_mode()
    def create_stream(self) -> StreamState:
        """A new, empty stream with its memory preallocated for `config.max_objects` objects."""
        bank = MemoryBank.for_model(self.model_config, self.config.max_objects, self.config.max_conditioning_frames,
                                    self.device, selective=self._samurai is not None)
        motion = MotionState(self.config.max_objects, self.device) if self._samurai is not None else None
        return StreamState(frame_index=0, frame_size=None, _bank=bank, _motion=motion)

    @torch.inference_mode()
    def reset(self, state: StreamState) -> None:
        """Forget every object and prompt; the stream starts again at frame 0 (memory stays allocated)."""
        state.clear()

    @torch.inference_mode()
    def remove_objects(self, state: StreamState, ids: Sequence[int]) -> None:
        """Stop tracking the given objects (also ones whose first prompt is still pending).

        Raises:
          TrackerInputError: an id the stream does not know (nothing is removed then).
        """
        state.remove(ids)

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
        prompt = self.prepare_prompt(checked_frame_size(frame_size, state.frame_size), points, labels, box, mask)
        self.queue_prompt(state, object_id, prompt)

    def check_new_object(self, known_ids: Sequence[int], object_id: int) -> None:
        """Whether a prompt for `object_id` may join a stream whose objects are `known_ids`.

        Raises:
          TrackerInputError: not an int in 1 .. 2**31 - 1, or a new id while max_objects are tracked.
        """
        check_object_id(known_ids, object_id, self.config.max_objects)

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
        return prepare_prompt(frame_size, self.image_size, self.device, points, labels, box, mask)

    def queue_prompt(self, state: StreamState, object_id: int, prompt: PreparedPrompt) -> None:
        """Queue a prepared prompt for `object_id`, applied on the next `step` (a new id adds an object).

        Raises:
          TrackerInputError: invalid id or more than max_objects objects (the stream is unchanged then).
        """
        self.check_new_object(state.object_ids, object_id)
        state.queue(object_id, prompt)

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
        steps = [StreamStep.start(state, frame, check_frame(frame, index, len(frames)))
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
            results = [frame_result(step, self.image_size, self.device) for step in steps]
        # Every stream changes only now that all frames went through: a failure above leaves their objects,
        # memories and pending prompts as they were.
        for step in active:
            write_memory(step, self._samurai)
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

    def _track_frames(self, steps: List[StreamStep]) -> None:
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
        tracked_rows = [r for r in range(num_rows) if known_rows[r] and not is_mask(prompt_of_row[r])]
        if tracked_rows:
            batch = len(tracked_rows)
            # Fixed-shape backends run a bucket of rows: the padding repeats the last object and is dropped.
            read_rows = tracked_rows + tracked_rows[-1:] * (runner.batch_for(batch) - batch)
            feat_mem = self._attend_memory(steps, read_rows, feat, pos)
            read_frames = [row_frame[r] for r in read_rows]
            if self._samurai is None:
                s0_rows, s1_rows = frame_rows(feat_s0, read_frames), frame_rows(feat_s1, read_frames)
                decoded_rows = runner.decode_tracked(feat_mem, s0_rows, s1_rows)
                tracked = DecodeOutput(*(values[:batch] for values in decoded_rows))
            else:  # the filters choose among the candidates (eager decoder, without the padding rows)
                feat_mem, frames = feat_mem[:batch], read_frames[:batch]
                groups = [(s, [r - s.first_row for r in tracked_rows if r in s.rows],
                           [i for i, r in enumerate(tracked_rows) if r in s.rows]) for s in steps]
                tracked = decode_chosen(model, [g for g in groups if g[1]], feat_mem, frame_rows(feat_s0, frames),
                                        frame_rows(feat_s1, frames), None, None, None, model.use_multimask(False, 0),
                                        self._samurai)
            for i, row in enumerate(tracked_rows):
                decoded[row] = (tracked, i)
        position = {row: i for i, row in enumerate(tracked_rows)}  # row -> its place in the tracked batch
        # Prompted objects, stream by stream.
        for index, step in enumerate(steps):
            frame_feat = feat[index:index + 1]
            frame_s0, frame_s1 = feat_s0[index:index + 1], feat_s1[index:index + 1]
            # Refinement clicks on known objects: memory features + clicks + the tracked mask logits.
            refine_rows = [r for r in tracked_rows if r in step.rows and prompt_of_row[r] is not None]
            for group in group_by_num_points(refine_rows, prompt_of_row):
                positions = to_device([position[r] for r in group], self.device)
                prev_logits = tracked.low_res_masks.index_select(0, positions).float()
                out = self._decode_points(
                    feat_mem.index_select(0, positions),
                    frame_s0,
                    frame_s1,
                    [prompt_of_row[r] for r in group],
                    prev_logits.clamp(-PREV_MASK_LOGIT_LIMIT, PREV_MASK_LOGIT_LIMIT),
                    is_init_cond_frame=False,
                    motion=(step, [r - step.first_row for r in group]),
                )
                for i, row in enumerate(group):
                    decoded[row] = (out, i)
            # New objects with clicks / a box: initial conditioning frames, no memory.
            init_rows = [r for r in step.rows if not known_rows[r] and not is_mask(prompt_of_row[r])]
            if init_rows:
                feat_no_mem = model.no_memory_features(frame_feat)
                for group in group_by_num_points(init_rows, prompt_of_row):
                    out = self._decode_points(
                        expand(feat_no_mem, len(group)),
                        frame_s0,
                        frame_s1,
                        [prompt_of_row[r] for r in group],
                        None,
                        is_init_cond_frame=True,
                        motion=(step, [r - step.first_row for r in group]),
                    )
                    for i, row in enumerate(group):
                        decoded[row] = (out, i)
            # Mask prompts (new or known objects): the mask is the output.
            mask_rows = [r for r in step.rows if is_mask(prompt_of_row[r])]
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

        outputs = gather_rows(decoded, num_rows)
        prompted_rows = [r for r in range(num_rows) if prompt_of_row[r] is not None]
        mem_feat, mem_pos = self._encode_memory(frame_rows(feat, row_frame), outputs, prompted_rows)
        for step in steps:
            rows = slice(step.first_row, step.first_row + len(step.object_ids))
            step.outputs = StepOutputs(*(values[rows] for values in outputs))
            step.memory = NewMemory(
                mem_feat=mem_feat[rows],
                obj_ptr=step.outputs.obj_ptr,
                mem_pos=mem_pos[0],
                prompted_rows=[r - step.first_row for r in prompted_rows if r in step.rows],
            )

    def _attend_memory(
        self, steps: List[StreamStep], rows: List[int], feat: torch.Tensor, pos: torch.Tensor
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
            counts = {step.state.memory.steady_conditioning(local, step.frame_index) for _, step, local in local_rows}
            (count,) = counts if len(counts) == 1 else (None,)
            compact = count is not None and count in runner.steady
        else:
            compact = self.config.compact_memory
        parts: List[Tuple[int, MemoryReadout]] = []  # (frame, readout) of each stream with rows to read
        groups: Dict[Tuple[int, ...], List[int]] = {}  # readout shape (and frame) -> positions in parts
        for frame, step, local in local_rows:
            readout = step.state.memory.read(local, step.frame_index, self.model_config.num_maskmem, feat.dtype,
                                             compact)
            key = (readout.mem_feats.shape[1], readout.ptrs.shape[1]) + ((frame,) if one_row_at_a_time else ())
            groups.setdefault(key, []).append(len(parts))
            parts.append((frame, readout))
        pieces: List[torch.Tensor] = [feat] * len(parts)  # every one replaced below
        for members in groups.values():
            sizes = [parts[m][1].mem_feats.shape[0] for m in members]
            frames = [parts[m][0] for m, size in zip(members, sizes) for _ in range(size)]
            memory = concat_readouts([parts[m][1] for m in members])
            out = runner.attend_memory(frame_rows(feat, frames), pos, memory, self._memory_attention_batch)
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
        motion: Optional[Tuple[StreamStep, List[int]]] = None,
    ) -> DecodeOutput:
        """Decode B objects of one frame that all have P prompt points (features (B, 256, h, w)); with
        motion="samurai", `motion` (the stream's step, the objects' rows in it) lets their filters choose."""
        batch = features.shape[0]
        coords = torch.stack([p.points for p in prompts]).to(self.device)  # type: ignore[misc]
        labels = torch.stack([p.labels for p in prompts]).to(self.device)  # type: ignore[misc]
        multimask = self.model.use_multimask(is_init_cond_frame, coords.shape[1])
        if self._samurai is not None and motion is not None:
            step, rows = motion
            return decode_chosen(self.model, [(step, rows, list(range(batch)))], features, feat_s0, feat_s1, coords,
                                 labels, mask_logits, multimask, self._samurai)
        return self.model.decode(
            features,
            feat_s0.expand(batch, *feat_s0.shape[1:]),
            feat_s1.expand(batch, *feat_s1.shape[1:]),
            coords,
            labels,
            mask_logits,
            multimask,
        )

    def _encode_memory(
        self, feat: torch.Tensor, outputs: StepOutputs, prompted_rows: List[int]
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

    def _commit(self, step: StreamStep, result: TrackResult, absent: List[bool]) -> TrackResult:
        """Move the stream past the frame: its objects, cleared prompts, frame index and size, and the objects'
        absence counts and states (the result gets those states)."""
        result.states.extend(step.state.commit(step.object_ids, step.frame_size, absent,
                                               self.config.lost_after_frames))
        return result
