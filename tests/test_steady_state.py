"""Memory attention at steady state on the fixed-shape backends: once a stream's memory is full, a mask-free
graph over exactly the filled slots (so scaled_dot_product_attention may take FlashAttention on CUDA); the
masked graph over every slot before that and for conditioning counts without a program; both built by
warm-up, never after; results equal eager. Also: precision "auto", and one step at a time on shared programs.

Compiled with dynamo's "eager" compiler (graphs traced by dynamo exactly as inductor receives them, run
without code generation) so that a 60-frame stream stays cheap on a 2-core CPU.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from testkit.oracle import assert_same_tracking, present_objects_model  # noqa: E402
from sam2_rt.runtime import backends  # noqa: E402
from sam2_rt.runtime.export import component_inputs, component_module  # noqa: E402
from sam2_rt.tracking.memory import MemoryBank  # noqa: E402
from sam2_rt.modeling.sam2 import SAM2Model  # noqa: E402
from sam2_rt import Tracker, TrackerConfig, TrackResult  # noqa: E402

IMAGE_SIZE = 128
FRAME_SIZE = (96, 128)
NUM_FRAMES = 60
# Ramp-up (frames 1..15 read a memory still filling), steady state with one conditioning frame (16..19), a
# second object (20: the stream is masked again until its memory fills, from frame 36), object 1 refined (38:
# the objects hold 2 and 1 conditioning frames from frame 39: masked), object 2 removed (42: object 1 alone with
# 2 conditioning frames, full again from frame 54 on: the steady program of 2).
EVENTS: Dict[int, List[Tuple[int, Optional[dict]]]] = {
    0: [(1, dict(points=np.array([[40.0, 40.0]]), labels=np.array([1])))],
    20: [(2, dict(box=np.array([70.0, 30.0, 110.0, 80.0])))],
    38: [(1, dict(points=np.array([[44.0, 42.0], [90.0, 20.0]]), labels=np.array([1, 0])))],
    42: [(2, None)],
}


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return present_objects_model(IMAGE_SIZE)


def frames(count: int) -> np.ndarray:
    """(T, 96, 128, 3) uint8: a bright square moving over a gradient (deterministic)."""
    ys, xs = np.mgrid[0:FRAME_SIZE[0], 0:FRAME_SIZE[1]]
    out = np.empty((count, *FRAME_SIZE, 3), dtype=np.uint8)
    for t in range(count):
        frame = np.stack([(xs + 2 * t) % 256, (ys * 2) % 256, np.full_like(xs, 90)], axis=-1)
        x0, y0 = 30 + t % 20, 30 + (t // 3) % 10
        frame[y0:y0 + 20, x0:x0 + 20] = (240, 220, 40)
        out[t] = frame
    return out


def run(tracker: Tracker, count: int = NUM_FRAMES, before_step: Optional[Callable[[], None]] = None,
        after_step: Optional[Callable[[], None]] = None) -> List[TrackResult]:
    """Step one stream through the frames, applying EVENTS first; the callbacks run around each step."""
    stream = tracker.create_stream()
    results = []
    for index, frame in enumerate(frames(count)):
        for obj_id, prompt in EVENTS.get(index, []):
            if prompt is None:
                tracker.remove_objects(stream, [obj_id])
            else:
                tracker.add_prompt(stream, obj_id, frame_size=FRAME_SIZE, **prompt)
        if before_step:
            before_step()
        results.append(tracker.step(stream, frame))
        if after_step:
            after_step()
    return results


def record_programs(tracker: Tracker, calls: List[Tuple[str, backends.ProgramShape]]) -> None:
    """Wrap the runner's programs so that every call appends (component, shape) to `calls`."""
    for component, program in list(tracker.runner.programs.items()):
        def recorded(shape: backends.ProgramShape, *inputs: torch.Tensor, _component=component, _program=program):
            calls.append((_component, shape))
            return _program(shape, *inputs)

        tracker.runner.programs[component] = recorded


@pytest.fixture(scope="module")
def compiled(model: SAM2Model):
    """A compile tracker with steady programs for 1 and 2 conditioning frames, warmed up for 1 and 2 objects:
    (warm-up report, compilations after warm-up, compilations after the stream, memory-attention shapes of
    each stream frame, results)."""
    config = TrackerConfig(max_objects=2, backend="compile", compiler="eager", steady_conditioning_frames=(1, 2))
    tracker = Tracker(model, config)
    report = tracker.warmup()
    after_warmup = tracker.compilations
    calls: List[Tuple[str, backends.ProgramShape]] = []
    record_programs(tracker, calls)
    per_frame: List[Optional[backends.ProgramShape]] = []

    def memory_attention_shape() -> None:
        attention = [shape for component, shape in calls if component == "memory_attention"]
        per_frame.append(attention[0] if attention else None)

    results = run(tracker, before_step=calls.clear, after_step=memory_attention_shape)
    return report, after_warmup, tracker.compilations, per_frame, results


