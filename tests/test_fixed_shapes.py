"""Fixed shapes on the compiled backends: object buckets, all memory slots, built once by Tracker.warmup and
never again, with the eager results and no padding in any output.

A counting torch.compile backend (dynamo's "aot_eager" compiler wrapped by our counter) keeps this fast on a
CPU: graphs go through dynamo and AOT autograd's functionalisation exactly as inductor receives them (which is
where tracing under inference mode once failed), without generating code.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch


from testkit.oracle import assert_same_tracking, present_objects_model  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402  (numpy only: these tests also run on the GPU machine)
from sam2_rt.runtime import backends  # noqa: E402
from sam2_rt.modeling.sam2 import SAM2Model  # noqa: E402
from sam2_rt import ObjectState, Tracker, TrackerConfig, TrackResult  # noqa: E402

IMAGE_SIZE = 128
FRAME_SIZE = (96, 128)  # H, W: frames are cropped from 128 x 128 synthetic ones
NUM_FRAMES = 100
COMPARED_FRAMES = 20
# EdgeTAM on the compile backend: its image sizes are multiples of 256; 16 frames see its objects go 1, 3, 2, 5
# (objects_1_3_2_5's events up to frame 12) and its memory fill, at ~8x the cost of a frame of tiny at 128.
EDGETAM_IMAGE_SIZE = 256
EDGETAM_FRAMES = 16
# (object id, prompt) events per frame; prompt None removes the object.
Events = Dict[int, List[Tuple[int, Optional[dict]]]]


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return present_objects_model(IMAGE_SIZE)


def video(num_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """(T, 96, 128, 3) frames of four moving shapes and the shapes' first centres (4, 2) x, y."""
    clip = SyntheticClip(128, 128, num_shapes=4, seed=1)
    return clip.frames(num_frames)[:, 16:112], clip.centers(0) - np.array([0.0, 16.0])


def objects_1_3_2_5() -> Events:
    """1 object, then 3 (click, box, two clicks), refined (click, mask), 2 after a removal, then 5."""
    _, centres = video(1)
    height, width = FRAME_SIZE
    ys, xs = np.mgrid[0:height, 0:width]
    disc = (xs - centres[1, 0]) ** 2 + (ys - centres[1, 1]) ** 2 <= 12**2

    def click(shape: int) -> dict:
        return dict(points=centres[shape:shape + 1], labels=np.array([1]))

    def box(shape: int) -> dict:
        (x, y), r = centres[shape], 20.0
        return dict(box=np.array([max(x - r, 0), max(y - r, 0), min(x + r, width), min(y + r, height)]))

    return {
        0: [(1, click(0))],
        3: [(2, box(1)), (3, dict(points=centres[2:4], labels=np.array([1, 0])))],
        6: [(1, click(3)), (2, dict(mask=disc))],
        9: [(3, None)],
        12: [(4, click(2)), (5, box(3)), (6, dict(mask=disc))],
        40: [(5, click(1))],
        60: [(4, None), (7, box(2))],
    }


def run(tracker: Tracker, num_frames: int, events: Optional[Events] = None) -> List[TrackResult]:
    """Step one stream through the frames, applying the events (default objects_1_3_2_5) first."""
    events = objects_1_3_2_5() if events is None else events
    frames, _ = video(num_frames)
    stream = tracker.create_stream()
    results = []
    for index, frame in enumerate(frames):
        for obj_id, prompt in events.get(index, []):
            if prompt is None:
                tracker.remove_objects(stream, [obj_id])
            else:
                tracker.add_prompt(stream, obj_id, frame_size=FRAME_SIZE, **prompt)
        results.append(tracker.step(stream, frame))
    return results


