"""Execution backends of the tracker's per-frame components: eager, torch.compile, TensorRT.

A backend changes how the four per-frame components run (``sam2_rt.runtime.export.COMPONENTS``), never what they
compute or the model's parameter names:

- ``image_encoder``    (1, 3, S, S) -> FPN levels, once per frame
- ``memory_attention`` all tracked objects of a frame in one call, every memory slot + key mask
- ``mask_decoder``     all tracked objects of a frame in one call (no prompt)
- ``memory_encoder``   all objects of a frame in one call

``eager`` calls the model's methods at whatever shapes come (compact memory, any number of objects).
``compile`` and ``tensorrt`` run FIXED shapes: every memory slot always, and the number of objects padded up
to a bucket (``object_buckets``: 1, 2, 4, 8, ... and max_objects). Padding rows repeat a real object; their
outputs are dropped before anything reads them, so they never reach results or memory. Each component
therefore has one graph per bucket, built before the first frame by ``Tracker.warmup`` and never again:
``compile`` compiles one torch.compile graph per bucket (optionally with CUDA graphs), ``tensorrt`` builds
or loads one TensorRT engine per bucket (``sam2_rt.runtime.engines``, with an on-disk cache).

Prompt frames: the decoder calls of prompted objects (clicks, boxes, masks) run eager on every backend, one
call per distinct number of prompt points (SAM's prompt encoder cannot pad point lists without changing the
result), so a prompt never triggers a build; the other components of that frame use the fixed shapes.

Several streams (``Tracker.step_many``): the image encoder takes a batch of frames (padded to a bucket of
frames, ``serve_streams``), and the other components take the rows of all streams in one call. Rows that all
read one frame get that frame's features with batch 1 (the single-stream shapes); rows of several frames get
one copy of their frame's features per row (``ProgramShape.per_row_frames``), so every program's shape
depends on its bucket of rows only, never on how the rows split over frames.

Availability is checked up front; an unavailable backend falls back (tensorrt -> compile -> eager) with a
warning that names the reason. torch-tensorrt is an optional extra (``pip install sam2-rt[tensorrt]``)
for CUDA machines: its TensorRT libraries come from NVIDIA's index, not PyPI.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from sam2_rt.weights.checkpoint import weights_sha256
from sam2_rt.runtime.compile_cache import CompileCache, default_compile_cache_dir, kept_inductor_caches
from sam2_rt.modeling.config import BACKEND_NAMES, PRECISION_NAMES
from sam2_rt.runtime.export import COMPONENTS, component_module, tracking_prompt
from sam2_rt.runtime.readout import MemoryReadout
from sam2_rt.modeling.sam2 import DecodeOutput, SAM2Model

logger = logging.getLogger(__name__)

BACKENDS = BACKEND_NAMES
# Fallback order when a backend is unavailable.
_FALLBACK = {"tensorrt": "compile", "compile": "eager"}
# Compute precisions: fp32, or autocast to bf16 / fp16 (the weights stay float32); "auto" resolves to one of
# them per device (resolve_precision).
PRECISIONS: Dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
assert set(PRECISIONS) | {"auto"} == set(PRECISION_NAMES)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The compute precision `precision` means on `device`: "auto" is bf16 on a CUDA device with bf16
    arithmetic (Ampere and newer), fp32 elsewhere (a CPU without native bf16 runs it several times slower
    than fp32, and one with it loses the parity with fp32 that CPU users rely on); others are themselves."""
    if precision not in PRECISION_NAMES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_NAMES)}")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16"
    return "fp32"

Tensors = Tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class BackendChoice:
    """What was asked for and what runs."""

    requested: str  # the backend asked for
    used: str  # the backend actually applied (after fallbacks)
    reasons: tuple[str, ...]  # why each fallback happened (empty when requested == used)


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


def object_buckets(max_objects: int) -> Tuple[int, ...]:
    """Object counts the fixed-shape backends compile for: powers of two below max_objects, then max_objects."""
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    buckets = []
    size = 1
    while size < max_objects:
        buckets.append(size)
        size *= 2
    return tuple(buckets) + (max_objects,)