@pytest.mark.slow  # a 60-frame compiled stream and its eager twin: minutes on 2 cores
def test_full_memory_runs_the_steady_program_and_everything_else_the_masked_one(compiled) -> None:
    _, _, _, per_frame, _ = compiled
    steady = [None if shape is None else shape.steady for shape in per_frame]
    assert steady[0] is None  # the prompted first frame reads no memory
    assert steady[1:16] == [0] * 15  # the memory fills: recent frames by frame 7, pointers by frame 16
    assert steady[16:20] == [1] * 4  # full, one conditioning frame: no mask
    assert set(steady[21:36]) == {0}  # object 2 (added on frame 20) fills its memory
    assert steady[36:39] == [1, 1, 1]  # frame 38 is tracked from memory before its refinement is decoded
    assert set(steady[39:54]) == {0}  # 2 and 1 conditioning frames, then object 1's memory refills after 38
    assert steady[54:] == [2] * (NUM_FRAMES - 54)  # full with two conditioning frames
    rows = {shape.rows for shape in per_frame if shape is not None}
    assert rows == {1, 2}


@pytest.mark.slow  # a 60-frame compiled stream and its eager twin: minutes on 2 cores
def test_warmup_builds_every_steady_program_and_the_stream_compiles_nothing_more(compiled) -> None:
    report, after_warmup, after_stream, _, _ = compiled
    # per bucket (1, 2): the masked graph and the steady graphs of 1 and 2 conditioning frames
    assert after_warmup == {"image_encoder": 1, "memory_attention": 6, "mask_decoder": 2, "memory_encoder": 2}
    assert {(e.bucket, e.steady) for e in report.events if e.component == "memory_attention"} == {
        (rows, steady) for rows in (1, 2) for steady in (0, 1, 2)}
    assert after_stream == after_warmup


@pytest.mark.slow  # a 60-frame compiled stream and its eager twin: minutes on 2 cores
def test_compiled_stream_with_steady_programs_equals_eager(model: SAM2Model, compiled) -> None:
    *_, results = compiled
    eager = run(Tracker(model, TrackerConfig(max_objects=2)))
    for index, (want, got) in enumerate(zip(eager, results)):
        # The steady graph computes what eager computes on a full memory (the same slots, no mask); the masked
        # graph reads every slot with a mask where eager reads only the filled ones: same math, other sums.
        # The bounds are those of every recurrent comparison, from the measured noise floor (testkit/oracle.py).
        assert_same_tracking(got, want, f"frame {index}")


def _sdpa_masks(graph: torch.fx.GraphModule) -> List[Optional[torch.fx.Node]]:
    """The attn_mask argument of every scaled_dot_product_attention call in a dynamo graph (None: no mask)."""
    masks = []
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in (F.scaled_dot_product_attention,
                                                          torch._C._nn.scaled_dot_product_attention):
            mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 else None)
            masks.append(mask)
    return masks


@pytest.mark.parametrize("steady", [True, False])
def test_the_steady_graph_has_no_attention_mask_and_the_masked_one_has(model: SAM2Model, steady: bool) -> None:
    graphs: List[torch.fx.GraphModule] = []

    def capture(graph: torch.fx.GraphModule, example_inputs: List[torch.Tensor]) -> Callable:
        graphs.append(graph)
        return graph.forward

    module = component_module(model, "memory_attention", steady=steady)
    inputs = component_inputs(model.config, "memory_attention", 2, num_conditioning=4, steady=1 if steady else 0)
    with torch.inference_mode():
        torch.compile(module, backend=capture, dynamic=False)(*inputs)
    torch._dynamo.reset()
    masks = [mask for graph in graphs for mask in _sdpa_masks(graph)]
    # per layer: self-attention (never masked), then cross-attention to the memory
    assert len(masks) == 2 * model.config.mem_attn_num_layers, masks
    if steady:
        assert all(mask is None for mask in masks), masks
    else:
        assert all(mask is None for mask in masks[0::2]) and all(mask is not None for mask in masks[1::2]), masks


def test_exported_steady_graph_has_no_attention_mask(model: SAM2Model) -> None:
    """The torch.export graph TensorRT would get: no mask operand on any attention op."""
    module = component_module(model, "memory_attention", steady=True)
    inputs = component_inputs(model.config, "memory_attention", 1, num_conditioning=4, steady=1)
    with torch.no_grad():
        program = torch.export.export(module, inputs)
    attention = [node for node in program.graph.nodes
                 if node.op == "call_function" and "scaled_dot_product" in str(node.target)]
    assert attention, "memory attention calls scaled_dot_product_attention"
    for node in attention:
        mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 else None)
        assert mask is None, node.format_node()


# --------------------------------------------------------------------------- MemoryBank.steady_conditioning