@pytest.fixture(scope="module", params=["sam2.1_hiera_tiny", "edgetam"])
def compiled(request: pytest.FixtureRequest, model: SAM2Model):
    """Per model (SAM 2.1 tiny at 128 px, EdgeTAM at 256 px): the model, a compile-backend tracker warmed up,
    its report, its compilation counts after warm-up, every program call ((component, shape) -> input
    signatures) and its results over the stream (100 frames; EdgeTAM: EDGETAM_FRAMES)."""
    if request.param == "edgetam":
        model, num_frames = present_objects_model(EDGETAM_IMAGE_SIZE, "edgetam"), EDGETAM_FRAMES
    else:
        num_frames = NUM_FRAMES
    tracker = Tracker(model, TrackerConfig(max_objects=5, backend="compile", compiler="aot_eager"))
    calls: Dict[Tuple[str, backends.ProgramShape], set] = {}
    for component, program in tracker.runner.programs.items():
        tracker.runner.programs[component] = _recording(program, component, calls)
    report = tracker.warmup()
    after_warmup = tracker.compilations
    return model, tracker, report, after_warmup, calls, run(tracker, num_frames)


def test_buckets_are_powers_of_two_then_the_maximum() -> None:
    assert backends.object_buckets(1) == (1,)
    assert backends.object_buckets(5) == (1, 2, 4, 5)
    assert backends.object_buckets(16) == (1, 2, 4, 8, 16)
    assert [backends.bucket_for(n, (1, 2, 4, 5)) for n in range(1, 6)] == [1, 2, 4, 4, 5]
    with pytest.raises(ValueError, match="exceed"):
        backends.bucket_for(6, (1, 2, 4, 5))


@pytest.mark.slow  # shares a module fixture that compiles every bucket (minutes on 2 cores)
def test_warmup_compiles_every_bucket_and_a_100_frame_stream_compiles_nothing_more(compiled) -> None:
    model, tracker, report, after_warmup, _, results = compiled
    assert report.backend == "compile" and report.buckets == (1, 2, 4, 5)
    # one image-encoder graph, one graph per bucket of every other component, and memory attention's mask-free
    # steady-state graph per bucket (tests/test_steady_state.py)
    assert after_warmup == {"image_encoder": 1, "memory_attention": 8, "mask_decoder": 4, "memory_encoder": 4}
    assert {(e.component, e.bucket) for e in report.events} >= {("memory_attention", 5), ("mask_decoder", 1)}
    assert len(results) == (EDGETAM_FRAMES if model.config.name == "edgetam" else NUM_FRAMES)
    assert tracker.compilations == after_warmup
    # the stream went through 1, 3, 2 and 5 objects (so buckets 1, 4, 2 and 5 were all used)
    counts = {len(result.object_ids) for result in results}
    assert {1, 2, 3, 5} <= counts


@pytest.mark.slow  # shares a module fixture that compiles every bucket (minutes on 2 cores)
def test_compiled_results_equal_eager_and_carry_no_padding(compiled) -> None:
    model, _, _, _, _, results = compiled
    eager = run(Tracker(model, TrackerConfig(max_objects=5)), min(COMPARED_FRAMES, len(results)))
    present = 0
    for frame_index, (want, got) in enumerate(zip(eager, results)):
        where = f"frame {frame_index}"
        count = len(want.object_ids)
        assert got.masks.shape == (count, *FRAME_SIZE) and got.logits.shape == (count, *FRAME_SIZE), where
        assert got.boxes.shape == (count, 4) and got.ious.shape == (count,) and len(got.states) == count, where
        # The compiled graphs sum in another order than eager: within the noise floor's margin (oracle.py).
        assert_same_tracking(got, want, where)
        present += sum(state == ObjectState.TRACKING for state in want.states)
    assert present > len(eager), "the comparison must see present objects (real masks)"


@pytest.mark.slow  # shares a module fixture that compiles every bucket (minutes on 2 cores)
def test_one_stream_programs_run_at_exactly_the_shapes_engines_are_exported_at(compiled) -> None:
    """As the two-stream test below, for one stream of each model (EdgeTAM's memories are token slots)."""
    from sam2_rt.runtime.export import COMPONENTS, component_inputs

    model, tracker, _, _, calls, _ = compiled
    plan = backends.ShapePlan(frames=(1,), rows=(1, 2, 4, 5), steady=(1,))
    assert set(calls) == {(component, shape) for component in COMPONENTS for shape in plan.shapes(component)}
    for (component, shape), signatures in calls.items():
        expected = component_inputs(model.config, component, shape.rows, tracker.config.max_conditioning_frames,
                                    steady=shape.steady)
        assert signatures == {_signature(expected)}, (component, shape)