def bucket_for(count: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `count` objects."""
    for bucket in buckets:
        if bucket >= count:
            return bucket
    raise ValueError(f"{count} objects exceed the largest bucket {buckets[-1]}")


def stream_buckets(max_objects: int, max_streams: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(row buckets, frame buckets) for steps of up to `max_streams` streams of up to `max_objects` objects.

    Rows: the single-stream buckets (object_buckets(max_objects)) and those of all streams' rows together
    (object_buckets(max_streams * max_objects)); frames: object_buckets(max_streams).
    """
    if max_streams < 1:
        raise ValueError(f"max_streams must be >= 1, got {max_streams}")
    rows = set(object_buckets(max_objects)) | set(object_buckets(max_streams * max_objects))
    return tuple(sorted(rows)), object_buckets(max_streams)


class ProgramShape(NamedTuple):
    """The static shape one program of a component is built for."""

    rows: int  # objects per call (a bucket of rows); frames per call for the image encoder
    # Frame features come one per row (rows of several frames), instead of batch 1 shared by every row.
    per_row_frames: bool = False
    # Memory attention only. 0: every memory slot with a key mask (any state of the memory). c >= 1: the
    # steady-state graph of a full memory with c conditioning frames, exactly its c + R slots and c + Q
    # pointers and NO mask, so scaled_dot_product_attention can take FlashAttention / cuDNN kernels.
    steady: int = 0


@dataclass(frozen=True)
class ShapePlan:
    """Every program shape a warm-up builds.

    Attributes:
      frames: frame buckets of the image encoder.
      rows: row buckets of calls whose rows all read one frame (batch-1 features).
      per_row: row buckets of calls whose rows read several frames (one feature per row).
    """

    frames: Tuple[int, ...]
    rows: Tuple[int, ...]
    per_row: Tuple[int, ...] = ()
    steady: Tuple[int, ...] = ()  # conditioning-frame counts of memory attention's mask-free graphs

    def shapes(self, component: str) -> Tuple[ProgramShape, ...]:
        """The shapes of `component` (one of export.COMPONENTS)."""
        if component == "image_encoder":
            return tuple(ProgramShape(frames) for frames in self.frames)
        shapes = tuple(ProgramShape(rows) for rows in self.rows) + tuple(ProgramShape(rows, True) for rows in self.per_row)
        if component != "memory_attention":
            return shapes
        return shapes + tuple(shape._replace(steady=count) for count in self.steady for shape in shapes)


# --------------------------------------------------------------------------- runners


@dataclass
class CompileEvent:
    """One graph compiled, engine built or engine loaded."""

    component: str
    bucket: int  # rows per call (frames for the image encoder)
    action: str  # "compiled", "built", "rebuilt" or "loaded"
    seconds: float
    per_row_frames: bool = False  # built for rows of several frames (ProgramShape.per_row_frames)
    steady: int = 0  # memory attention's mask-free graph for this many conditioning frames (ProgramShape.steady)


class EagerRunner:
    """Runs the per-frame components as SAM2Model's eager methods, at whatever shapes come.

    The interface of every runner (Tracker calls only these):
      batch_for(count) -> rows to run for `count` objects (a bucket on fixed-shape runners);
      max_frames -> most frames one image-encoder call takes (None: any number);
      serve_streams(max_streams) and prepare(plan) before the streams; begin_frame(); encode_image;
      attend_memory; decode_tracked; encode_memory (see each method).
    Frame features (feat, pos, feat_s0, feat_s1) come either with batch 1, shared by every row of a call,
    or with one row per object row (rows of several frames).
    Attributes:
      fixed_shapes: True when shapes are fixed (all memory slots, bucketed object counts).
      compilations: per component, graphs compiled or engines built / loaded so far.
      events: every compilation, in order (CompileEvent).
    """

    fixed_shapes = False

    def __init__(self, model: SAM2Model) -> None:
        self.model = model
        self.compilations: Dict[str, int] = {name: 0 for name in COMPONENTS}
        self.events: List[CompileEvent] = []

    def batch_for(self, count: int) -> int:
        """Rows the components run for `count` objects."""
        return count

    @property
    def max_frames(self) -> Optional[int]:
        """Most frames one step runs together (None: no limit)."""
        return None

    def serve_streams(self, max_streams: int) -> ShapePlan:
        """Size the shapes for steps of up to `max_streams` streams; returns every shape (empty on eager)."""
        return ShapePlan(frames=(), rows=())

    def prepare(self, plan: ShapePlan) -> List[CompileEvent]:
        """Build or load what can be built ahead of a frame for `plan` (TensorRT engines); returns what was
        done. Graphs that compile on first call (torch.compile) compile in Tracker.warmup's frames."""
        return []

    def finish_warmup(self) -> None:
        """Called by Tracker.warmup once every shape ran (the compile backend saves its artifacts here)."""

    def compiling(self) -> ContextManager[object]:
        """The context Tracker.warmup compiles in (the compile backend keeps inductor's caches in ours)."""
        return contextlib.nullcontext()

    def begin_frame(self) -> None:
        """Called once before each frame's (or batch of frames') first component."""

    def encode_image(self, images: torch.Tensor) -> Tensors:
        """(F, 3, S, S) -> (feat_s0, feat_s1, feat, pos), each with batch F; see SAM2Model.forward_image (its
        channels-last convolutions on a CPU, where they were measured faster)."""
        return self.model.forward_image(images, channels_last=images.device.type == "cpu")

    def attend_memory(
        self, feat: torch.Tensor, pos: torch.Tensor, memory: MemoryReadout, batch_chunk: Optional[int]
    ) -> torch.Tensor:
        """Feature (1 or B, C, h, w), position (1, C, h, w) + a readout of B rows -> (B, C, h, w); see
        SAM2Model.attend_memory."""
        # A complete readout (known on the host, no device read) attends without a key mask: same result,
        # and a masked softmax is slower (~10% on CPU; on CUDA a mask rules out FlashAttention).
        return self.model.attend_memory(
            feat,
            pos,
            memory.mem_feats,
            memory.mem_pos,
            memory.mem_tpos_index,
            None if memory.complete else memory.mem_valid,
            memory.ptrs,
            memory.ptr_tpos,
            None if memory.complete else memory.ptr_valid,
            batch_chunk=batch_chunk,
        )

    def decode_tracked(self, feat_mem: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> DecodeOutput:
        """Decoder of B objects tracked from memory (feat_mem (B, C, h, w); feat_s0 / feat_s1 batch 1 or B)."""
        batch = feat_mem.shape[0]
        return self.model.decode(
            feat_mem,
            feat_s0.expand(batch, *feat_s0.shape[1:]),
            feat_s1.expand(batch, *feat_s1.shape[1:]),
            None,
            None,
            None,
            self.model.use_multimask(False, 0),
        )

    def encode_memory(
        self, feat: torch.Tensor, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Memories of N objects: feat (1 or N, C, h, w), masks (N, 1, S, S), scores (N, 1) -> (N, D, h, w) x 2
        (channels-last convolutions on a CPU, as encode_image)."""
        count = high_res_masks.shape[0]
        return self.model.encode_memory(
            feat.expand(count, *feat.shape[1:]), high_res_masks, object_score_logits, False,
            channels_last=feat.device.type == "cpu",
        )


# A compiled program of one component: called with its shape and the component's inputs.
Program = Callable[..., Tensors]


class FixedShapeRunner(EagerRunner):
    """Runs each component through `programs` at fixed shapes: objects padded to buckets, all memory slots.

    Arguments:
      model: the model (its eager methods are not called here).
      buckets: object counts compiled for (object_buckets); `serve_streams` adds those of several streams.
      programs: component -> callable(ProgramShape, *inputs) -> tuple of tensors (compiled functions or engines).
      cuda_graphs: the programs replay CUDA graphs; their outputs live in static buffers that the next replay
        overwrites, so they are cloned, and each frame starts a new CUDA-graph step.
      steady: conditioning-frame counts c for which memory attention has a mask-free steady-state program
        (ProgramShape.steady); a full memory with another count runs the masked program over every slot.
    Attributes:
      buckets: row buckets; frame_buckets: frame buckets of the image encoder ((1,) until serve_streams).
      steady: as the argument.
    """

    fixed_shapes = True

    def __init__(
        self,
        model: SAM2Model,
        buckets: Sequence[int],
        programs: Dict[str, Callable[..., Tensors]],
        cuda_graphs: bool = False,
        steady: Sequence[int] = (1,),
    ) -> None:
        super().__init__(model)
        self.buckets = tuple(buckets)
        self.frame_buckets: Tuple[int, ...] = (1,)
        self.programs = programs
        self.cuda_graphs = cuda_graphs
        self.steady = tuple(sorted(set(steady)))
        self._max_objects = self.buckets[-1]
        self._num_recent = model.config.num_maskmem - 1
        self._num_recent_ptrs = model.config.max_obj_ptrs_in_encoder - 1

    def batch_for(self, count: int) -> int:
        return bucket_for(count, self.buckets)

    @property
    def max_frames(self) -> Optional[int]:
        return self.frame_buckets[-1]

    def serve_streams(self, max_streams: int) -> ShapePlan:
        self.buckets, self.frame_buckets = stream_buckets(self._max_objects, max_streams)
        per_row = tuple(rows for rows in self.buckets if rows >= 2) if max_streams > 1 else ()
        return ShapePlan(frames=self.frame_buckets, rows=object_buckets(self._max_objects), per_row=per_row,
                         steady=self.steady)

    def steady_program(self, memory: MemoryReadout) -> int:
        """The conditioning count c of the mask-free program that serves `memory`, 0 for the masked one."""
        count = memory.mem_feats.shape[1] - self._num_recent
        if (memory.complete and count in self.steady
                and memory.ptrs.shape[1] == count + self._num_recent_ptrs):
            return count
        return 0

    def begin_frame(self) -> None:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def _run(self, component: str, shape: ProgramShape, *inputs: torch.Tensor) -> Tensors:
        outputs = self.programs[component](shape, *inputs)
        if self.cuda_graphs:
            outputs = tuple(out.clone() for out in outputs)
        return outputs

    def encode_image(self, images: torch.Tensor) -> Tensors:
        count = images.shape[0]
        frames = bucket_for(count, self.frame_buckets)
        outputs = self._run("image_encoder", ProgramShape(frames), pad_rows(images, frames))
        # A graph may return an output expanded over its frames (the position encoding: batch stride 0); the
        # next graphs guard on strides, so every output gets the strides a batch-1 call gives.
        return tuple(_dense(out[:count]) for out in outputs)

    def attend_memory(
        self, feat: torch.Tensor, pos: torch.Tensor, memory: MemoryReadout, batch_chunk: Optional[int]
    ) -> torch.Tensor:
        steady = self.steady_program(memory)
        shape = ProgramShape(memory.mem_feats.shape[0], per_row_frames=feat.shape[0] > 1, steady=steady)
        # one position encoding shared by every slot: batch 1, expanded in the graph
        inputs = [feat, pos, memory.mem_feats, memory.mem_pos[:1, :1], memory.mem_tpos_index, memory.mem_valid,
                  memory.ptrs, memory.ptr_tpos, memory.ptr_valid]
        if steady:
            del inputs[8], inputs[5]  # a full memory: no validity masks, no key mask in the graph
        (out,) = self._run("memory_attention", shape, *inputs)
        return out

    def decode_tracked(self, feat_mem: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> DecodeOutput:
        batch = feat_mem.shape[0]
        prompt = tracking_prompt(batch, feat_mem.device)
        shape = ProgramShape(batch, per_row_frames=feat_s0.shape[0] > 1)
        return DecodeOutput(*self._run("mask_decoder", shape, feat_mem, feat_s0, feat_s1, *prompt))

    def encode_memory(
        self, feat: torch.Tensor, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        count = high_res_masks.shape[0]
        bucket = self.batch_for(count)
        per_row_frames = feat.shape[0] > 1
        if per_row_frames:
            feat = pad_rows(feat, bucket)
        masks, scores = (pad_rows(t, bucket) for t in (high_res_masks, object_score_logits))
        mem_feat, mem_pos = self._run("memory_encoder", ProgramShape(bucket, per_row_frames), feat, masks, scores)
        return mem_feat[:count], mem_pos[:count]


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or a copy with standard strides when it is expanded over its first dim (stride 0)."""
    return tensor.clone(memory_format=torch.contiguous_format) if tensor.stride(0) == 0 else tensor


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """`tensor` (N, ...) with its last row repeated up to `rows` rows (a real object's data: no NaN, no
    special case; padding outputs are dropped)."""
    missing = rows - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat((tensor, tensor[-1:].expand(missing, *tensor.shape[1:])), dim=0)


# --------------------------------------------------------------------------- torch.compile


def compile_backend(name: str, cuda_graphs: bool) -> Callable:
    """The torch.compile backend callable for a registered backend name; CUDA graphs only with "inductor"."""
    if name == "inductor":
        from torch._inductor.compile_fx import compile_fx

        patches = {"triton.cudagraphs": True} if cuda_graphs else {}
        return functools.partial(compile_fx, config_patches=patches)
    if cuda_graphs:
        raise ValueError(f"CUDA graphs need the inductor compiler, not {name!r}")
    return torch._dynamo.lookup_backend(name)


class _CountingCompiler:
    """A torch.compile backend that counts (and times) each graph it is handed, then delegates."""

    def __init__(self, runner: EagerRunner, component: str, inner: Callable) -> None:
        self.runner = runner
        self.component = component
        self.inner = inner
        # set by the caller before each call: the shape a new graph is compiled for
        self.shape = ProgramShape(0)

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: List[torch.Tensor]) -> Callable:
        start = time.perf_counter()
        hits = _inductor_cache_hits()
        compiled = self.inner(graph, example_inputs)
        seconds = time.perf_counter() - start
        # inductor found the graph's code in its caches (e.g. loaded from our compile cache): nothing generated
        action = "loaded" if _inductor_cache_hits() > hits else "compiled"
        rows, per_row_frames, steady = self.shape
        self.runner.compilations[self.component] += 1
        self.runner.events.append(CompileEvent(self.component, rows, action, seconds, per_row_frames, steady))
        logger.info("%s %s for %d row(s)%s%s in %.1f s", action, self.component, rows,
                    " of several frames" if per_row_frames else "",
                    f" (steady state, {steady} conditioning frame(s), no mask)" if steady else "", seconds)
        return compiled


def _inductor_cache_hits() -> int:
    """Graphs inductor has taken from its FX graph cache in this process so far."""
    return int(torch._dynamo.utils.counters["inductor"]["fxgraph_cache_hit"])


class CompiledRunner(FixedShapeRunner):
    """A fixed-shape runner whose programs are torch.compile'd component wrappers (one graph per shape)."""

    def __init__(
        self, model: SAM2Model, buckets: Sequence[int], cuda_graphs: bool = False, steady: Sequence[int] = (1,),
        compiler: str = "inductor", cache_dir: Optional[Path] = None, num_conditioning: int = 4,
        precision: str = "fp32",
    ) -> None:
        super().__init__(model, buckets, {}, cuda_graphs=cuda_graphs, steady=steady)
        self._graphs_reserved = 0  # graphs per component this runner added to dynamo's recompile limit
        self.compiler = compiler
        self.num_conditioning = num_conditioning
        self.precision = precision
        # inductor's artifacts persist in our cache (sam2_rt.runtime.compile_cache); other compilers generate no code
        self.cache_dir = cache_dir
        self.cache: Optional[CompileCache] = None

    def prepare(self, plan: ShapePlan) -> List[CompileEvent]:
        """Load the compiled artifacts of a previous warm-up with the same key, if any (compile_cache)."""
        if self.compiler == "inductor":
            self.cache = CompileCache(self.cache_dir or default_compile_cache_dir(), self.cache_key(plan))
            self.cache.load()
        return []

    def cache_key(self, plan: ShapePlan) -> Dict[str, object]:
        """Everything the compiled artifacts of a warm-up for `plan` depend on."""
        device = next(self.model.parameters()).device
        return dict(
            model=self.model.config.name, weights_sha256=weights_sha256(self.model),
            image_size=self.model.config.image_size, precision=self.precision, compiler=self.compiler,
            cuda_graphs=self.cuda_graphs, num_conditioning=self.num_conditioning,
            plan=dict(frames=list(plan.frames), rows=list(plan.rows), per_row=list(plan.per_row),
                      steady=list(plan.steady)),
            torch=torch.__version__,
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu {platform.machine()}",
        )

    def compiling(self) -> ContextManager[object]:
        if self.compiler != "inductor":
            return contextlib.nullcontext()
        return kept_inductor_caches((self.cache_dir or default_compile_cache_dir()) / "inductor")

    def finish_warmup(self) -> None:
        """Save the artifacts when this warm-up generated any code (a warm start from the cache saves nothing)."""
        if self.cache is not None and any(event.action == "compiled" for event in self.events):
            self.cache.save()

    def serve_streams(self, max_streams: int) -> ShapePlan:
        plan = super().serve_streams(max_streams)
        # Dynamo keeps at most recompile_limit graphs per function (8 by default) and silently runs eager past
        # it, counting the graphs of every runner of the process (a node activated again makes a new one, and
        # its old graphs stay): each runner raises the limit by the graphs it needs.
        needed = max(len(plan.shapes(component)) for component in COMPONENTS)
        if needed > self._graphs_reserved:
            torch._dynamo.config.recompile_limit += needed - self._graphs_reserved
            self._graphs_reserved = needed
        return plan


def compiled_runner(
    model: SAM2Model, buckets: Sequence[int], compiler: str = "inductor", cuda_graphs: bool = False,
    steady: Sequence[int] = (1,), precision: str = "fp32", num_conditioning: int = 4,
    cache_dir: Optional[Path] = None,
) -> CompiledRunner:
    """A fixed-shape runner whose programs are torch.compile'd component wrappers (one graph per shape).

    Arguments:
      compiler: torch.compile backend: "inductor", or any registered name ("eager", "aot_eager": no code
        generation, for tests).
      cuda_graphs: replay each graph as a CUDA graph (inductor on CUDA only).
      steady: see FixedShapeRunner (memory attention's mask-free wrapper is a function of its own).
      precision, num_conditioning: part of the compile cache's key (the autocast precision and memory slots
        the graphs are traced with).
      cache_dir: where inductor's artifacts are kept between processes (None: default_compile_cache_dir()).
    """
    inner = compile_backend(compiler, cuda_graphs)
    runner = CompiledRunner(model, buckets, cuda_graphs=cuda_graphs, steady=steady, compiler=compiler,
                            cache_dir=cache_dir, num_conditioning=num_conditioning, precision=precision)
    runner.serve_streams(1)
    for component in COMPONENTS:
        counter = _CountingCompiler(runner, component, inner)
        functions = {
            variant: torch.compile(component_module(model, component, steady=variant), backend=counter, dynamic=False)
            for variant in ((False, True) if component == "memory_attention" else (False,))
        }
        runner.programs[component] = functools.partial(_call_compiled, counter, functions)
    return runner


def _call_compiled(counter: _CountingCompiler, functions: Dict[bool, Callable[..., Tensors]], shape: ProgramShape,
                   *inputs: torch.Tensor) -> Tensors:
    counter.shape = shape
    outputs = functions[shape.steady > 0](*inputs)
    return outputs if isinstance(outputs, tuple) else (outputs,)


# --------------------------------------------------------------------------- choosing a runner


@dataclass(frozen=True)
class RunnerOptions:
    """How the tracker's per-frame components run (the backend fields of TrackerConfig)."""

    backend: str = "eager"
    precision: str = "fp32"
    max_objects: int = 16
    num_conditioning: int = 4  # conditioning slots per object (memory attention's input shapes)
    compiler: str = "inductor"
    cuda_graphs: bool = False
    engine_cache_dir: Optional[Path] = None
    steady_conditioning: Tuple[int, ...] = (1,)  # FixedShapeRunner's `steady`
    compile_cache_dir: Optional[Path] = None  # CompiledRunner's `cache_dir`
