"""Ahead-of-time TensorRT engines: every per-frame component converts entirely and builds a real engine (on
this CPU, with torch-tensorrt-rtx from the test extra: only deserialising an engine needs a GPU), and our
engine cache loads, rebuilds and keys entries as promised.

Marked trt_build: they build engines (seconds each) at a small image size, fp32 and fp16 autocast.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from testkit.oracle import seeded_model
from sam2_rt.runtime import engines
from sam2_rt.runtime.export import COMPONENTS, MaskAsOutputExport, mask_as_output_inputs
from sam2_rt.modeling.sam2 import SAM2Model

IMAGE_SIZE = 128
EDGETAM_IMAGE_SIZE = 256  # EdgeTAM's image sizes are multiples of 256
BUCKET = 2
NUM_CONDITIONING = 2

Program = Tuple[torch.export.ExportedProgram, Tuple[torch.Tensor, ...]]


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return seeded_model(IMAGE_SIZE)


@pytest.fixture(scope="module")
def edgetam() -> SAM2Model:
    return seeded_model(EDGETAM_IMAGE_SIZE, "edgetam")


@pytest.fixture(scope="module")
def programs(model: SAM2Model) -> Dict[Tuple[str, str, str], Program]:
    """Exported programs of every model, component and precision, shared by the tests of this module."""
    return {}


def exported(model: SAM2Model, programs: Dict[Tuple[str, str, str], Program], component: str,
             precision: str) -> Program:
    if (model.config.name, component, precision) not in programs:
        bucket = 1 if component == "image_encoder" else BUCKET
        programs[model.config.name, component, precision] = engines.export_component(
            model, component, bucket, precision, NUM_CONDITIONING)
    return programs[model.config.name, component, precision]


# EdgeTAM (RepViT trunk from timm, spatial perceiver, latent RoPE): 8 builds of ~20 s each at 256 px.
MODELS = ["sam2.1_hiera_tiny", pytest.param("edgetam", marks=pytest.mark.slow)]


@pytest.mark.trt_build
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("name", MODELS)
def test_component_converts_entirely_and_builds_an_engine(
    request: pytest.FixtureRequest, programs: Dict[Tuple[str, str, str], Program], name: str, component: str,
    precision: str
) -> None:
    model = request.getfixturevalue("edgetam" if name == "edgetam" else "model")
    program, inputs = exported(model, programs, component, precision)
    coverage = engines.dry_run_coverage(program, inputs)
    assert coverage.total_ops > 0
    assert coverage.supported_ops == coverage.total_ops, f"{coverage.percent:.1f} % TensorRT"
    assert coverage.tensorrt_engines == 1 and coverage.torch_nodes == ()

    engine = engines.build_engine(program, inputs)
    assert isinstance(engine.payload, bytes) and len(engine.payload) > 100_000
    assert engine.input_names == tuple(f"input_{i}" for i in range(len(inputs)))
    assert len(engine.output_names) == len(program.module()(*inputs))


@pytest.mark.slow
@pytest.mark.trt_build
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_edgetam_steady_memory_attention_builds_an_engine(edgetam: SAM2Model, precision: str) -> None:
    """EdgeTAM's mask-free program of a full memory (512-token slots), as tests/test_steady_state.py for SAM 2."""
    program, inputs = engines.export_component(edgetam, "memory_attention", BUCKET, precision, NUM_CONDITIONING,
                                               steady=1)
    assert len(inputs) == 7 and inputs[2].shape[2:] == edgetam.config.memory_slot_shape
    coverage = engines.dry_run_coverage(program, inputs)
    assert coverage.supported_ops == coverage.total_ops and coverage.tensorrt_engines == 1, coverage
    assert len(engines.build_engine(program, inputs).payload) > 100_000


@pytest.mark.trt_build
def test_autocast_puts_reduced_precision_in_the_graph(
    model: SAM2Model, programs: Dict[Tuple[str, str, str], Program]
) -> None:
    """fp16 comes from autocast inside the program: its matmuls run in float16, its LayerNorms in float32,
    its outputs stay float32."""
    program, inputs = exported(model, programs, "memory_attention", "fp16")

    def dtypes(op: str) -> set:
        return {node.meta["val"].dtype for node in program.run_decompositions({}).graph.nodes
                if node.op == "call_function" and str(node.target) == op}

    assert dtypes("aten.linear.default") == {torch.float16}
    assert dtypes("aten.layer_norm.default") == {torch.float32}
    with torch.inference_mode():
        (out,) = program.module()(*inputs)
    assert out.dtype == torch.float32


