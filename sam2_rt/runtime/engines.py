"""Ahead-of-time TensorRT engines of the per-frame components, kept in our own on-disk cache.

For each per-frame component (``sam2_rt.runtime.export.COMPONENTS``) and each of its shapes (a bucket of rows, or of
frames for the image encoder, with batch-1 or per-row frame features: ``sam2_rt.runtime.backends.ProgramShape``), the
component's
static-shape wrapper is exported with ``torch.export`` (under autocast for fp16 / bf16: reduced precision
lives in the graph, with LayerNorm, softmax and reductions left in float32 by autocast; torch-tensorrt's
``enabled_precisions`` is never used) and converted by torch-tensorrt into one TensorRT engine covering the
whole graph (a graph TensorRT cannot convert entirely is an error, not a hybrid). The serialised engine goes
into ``EngineCache`` under a key of everything that changes it: model name, weights hash, image size,
precision, component, bucket, frame features, input shapes and dtypes, torch / torch-tensorrt / TensorRT
versions and GPU
name. A later start with the same key loads it without building; an entry that is corrupt, stale (written
for another key or format) or that TensorRT refuses to deserialise is rebuilt, with one warning; any other
error of loading (CUDA out of memory, a driver error) propagates and leaves the entry as it is.

Building needs TensorRT but not a GPU: without CUDA (CI), ``cuda_stand_ins`` lets torch-tensorrt import and
build, and stops before TensorRT deserialises the engine (only that needs a GPU). Running an engine needs
CUDA and torch-tensorrt's runtime.

    runner = engine_runner(model, buckets=(1, 2, 4), options=RunnerOptions(backend="tensorrt", precision="fp16"))
    events = runner.prepare(runner.serve_streams(1))      # build or load every engine, before the first frame
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from sam2_rt.runtime.backends import PRECISIONS, CompileEvent, FixedShapeRunner, ProgramShape, RunnerOptions, ShapePlan, Tensors
from sam2_rt.weights.checkpoint import default_cache_dir, weights_sha256
from sam2_rt.runtime.export import COMPONENTS, AutocastExport, component_inputs, component_module
from sam2_rt.modeling.sam2 import SAM2Model

logger = logging.getLogger(__name__)

# First bytes of a cache entry, then the header length (8 bytes, big-endian), the JSON header, the engine.
ENTRY_MAGIC = b"SAM2RT-TRT-ENGINE\n"
ENTRY_FORMAT = 1


def default_engine_cache_dir() -> Path:
    """Where engines are cached: <package cache dir>/engines ($SAM2_RT_CACHE moves the package cache dir)."""
    return default_cache_dir() / "engines"


# --------------------------------------------------------------------------- torch-tensorrt without CUDA


class _UndeserializedEngine:
    """What TensorRT's runtime returns under `cuda_stand_ins`: the serialised bytes, no CUDA engine."""

    def __init__(self, serialized: Any) -> None:
        self._bytes = bytes(serialized)

    def serialize(self) -> bytes:
        return self._bytes

    def get_aliased_input_tensor(self, name: str) -> None:
        return None