def _bank(capacity: int = 2) -> MemoryBank:
    return MemoryBank(capacity, num_conditioning=3, num_recent=2, num_recent_ptrs=3, slot_shape=(4, 2, 2),
                      hidden_dim=8, device=torch.device("cpu"))


def _write(bank: MemoryBank, rows: List[int], frame: int, conditioning: bool) -> None:
    write = bank.write_conditioning if conditioning else bank.write_recent
    write(rows, frame, torch.ones(len(rows), 4, 2, 2), torch.ones(len(rows), 8))


def test_a_memory_is_full_once_every_recent_slot_and_pointer_holds_the_frames_just_before() -> None:
    bank = _bank()
    _write(bank, [0, 1], 0, conditioning=True)
    for frame in range(1, 4):
        assert bank.steady_conditioning([0, 1], frame) is None, frame  # pointers still filling
        _write(bank, [0, 1], frame, conditioning=False)
    assert bank.steady_conditioning([0, 1], 4) == 1
    readout = bank.read([0, 1], 4, num_maskmem=3, dtype=torch.float32)
    assert readout.complete and readout.mem_feats.shape[1] == 1 + 2 and readout.ptrs.shape[1] == 1 + 3
    # a frame skipped: the memory of frame 4 is missing on frame 5; a compact read leaves its slots out (no mask
    # needed, but not the steady shape), a read of every slot needs the mask
    assert bank.steady_conditioning([0, 1], 5) is None
    compact = bank.read([0, 1], 5, num_maskmem=3, dtype=torch.float32)
    assert compact.complete and compact.mem_feats.shape[1] == 1 + 1 and compact.ptrs.shape[1] == 1 + 2
    assert not bank.read([0, 1], 5, num_maskmem=3, dtype=torch.float32, compact=False).complete
    # one row refined: 2 and 1 conditioning frames, not one program
    _write(bank, [0, 1], 4, conditioning=False)
    _write(bank, [0], 5, conditioning=True)
    _write(bank, [1], 5, conditioning=False)
    for frame in range(6, 9):
        _write(bank, [0, 1], frame, conditioning=False)
    assert bank.steady_conditioning([0, 1], 9) is None
    assert bank.steady_conditioning([0], 9) == 2 and bank.steady_conditioning([1], 9) == 1


def test_fill_history_makes_a_young_memory_full_for_warmup() -> None:
    bank = _bank()
    _write(bank, [0, 1], 0, conditioning=True)
    _write(bank, [0, 1], 1, conditioning=False)
    with pytest.raises(ValueError, match="too close"):
        bank.fill_history(2, last_frame=1, frame_index=3)
    bank.fill_history(2, last_frame=1, frame_index=5)
    assert bank.steady_conditioning([0, 1], 5) == 1


# --------------------------------------------------------------------------- precision and threads


def test_auto_precision_is_bf16_on_cuda_with_bf16_and_fp32_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TrackerConfig().precision == "auto"
    assert backends.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert backends.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert backends.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert backends.resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        backends.resolve_precision("int8", torch.device("cpu"))


def test_tracker_runs_auto_as_fp32_on_cpu(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig(max_objects=1))
    assert tracker.precision == "fp32" and tracker.runner.compilations is not None


def test_fixed_shape_steps_of_two_threads_never_overlap(model: SAM2Model) -> None:
    """Two threads step two streams of one compile tracker: the shared programs never run two calls at once."""
    tracker = Tracker(model, TrackerConfig(max_objects=1, backend="compile", compiler="eager"))
    tracker.warmup()
    active, most = [0], [0]
    lock = threading.Lock()
    inside = threading.Event()
    for component, program in list(tracker.runner.programs.items()):
        def guarded(shape, *inputs, _program=program):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            inside.set()
            try:
                return _program(shape, *inputs)
            finally:
                with lock:
                    active[0] -= 1

        tracker.runner.programs[component] = guarded
    errors: List[BaseException] = []
    clip = frames(6)

    def track() -> None:
        try:
            stream = tracker.create_stream()
            tracker.add_prompt(stream, 1, points=[[40.0, 40.0]], labels=[1], frame_size=FRAME_SIZE)
            for frame in clip:
                tracker.step(stream, frame)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=track) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert inside.is_set() and most[0] == 1


@pytest.mark.trt_build
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_steady_memory_attention_converts_entirely_and_builds_an_engine(model: SAM2Model, precision: str) -> None:
    """The tensorrt backend's steady-state program: all of it TensorRT, an engine built on this CPU."""
    from sam2_rt.runtime import engines
    program, inputs = engines.export_component(model, "memory_attention", 2, precision, num_conditioning=4, steady=1)
    assert len(inputs) == 7  # no validity masks
    coverage = engines.dry_run_coverage(program, inputs)
    assert coverage.supported_ops == coverage.total_ops and coverage.tensorrt_engines == 1, coverage
    engine = engines.build_engine(program, inputs)
    assert len(engine.payload) > 100_000 and engine.input_names == tuple(f"input_{i}" for i in range(7))