def test_batch_norm_computes_in_float32_in_a_reduced_precision_program(edgetam: SAM2Model) -> None:
    """EdgeTAM's RepViT trunk has BatchNorms, which autocast leaves with a float16 input and float32 statistics
    (TensorRT's scale layer refuses that mix): exported for fp16, each takes a float32 input; the program still
    computes what the float32 model does, to float16's precision."""
    program, inputs = engines.export_component(edgetam, "image_encoder", 1, "fp16", NUM_CONDITIONING)
    nodes = [node for node in program.run_decompositions({}).graph.nodes if node.op == "call_function"]
    norms = [node for node in nodes if "batch_norm" in str(node.target)]
    assert norms and {node.args[0].meta["val"].dtype for node in norms} == {torch.float32}
    assert {node.meta["val"].dtype for node in nodes if str(node.target) == "aten.conv2d.default"} == {torch.float16}
    with torch.inference_mode():
        got = program.module()(*inputs)
        want = edgetam.forward_image(*inputs)
    for out, ref in zip(got, want):
        assert out.dtype == torch.float32
        assert (out - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in edgetam.modules())


@pytest.mark.trt_build
def test_mask_as_output_converts_entirely(model: SAM2Model) -> None:
    """Mask prompts run eager, but their graph would convert too (no antialiased resize left)."""
    inputs = mask_as_output_inputs(model.config)
    with torch.no_grad():
        program = torch.export.export(MaskAsOutputExport(model), inputs)
    coverage = engines.dry_run_coverage(program, inputs)
    assert coverage.supported_ops == coverage.total_ops and coverage.tensorrt_engines == 1


# --------------------------------------------------------------------------- the cache


def key(**changes: object) -> engines.EngineKey:
    fields = dict(model="sam2.1_hiera_tiny", weights_sha256="ab" * 32, image_size=128, precision="fp16",
                  component="memory_encoder", bucket=2, inputs=("torch.float32[1, 256, 8, 8]",), torch="2.14.1",
                  torch_tensorrt="2.14.0", tensorrt="1.6", gpu="NVIDIA H200")
    fields.update(changes)
    return engines.EngineKey(**fields)  # type: ignore[arg-type]


class CountingBuild:
    """A build function that counts its calls and returns a fixed engine."""

    def __init__(self, engine: engines.SerializedEngine) -> None:
        self.engine = engine
        self.calls = 0

    def __call__(self) -> engines.SerializedEngine:
        self.calls += 1
        return self.engine


@pytest.fixture(scope="module")
def real_engine(model: SAM2Model) -> engines.SerializedEngine:
    # A program of its own: a program torch-tensorrt already lowered does not build twice.
    return engines.build_engine(*engines.export_component(model, "memory_encoder", 1, "fp32", NUM_CONDITIONING))


def cache_warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.message for r in caplog.records if r.name == "sam2_rt.runtime.engines" and r.levelno == logging.WARNING]


@pytest.mark.trt_build
def test_a_second_start_loads_the_engine_without_building(
    tmp_path: Path, real_engine: engines.SerializedEngine, caplog: pytest.LogCaptureFixture
) -> None:
    build = CountingBuild(real_engine)
    first, action = engines.cached_engine(engines.EngineCache(tmp_path), key(), build)
    assert (action, build.calls) == ("built", 1)
    second, action = engines.cached_engine(engines.EngineCache(tmp_path), key(), build)  # a new process's cache
    assert (action, build.calls) == ("loaded", 1)
    assert second == first == real_engine
    assert cache_warnings(caplog) == []