class _SerializingRuntime:
    """Stands in for tensorrt.Runtime: 'deserialising' keeps the bytes (a real one needs a GPU)."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized: Any) -> _UndeserializedEngine:
        return _UndeserializedEngine(serialized)


@contextlib.contextmanager
def cuda_stand_ins() -> Iterator[None]:
    """Lets torch-tensorrt import and build engines on a machine without CUDA; does nothing with CUDA.

    torch-tensorrt queries the GPU's compute capability and current device at import and build time,
    and deserialises each engine it builds (to inspect it) before returning its bytes. Here the two
    queries answer (8, 9) and 0, and TensorRT's runtime keeps the serialised bytes instead. The single
    place of this patch: tests and ``build_engine`` use it.
    """
    if torch.cuda.is_available():
        yield
        return
    saved = (torch.cuda.get_device_capability, torch.cuda.current_device)
    torch.cuda.get_device_capability = lambda *args, **kwargs: (8, 9)  # type: ignore[assignment]
    torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
    try:
        import torch_tensorrt  # noqa: F401  (installs the `tensorrt` module: TensorRT or TensorRT-RTX)
        import tensorrt

        runtime = tensorrt.Runtime
        tensorrt.Runtime = _SerializingRuntime
        try:
            yield
        finally:
            tensorrt.Runtime = runtime
    finally:
        torch.cuda.get_device_capability, torch.cuda.current_device = saved


def import_torch_tensorrt() -> ModuleType:
    """torch_tensorrt, imported with `cuda_stand_ins` (so that it imports without CUDA too)."""
    with cuda_stand_ins():
        import torch_tensorrt
    return torch_tensorrt


# --------------------------------------------------------------------------- export, dry run, build


def export_component(
    model: SAM2Model, component: str, bucket: int, precision: str, num_conditioning: int,
    per_row_frames: bool = False, steady: int = 0,
) -> Tuple[torch.export.ExportedProgram, Tensors]:
    """torch.export one component for `bucket` objects (frames for the image encoder), under autocast for
    fp16 / bf16; `per_row_frames`: frame features one per row; `steady`: memory attention's mask-free program
    of a full memory with this many conditioning frames (see component_inputs).

    Returns the program and the example inputs it was exported with (on the model's device); the
    program returns a tuple of float32 (or integer) tensors.
    """
    device = next(model.parameters()).device
    module = AutocastExport(component_module(model, component, steady=steady > 0), PRECISIONS[precision])
    inputs = component_inputs(model.config, component, bucket, num_conditioning, device,
                              per_row_frames=per_row_frames, steady=steady)
    with torch.inference_mode(False), torch.no_grad(), batch_norm_in_float32(model, precision != "fp32"):
        program = torch.export.export(module, inputs)
    return program, inputs


@contextlib.contextmanager
def batch_norm_in_float32(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """While exporting under autocast: every BatchNorm of `model` (EdgeTAM's RepViT trunk) computes in float32
    and returns its input's dtype.

    Autocast leaves BatchNorm out of its casts: it gets the float16 / bfloat16 output of a convolution with
    float32 statistics, which cuDNN and ATen accept (computing in float32) but torch-tensorrt's converter does
    not (TensorRT's scale layer takes weights of its input's type: "scale.type == shift.type ..."). An explicit
    cast to float32 around it states what the eager model computes. SAM 2's models have no BatchNorm.
    """
    handles: List[Any] = []
    input_dtypes: Dict[int, torch.dtype] = {}

    def to_float32(module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, ...]:
        (tensor,) = inputs
        input_dtypes[id(module)] = tensor.dtype
        return (tensor.float(),)

    def to_input_dtype(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.to(input_dtypes.pop(id(module)))

    if enabled:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                handles += [module.register_forward_pre_hook(to_float32), module.register_forward_hook(to_input_dtype)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input_names(count: int) -> Tuple[str, ...]:
    return tuple(f"input_{index}" for index in range(count))


def _output_names(program: torch.export.ExportedProgram) -> Tuple[str, ...]:
    outputs = [spec for spec in program.graph_signature.output_specs if spec.kind.name == "USER_OUTPUT"]
    return tuple(f"output_{index}" for index in range(len(outputs)))


@dataclass(frozen=True)
class DryRunCoverage:
    """torch-tensorrt's dry-run report of one graph."""

    total_ops: int  # operators in the graph
    supported_ops: int  # of which TensorRT converts
    tensorrt_engines: int  # TensorRT segments the graph would be split into
    torch_nodes: Tuple[str, ...]  # nodes left to PyTorch

    @property
    def percent(self) -> float:
        return 100.0 * self.supported_ops / max(self.total_ops, 1)


def dry_run_coverage(program: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> DryRunCoverage:
    """How much of `program` TensorRT would run, with require_full_compilation (nothing is built)."""
    torch_tensorrt = import_torch_tensorrt()
    from torch_tensorrt.dynamo import _compiler

    captured: List[Any] = []
    display = _compiler.dryrun_stats_display
    _compiler.dryrun_stats_display = lambda tracker, enabled: captured.append(tracker)
    try:
        with cuda_stand_ins():
            torch_tensorrt.dynamo.compile(
                program,
                arg_inputs=list(inputs),
                dryrun=True,
                min_block_size=1,
                require_full_compilation=True,
                offload_module_to_cpu=not torch.cuda.is_available(),
            )
    finally:
        _compiler.dryrun_stats_display = display
    (tracker,) = captured
    return DryRunCoverage(
        total_ops=tracker.total_ops_in_graph,
        supported_ops=tracker.supported_ops_in_graph,
        tensorrt_engines=tracker.tensorrt_graph_count,
        torch_nodes=tuple(tracker.to_run_in_torch),
    )


@dataclass(frozen=True)
class SerializedEngine:
    """A serialised TensorRT engine and the names of its bindings, in call / return order."""

    payload: bytes
    input_names: Tuple[str, ...]
    output_names: Tuple[str, ...]


def build_engine(
    program: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor], timing_cache_dir: Optional[Path] = None
) -> SerializedEngine:
    """Convert a whole exported program into one TensorRT engine (an unconvertible op is an error).

    Works without a GPU too (see cuda_stand_ins): the engine is built, not deserialised.
    """
    torch_tensorrt = import_torch_tensorrt()
    input_names, output_names = _input_names(len(inputs)), _output_names(program)
    options: Dict[str, Any] = {}
    if timing_cache_dir is not None:
        options["timing_cache_path"] = str(timing_cache_dir / "timing_cache.bin")
    with cuda_stand_ins():
        payload = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(
            program,
            arg_inputs=list(inputs),
            min_block_size=1,
            require_full_compilation=True,
            # On a GPU the weights stay where they are (they are the live model's); without one this
            # also skips torch-tensorrt's free-GPU-memory query.
            offload_module_to_cpu=not torch.cuda.is_available(),
            arg_input_binding_names=input_names,
            output_binding_names=output_names,
            **options,
        )
    return SerializedEngine(bytes(payload), input_names, output_names)


def load_engine(engine: SerializedEngine, name: str) -> nn.Module:
    """Deserialise an engine into a callable module (needs CUDA and torch-tensorrt's runtime)."""
    torch_tensorrt = import_torch_tensorrt()
    return torch_tensorrt.runtime.TorchTensorRTModule(
        serialized_engine=engine.payload,
        input_binding_names=list(engine.input_names),
        output_binding_names=list(engine.output_names),
        name=name,
    )


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; its digest names the cache entry."""

    model: str
    weights_sha256: str
    image_size: int
    precision: str
    component: str
    bucket: int
    inputs: Tuple[str, ...]  # dtype[shape] of each input, e.g. "torch.float32[1, 3, 1024, 1024]"
    torch: str
    torch_tensorrt: str
    tensorrt: str
    gpu: str
    per_row_frames: bool = False  # frame features one per row (ProgramShape.per_row_frames)
    steady: int = 0  # memory attention's mask-free program for this many conditioning frames (ProgramShape.steady)

    def as_json(self) -> Dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()

    def file_name(self) -> str:
        rows = "-rows" if self.per_row_frames else ""
        steady = f"-steady{self.steady}" if self.steady else ""
        prefix = f"{self.model}-{self.image_size}-{self.precision}-{self.component}-b{self.bucket}{rows}{steady}"
        return f"{prefix}-{self.digest()[:16]}.engine"


class CacheEntryError(Exception):
    """A cache entry that cannot be used: corrupt (bad magic, header, checksum) or stale (another key)."""


class EngineCache:
    """Serialised engines on disk, one file per key (written atomically: a temp file, then a rename).

    File layout: ENTRY_MAGIC, the header length (8 bytes big-endian), a JSON header (format, key, binding
    names, sha256 of the engine), then the engine bytes.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: EngineKey) -> Path:
        return self.directory / key.file_name()

    def read(self, key: EngineKey) -> Optional[SerializedEngine]:
        """The cached engine of `key`, None when there is none. Raises CacheEntryError for a bad entry."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(ENTRY_MAGIC) or len(data) < len(ENTRY_MAGIC) + 8:
            raise CacheEntryError("not an engine cache entry (bad magic)")
        start = len(ENTRY_MAGIC) + 8
        (header_size,) = struct.unpack(">Q", data[len(ENTRY_MAGIC):start])
        try:
            header = json.loads(data[start:start + header_size].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheEntryError(f"unreadable header ({err})") from err
        if not isinstance(header, dict) or header.get("format") != ENTRY_FORMAT:
            raise CacheEntryError(f"stale: format {header.get('format') if isinstance(header, dict) else '?'}, "
                                  f"expected {ENTRY_FORMAT}")
        if header.get("key") != key.as_json():
            raise CacheEntryError("stale: written for another key")
        payload = data[start + header_size:]
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise CacheEntryError("corrupt: the engine's sha256 does not match its header")
        return SerializedEngine(payload, tuple(header["inputs"]), tuple(header["outputs"]))

    def write(self, key: EngineKey, engine: SerializedEngine) -> Path:
        header = json.dumps({
            "format": ENTRY_FORMAT,
            "key": key.as_json(),
            "inputs": list(engine.input_names),
            "outputs": list(engine.output_names),
            "sha256": hashlib.sha256(engine.payload).hexdigest(),
        }).encode()
        path = self.path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temp, "wb") as file:
            file.write(ENTRY_MAGIC + struct.pack(">Q", len(header)) + header + engine.payload)
        os.replace(temp, path)
        return path


# What TensorRT and torch-tensorrt say of an engine they cannot deserialise because it was written by another
# version, for another GPU or platform, or is damaged: such an entry is stale, and rebuilt. Anything else from
# loading (CUDA out of memory, a driver error) is not the entry's fault: it propagates, and the file stays.
STALE_ENGINE_MESSAGES = (
    "unable to deserialize the tensorrt engine",  # torch-tensorrt's runtimes (C++ and Python)
    "deserializecudaengine",
    "engine plan file is incompatible",  # TensorRT: another version
    "version tag does not match",
    "serialization assertion",
    "serialized engine version",
    "not built to target the loaded tensorrt runtime platform",
)


def is_stale_engine_error(err: BaseException) -> bool:
    """Whether an exception raised while loading a cached engine says the entry itself is unusable."""
    if isinstance(err, CacheEntryError):
        return True
    if isinstance(err, torch.cuda.OutOfMemoryError) or not isinstance(err, (RuntimeError, AssertionError)):
        return False
    message = str(err).lower()
    return any(marker in message for marker in STALE_ENGINE_MESSAGES)


def cached_engine(
    cache: EngineCache,
    key: EngineKey,
    build: Callable[[], SerializedEngine],
    load: Callable[[SerializedEngine], Any] = lambda engine: engine,
) -> Tuple[Any, str]:
    """Load the engine of `key` from `cache`, or build and store it.

    `load` turns a serialised engine into what the caller runs (deserialisation, on a GPU). An entry that is
    corrupt or stale (CacheEntryError), or that `load` refuses as written for another TensorRT, GPU or
    platform (`is_stale_engine_error`), is rebuilt with one warning.
    Returns: (what `load` returned, "loaded" | "built" | "rebuilt").
    Raises: whatever else `load` raises (CUDA out of memory, driver errors): a build would not help, and the
      entry, likely good, is kept.
    """
    try:
        cached = cache.read(key)
        if cached is not None:
            return load(cached), "loaded"
        action = "built"
    except Exception as err:
        if not is_stale_engine_error(err):
            raise
        logger.warning("engine cache entry %s cannot be used (%s): rebuilding it", cache.path(key), err)
        action = "rebuilt"
    engine = build()
    cache.write(key, engine)
    return load(engine), action


# --------------------------------------------------------------------------- the engine runner


def _signature(inputs: Sequence[torch.Tensor]) -> Tuple[str, ...]:
    return tuple(f"{tensor.dtype}{list(tensor.shape)}" for tensor in inputs)


class EngineSet:
    """The engines of one model and precision: one per (component, shape), built or loaded on demand."""

    def __init__(self, model: SAM2Model, runner: FixedShapeRunner, options: RunnerOptions) -> None:
        self.model = model
        self.runner = runner
        self.options = options
        self.cache = EngineCache(options.engine_cache_dir or default_engine_cache_dir())
        self.modules: Dict[Tuple[str, ProgramShape], nn.Module] = {}
        self._weights: Optional[str] = None

    def key(self, component: str, shape: ProgramShape, inputs: Sequence[torch.Tensor]) -> EngineKey:
        torch_tensorrt = import_torch_tensorrt()
        import tensorrt  # after torch_tensorrt, which installs it

        if self._weights is None:
            self._weights = weights_sha256(self.model)
        device = next(self.model.parameters()).device
        return EngineKey(
            model=self.model.config.name,
            weights_sha256=self._weights,
            image_size=self.model.config.image_size,
            precision=self.options.precision,
            component=component,
            bucket=shape.rows,
            inputs=_signature(inputs),
            torch=torch.__version__,
            torch_tensorrt=torch_tensorrt.__version__,
            tensorrt=tensorrt.__version__,
            gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "none (built without a GPU)",
            per_row_frames=shape.per_row_frames,
            steady=shape.steady,
        )

    def prepare(self, component: str, shape: ProgramShape) -> CompileEvent:
        """Build or load the engine of (component, shape)."""
        start = time.perf_counter()
        program, inputs = export_component(
            self.model, component, shape.rows, self.options.precision, self.options.num_conditioning,
            per_row_frames=shape.per_row_frames, steady=shape.steady,
        )
        key = self.key(component, shape, inputs)
        rows = "_rows" if shape.per_row_frames else ""
        steady = f"_steady{shape.steady}" if shape.steady else ""
        module, action = cached_engine(
            self.cache,
            key,
            lambda: build_engine(program, inputs, self.cache.directory),
            functools.partial(load_engine, name=f"{component}_b{shape.rows}{rows}{steady}"),
        )
        self.modules[(component, shape)] = module
        event = CompileEvent(component, shape.rows, action, time.perf_counter() - start, shape.per_row_frames,
                             shape.steady)
        self.runner.compilations[component] += 1
        self.runner.events.append(event)
        logger.info("TensorRT engine %s for %d row(s)%s: %s in %.1f s", component, shape.rows,
                    " of several frames" if shape.per_row_frames else "", action, event.seconds)
        return event

    def run(self, component: str, shape: ProgramShape, *inputs: torch.Tensor) -> Tensors:
        module = self.modules.get((component, shape))
        if module is None:
            logger.warning("no TensorRT engine of %s for %s was prepared before the stream: building it now "
                           "(Tracker.warmup() builds every one before the first frame)", component, shape)
            self.prepare(component, shape)
            module = self.modules[(component, shape)]
        engine_inputs = [t.float().contiguous() if t.is_floating_point() else t.contiguous() for t in inputs]
        outputs = module(*engine_inputs)
        return outputs if isinstance(outputs, tuple) else (outputs,)


class EngineRunner(FixedShapeRunner):
    """A fixed-shape runner whose programs are TensorRT engines (see EngineSet); `prepare` builds them."""

    def __init__(self, model: SAM2Model, buckets: Sequence[int], options: RunnerOptions) -> None:
        super().__init__(model, buckets, {}, steady=options.steady_conditioning)
        self.engines = EngineSet(model, self, options)
        self.programs = {component: functools.partial(self.engines.run, component) for component in COMPONENTS}

    def prepare(self, plan: ShapePlan) -> List[CompileEvent]:
        """Build or load the engine of every component and shape of `plan`."""
        return [
            self.engines.prepare(component, shape)
            for component in COMPONENTS
            for shape in plan.shapes(component)
            if (component, shape) not in self.engines.modules
        ]


def engine_runner(model: SAM2Model, buckets: Sequence[int], options: RunnerOptions) -> EngineRunner:
    """The tensorrt backend's runner (nothing is built until `prepare` or the first call)."""
    return EngineRunner(model, buckets, options)