# Two streams (cameras): A as `run` with objects 1, 3, 2, 5 (max_objects 5); B on its own frames and size,
# with 2 objects, then 3, one of them refined, then 1.
FRAME_SIZE_B = (128, 96)
TWO_STREAM_FRAMES = 40


def events_b() -> Events:
    _, centres = video(1)
    height, width = FRAME_SIZE_B
    return {
        2: [(1, dict(box=np.array([4.0, 4.0, 60.0, 50.0]))), (2, dict(points=np.array([[40.0, 90.0]]), labels=[1]))],
        8: [(3, dict(points=np.array([[70.0, 30.0], [20.0, 20.0]]), labels=np.array([1, 0])))],
        14: [(1, dict(points=np.array([[30.0, 30.0]]), labels=np.array([1])))],
        20: [(1, None), (2, None)],
    }


def run_two_streams(tracker: Tracker, num_frames: int) -> List[List[TrackResult]]:
    """Streams A and B through their events, one step_many per frame: [[result A, result B] per frame]."""
    frames, _ = video(num_frames)
    frames_b = np.ascontiguousarray(frames[:, :, 16:112].transpose(0, 2, 1, 3))[:, :FRAME_SIZE_B[0]]
    frames_b = np.concatenate([frames_b, frames_b[:, :32]], axis=1)  # 128 x 96
    streams = (tracker.create_stream(), tracker.create_stream())
    results = []
    for index in range(num_frames):
        for stream, events, size in ((streams[0], objects_1_3_2_5(), FRAME_SIZE), (streams[1], events_b(), FRAME_SIZE_B)):
            for obj_id, prompt in events.get(index, []):
                if prompt is None:
                    tracker.remove_objects(stream, [obj_id])
                else:
                    tracker.add_prompt(stream, obj_id, frame_size=size, **prompt)
        results.append(tracker.step_many(streams, [frames[index], frames_b[index]]))
    return results


@pytest.fixture(scope="module")
def compiled_two_streams(model: SAM2Model):
    """A compile-backend tracker warmed up for 2 streams: its report, counts after warm-up, every program call
    ((component, shape) -> input signatures), and the 2-stream results."""
    tracker = Tracker(model, TrackerConfig(max_objects=5, backend="compile", compiler="eager"))
    calls: Dict[Tuple[str, backends.ProgramShape], set] = {}
    for component, program in tracker.runner.programs.items():
        tracker.runner.programs[component] = _recording(program, component, calls)
    report = tracker.warmup(max_streams=2)
    after_warmup = tracker.compilations
    return tracker, report, after_warmup, calls, run_two_streams(tracker, TWO_STREAM_FRAMES)


def _recording(program, component: str, calls: Dict):
    def record(shape: backends.ProgramShape, *inputs: torch.Tensor):
        calls.setdefault((component, shape), set()).add(_signature(inputs))
        return program(shape, *inputs)
    return record


def _signature(tensors) -> Tuple[str, ...]:
    return tuple(f"{t.dtype}{list(t.shape)}" for t in tensors)