@pytest.mark.trt_build
@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "not_an_entry", "other_key", "old_format"])
def test_a_bad_entry_is_rebuilt_with_one_warning(
    tmp_path: Path, real_engine: engines.SerializedEngine, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    cache = engines.EngineCache(tmp_path)
    path = cache.write(key(), real_engine)
    data = path.read_bytes()
    if damage == "flipped_byte":
        data = data[:-1000] + bytes([data[-1000] ^ 0xFF]) + data[-999:]
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not_an_entry":
        data = b"garbage" + data
    else:
        other = key(bucket=4) if damage == "other_key" else key()
        engine = engines.SerializedEngine(real_engine.payload, real_engine.input_names, real_engine.output_names)
        cache.write(other, engine)
        data = cache.path(other).read_bytes()
        if damage == "old_format":
            data = data.replace(b'"format": 1', b'"format": 0', 1)
    path.write_bytes(data)

    build = CountingBuild(real_engine)
    with caplog.at_level(logging.WARNING, logger="sam2_rt.runtime.engines"):
        engine, action = engines.cached_engine(cache, key(), build)
    assert (action, build.calls) == ("rebuilt", 1) and engine == real_engine
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and "rebuilding" in warnings[0]
    _, action = engines.cached_engine(cache, key(), build)
    assert (action, build.calls) == ("loaded", 1)


def test_an_entry_tensorrt_refuses_to_load_is_rebuilt_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engines.SerializedEngine(b"engine of another TensorRT", ("input_0",), ("output_0",))
    cache = engines.EngineCache(tmp_path)
    cache.write(key(), engine)
    rebuilt = engines.SerializedEngine(b"fresh engine", ("input_0",), ("output_0",))
    build = CountingBuild(rebuilt)

    def load(candidate: engines.SerializedEngine) -> bytes:
        if candidate.payload != rebuilt.payload:
            raise RuntimeError("engine plan file is incompatible with this version of TensorRT")
        return candidate.payload

    with caplog.at_level(logging.WARNING, logger="sam2_rt.runtime.engines"):
        loaded, action = engines.cached_engine(cache, key(), build, load)
    assert (loaded, action, build.calls) == (b"fresh engine", "rebuilt", 1)
    assert len(cache_warnings(caplog)) == 1


def test_the_key_covers_everything_an_engine_depends_on() -> None:
    base = key()
    for change in (dict(weights_sha256="cd" * 32), dict(precision="bf16"), dict(bucket=4), dict(gpu="NVIDIA H100"),
                   dict(image_size=256), dict(torch="2.11.0"), dict(torch_tensorrt="2.11.0"), dict(tensorrt="10.1"),
                   dict(component="mask_decoder"), dict(inputs=("torch.float32[2, 256, 8, 8]",)),
                   dict(model="sam2.1_hiera_small")):
        assert key(**change).digest() != base.digest(), change
    assert key().digest() == base.digest()
    assert base.file_name().startswith("sam2.1_hiera_tiny-128-fp16-memory_encoder-b2-")


def test_weights_hash_follows_the_weights(model: SAM2Model) -> None:
    before = engines.weights_sha256(model)
    assert engines.weights_sha256(model) == before
    with torch.no_grad():
        model.no_obj_ptr.add_(1.0)
    try:
        assert engines.weights_sha256(model) != before
    finally:
        with torch.no_grad():
            model.no_obj_ptr.sub_(1.0)


def test_engine_cache_lives_in_the_package_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAM2_RT_CACHE", str(tmp_path))
    assert engines.default_engine_cache_dir() == tmp_path / "engines"


@pytest.mark.gpu
def test_tensorrt_tracker_builds_then_loads_and_tracks_like_eager(model: SAM2Model, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if importlib.util.find_spec("torch_tensorrt") is None:
        pytest.skip("needs torch-tensorrt on the CUDA machine (pip install 'sam2-rt[tensorrt]')")
    import copy

    import numpy as np

    from sam2_rt import Tracker, TrackerConfig

    gpu_model = copy.deepcopy(model).cuda()
    config = TrackerConfig(max_objects=2, backend="tensorrt", engine_cache_dir=str(tmp_path))
    first = Tracker(gpu_model, config)
    assert first.backend.used == "tensorrt"
    report = first.warmup()
    assert {event.action for event in report.events} == {"built"}
    second = Tracker(gpu_model, config)
    assert {event.action for event in second.warmup().events} == {"loaded"}
    counts = second.compilations
    eager = Tracker(gpu_model, TrackerConfig(max_objects=2))
    frames = [np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8) for i in range(5)]
    streams = [(tracker, tracker.create_stream()) for tracker in (eager, second)]
    for tracker, stream in streams:
        tracker.add_prompt(stream, 1, points=[[40, 40]], labels=[1], frame_size=(96, 128))
        tracker.add_prompt(stream, 2, box=[60, 20, 120, 80], frame_size=(96, 128))
    for frame in frames:
        want, got = (tracker.step(stream, frame) for tracker, stream in streams)
        assert got.object_ids == want.object_ids
        assert (got.logits - want.logits).abs().max().item() <= 1e-2 * max(1.0, want.logits.abs().max().item())
    assert second.compilations == counts