@pytest.mark.slow  # shares a module fixture that compiles every bucket (minutes on 2 cores)
def test_warmup_for_two_streams_builds_frame_and_row_buckets_and_two_streams_compile_nothing_more(
    compiled_two_streams,
) -> None:
    tracker, report, after_warmup, _, results = compiled_two_streams
    # rows of one frame: 1, 2, 4, 5; rows of two frames: 2, 4, 5, 8, 10; frames: 1, 2
    assert report.buckets == (1, 2, 4, 5) and report.stream_buckets == (2, 4, 5, 8, 10)
    assert report.frame_buckets == (1, 2)
    assert after_warmup == {"image_encoder": 2, "memory_attention": 18, "mask_decoder": 9, "memory_encoder": 9}
    assert {(e.component, e.bucket, e.per_row_frames) for e in report.events} >= {
        ("image_encoder", 2, False), ("memory_attention", 10, True), ("mask_decoder", 5, False)}
    assert "rows of several streams [2, 4, 5, 8, 10]" in report.summary()
    assert len(results) == TWO_STREAM_FRAMES
    assert tracker.compilations == after_warmup
    # the streams went through 1 + 0 ... 5 + 3 objects together
    totals = {len(a.object_ids) + len(b.object_ids) for a, b in results}
    assert {1, 3, 5, 6, 8} <= totals


@pytest.mark.slow  # shares a module fixture that compiles every bucket (minutes on 2 cores)
def test_programs_run_at_exactly_the_shapes_engines_are_exported_at(model: SAM2Model, compiled_two_streams) -> None:
    """Every call of a program (warm-up and streams) has the inputs export.component_inputs gives for its
    shape: TensorRT engines, built from those, fit every call."""
    from sam2_rt.runtime.export import COMPONENTS, component_inputs

    tracker, _, _, calls, _ = compiled_two_streams
    plan = backends.ShapePlan(frames=(1, 2), rows=(1, 2, 4, 5), per_row=(2, 4, 5, 8, 10), steady=(1,))
    assert set(calls) == {(component, shape) for component in COMPONENTS for shape in plan.shapes(component)}
    for (component, shape), signatures in calls.items():
        expected = component_inputs(model.config, component, shape.rows, tracker.config.max_conditioning_frames,
                                    per_row_frames=shape.per_row_frames, steady=shape.steady)
        assert signatures == {_signature(expected)}, (component, shape)


@pytest.mark.slow  # shares a module fixture that compiles every bucket (minutes on 2 cores)
def test_two_compiled_streams_equal_eager_and_carry_no_padding(model: SAM2Model, compiled_two_streams) -> None:
    *_, results = compiled_two_streams
    eager = run_two_streams(Tracker(model, TrackerConfig(max_objects=5)), COMPARED_FRAMES)
    for frame_index, (want_pair, got_pair) in enumerate(zip(eager, results)):
        for want, got, size in zip(want_pair, got_pair, (FRAME_SIZE, FRAME_SIZE_B)):
            where = f"frame {frame_index}"
            assert got.logits.shape == (len(want.object_ids), *size), where
            # Compiled rows of two frames each attend with their own frame's feature, eager rows of one frame share
            # it: the sums round differently, within the noise floor's margin (oracle.py); a wrong row gives O(1).
            assert_same_tracking(got, want, where)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "edgetam"])
def test_inductor_builds_every_component_at_warmup_and_tracks_like_eager(model: SAM2Model, name: str) -> None:
    """The real compiler (code generation included), one bucket: what the node runs with backend:=compile.
    EdgeTAM (256 px): its RepViT trunk (timm), perceiver and latent RoPE through inductor too."""
    if name == "edgetam":
        model = present_objects_model(EDGETAM_IMAGE_SIZE, "edgetam")
    tracker = Tracker(model, TrackerConfig(max_objects=1, backend="compile", compiler="inductor"))
    report = tracker.warmup()
    assert tracker.compilations == {"image_encoder": 1, "memory_attention": 2, "mask_decoder": 1,
                                    "memory_encoder": 1}, report.summary()
    eager = Tracker(model, TrackerConfig(max_objects=1))
    streams = {name: t.create_stream() for name, t in (("compiled", tracker), ("eager", eager))}
    frame = np.zeros((*FRAME_SIZE, 3), dtype=np.uint8)
    frame[20:60, 30:90] = (200, 60, 40)
    for name, t in (("compiled", tracker), ("eager", eager)):
        t.add_prompt(streams[name], 1, points=[[50.0, 40.0]], labels=[1], frame_size=FRAME_SIZE)
    for _ in range(3):
        got, want = tracker.step(streams["compiled"], frame), eager.step(streams["eager"], frame)
        # inductor fuses and reorders float arithmetic: close, not bit-equal
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-3, atol=1e-3)
    assert tracker.compilations == {"image_encoder": 1, "memory_attention": 2, "mask_decoder": 1,
                                    "memory_encoder": 1}


def test_eager_warmup_builds_nothing(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig())
    report = tracker.warmup()
    assert report.backend == "eager" and report.events == () and report.buckets == ()
    assert set(tracker.compilations.values()) == {0}
    assert "nothing to build" in report.summary()


def test_warmup_of_chosen_counts_covers_their_buckets_only(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig(max_objects=8, backend="compile", compiler="aot_eager"))
    report = tracker.warmup(object_counts=[3])
    assert report.buckets == (4,)
    assert tracker.compilations == {"image_encoder": 1, "memory_attention": 2, "mask_decoder": 1,
                                    "memory_encoder": 1}


class _Program:
    """A stand-in program that returns the same output tensor every call (like a CUDA-graph replay)."""

    def __init__(self) -> None:
        self.output = torch.ones(1, 3)

    def __call__(self, shape: backends.ProgramShape, *inputs: torch.Tensor):
        return (self.output,)


def test_cuda_graph_outputs_are_cloned_and_each_frame_starts_a_step(
    model: SAM2Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: List[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    program = _Program()
    runner = backends.FixedShapeRunner(model, (1, 2), {"image_encoder": program}, cuda_graphs=True)
    runner.begin_frame()
    (out,) = runner.encode_image(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert steps == [1]
    assert torch.equal(out, program.output) and out.data_ptr() != program.output.data_ptr()
    plain = backends.FixedShapeRunner(model, (1, 2), {"image_encoder": program})
    plain.begin_frame()
    uncloned = plain.encode_image(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))[0]
    assert steps == [1] and uncloned.data_ptr() == program.output.data_ptr()


def test_cuda_graphs_need_cuda_and_inductor(model: SAM2Model, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sam2_rt.runtime.choice"):
        tracker = Tracker(model, TrackerConfig(backend="compile", compiler="eager", cuda_graphs=True))
    assert tracker.runner.fixed_shapes and not tracker.runner.cuda_graphs
    assert any("CUDA graphs need" in record.message for record in caplog.records)
    with pytest.raises(ValueError, match="inductor"):
        backends.compile_backend("eager", cuda_graphs=True)
    inductor = backends.compile_backend("inductor", cuda_graphs=True)
    assert inductor.keywords == {"config_patches": {"triton.cudagraphs": True}}


def test_unknown_backend_in_the_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        TrackerConfig(backend="onnx")


@pytest.mark.gpu
def test_compiled_with_cuda_graphs_on_cuda_equals_eager(model: SAM2Model) -> None:
    """Real inductor, CUDA graphs: two objects (buckets 1 and 2), no compilation after warm-up."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import copy

    gpu_model = copy.deepcopy(model).cuda()
    _, centres = video(1)
    events: Events = {0: [(1, dict(points=centres[:1], labels=np.array([1])))],
                      4: [(2, dict(points=centres[1:2], labels=np.array([1])))]}
    eager = run(Tracker(gpu_model, TrackerConfig(max_objects=2, precision="fp32")), COMPARED_FRAMES, events)
    tracker = Tracker(gpu_model, TrackerConfig(max_objects=2, precision="fp32", backend="compile", cuda_graphs=True))
    assert tracker.runner.cuda_graphs
    tracker.warmup()
    counts = tracker.compilations
    results = run(tracker, COMPARED_FRAMES, events)
    assert tracker.compilations == counts
    for want, got in zip(eager, results):
        assert got.object_ids == want.object_ids
        bound = 1e-3 * max(1.0, want.logits.abs().max().item())
        assert (got.logits - want.logits).abs().max().item() <= bound
