"""Several streams stepped together (`Tracker.step_many`, the cameras of one node) equal each stream stepped
alone: one image-encoder batch, memory attention / decoder / memory encoder over the rows of all streams,
prompted objects per stream; transactional like `step`."""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch


from testkit.oracle import RECURRENT_BOUND, assert_same_tracking, present_objects_model  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402
from sam2_rt.modeling.sam2 import SAM2Model  # noqa: E402
from sam2_rt import ObjectState, StreamSnapshot, StreamState, Tracker, TrackerConfig, TrackerInputError, TrackResult  # noqa: E402

IMAGE_SIZE = 64
NUM_FRAMES = 10
# Stream A: 64 x 64 frames; stream B: 48 x 64 (cropped), so their outputs differ in size too.
SIZE_A, SIZE_B = (64, 64), (48, 64)
_CLIP_A, _CLIP_B = SyntheticClip(64, 64, num_shapes=3, seed=1), SyntheticClip(64, 64, num_shapes=3, seed=2)
FRAMES_A, CENTRES_A = _CLIP_A.frames(NUM_FRAMES), _CLIP_A.centers(0)
FRAMES_B, CENTRES_B = _CLIP_B.frames(NUM_FRAMES)[:, 8:56], _CLIP_B.centers(0) - np.array([0.0, 8.0])
# (stream, object id, prompt) per frame; a prompt None removes the object.
Events = Dict[int, List[Tuple[str, int, Optional[dict]]]]


def click(centres: np.ndarray, shape: int, label: int = 1) -> dict:
    return dict(points=centres[shape:shape + 1], labels=np.array([label]))


EVENTS: Events = {
    0: [("a", 1, click(CENTRES_A, 0)), ("a", 2, dict(box=np.array([8.0, 8.0, 40.0, 40.0])))],
    2: [("b", 7, click(CENTRES_B, 1))],  # B starts while A tracks
    3: [("a", 1, dict(points=np.array([[20.0, 20.0], [30.0, 24.0]]), labels=np.array([0, 1]))),  # A refined
        ("b", 8, dict(mask=np.pad(np.ones((20, 24), bool), ((10, 18), (20, 20)))))],  # B: a mask prompt
    5: [("b", 9, dict(box=np.array([4.0, 4.0, 30.0, 40.0]))), ("a", 3, click(CENTRES_A, 2))],  # new objects
    6: [("a", 2, None)],  # removed from A; B keeps its objects
    7: [("b", 7, click(CENTRES_B, 1))],  # B refined while A tracks
}


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return present_objects_model(IMAGE_SIZE)


def apply_events(tracker: Tracker, streams: Dict[str, StreamState], frame_index: int) -> None:
    for name, obj_id, prompt in EVENTS.get(frame_index, []):
        if prompt is None:
            tracker.remove_objects(streams[name], [obj_id])
        else:
            tracker.add_prompt(streams[name], obj_id, frame_size=SIZE_A if name == "a" else SIZE_B, **prompt)


def run_together(tracker: Tracker) -> List[List[TrackResult]]:
    """Both streams through the events with one step_many per frame: [[result A, result B] per frame]."""
    streams = {"a": tracker.create_stream(), "b": tracker.create_stream()}
    results = []
    for index in range(NUM_FRAMES):
        apply_events(tracker, streams, index)
        results.append(tracker.step_many([streams["a"], streams["b"]], [FRAMES_A[index], FRAMES_B[index]]))
    return results


def run_alone(tracker: Tracker) -> List[List[TrackResult]]:
    """The same, each stream stepped alone with `step`."""
    streams = {"a": tracker.create_stream(), "b": tracker.create_stream()}
    results = []
    for index in range(NUM_FRAMES):
        apply_events(tracker, streams, index)
        results.append([tracker.step(streams["a"], FRAMES_A[index]), tracker.step(streams["b"], FRAMES_B[index])])
    return results


def assert_equal_results(together: List[List[TrackResult]], alone: List[List[TrackResult]]) -> None:
    """Same frames, ids, states and shapes; the rest equal up to float noise (oracle.assert_same_tracking).

    The image encoder runs a batch of frames instead of one and memory attention a batch of rows: their sums
    round differently, and the bfloat16 memory carries such a difference to later frames. The bound is the
    noise floor's margin (oracle.py); a wrong row or frame gives O(1).
    """
    for frame_index, (pair, expected) in enumerate(zip(together, alone)):
        for name, got, want in zip("ab", pair, expected):
            where = f"frame {frame_index}, stream {name}"
            assert got.frame_index == want.frame_index == frame_index, where
            assert got.masks.shape == want.masks.shape, where
            assert_same_tracking(got, want, where)
            if want.object_ids:
                bound = RECURRENT_BOUND * max(1.0, want.logits.abs().max().item())
                assert (got.low_res_logits - want.low_res_logits).abs().max().item() <= bound, where


@pytest.mark.parametrize(
    "config",
    [TrackerConfig(max_objects=4),
     TrackerConfig(max_objects=4, memory_attention_batch=8, compact_memory=False)],
    ids=["per-frame-memory-attention", "memory-attention-across-frames"],
)
def test_two_streams_stepped_together_equal_each_stepped_alone(model: SAM2Model, config: TrackerConfig,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    together_tracker = Tracker(model, config)
    calls: Dict[str, List[Tuple[int, ...]]] = {"images": [], "attention": [], "decoder": [], "memory": []}
    runner = together_tracker.runner
    for name, method, shape_of in (
        ("images", "encode_image", lambda args: (args[0].shape[0],)),
        ("attention", "attend_memory", lambda args: (args[0].shape[0], args[2].mem_feats.shape[0])),
        ("decoder", "decode_tracked", lambda args: (args[1].shape[0], args[0].shape[0])),
        ("memory", "encode_memory", lambda args: (args[0].shape[0], args[1].shape[0])),
    ):
        monkeypatch.setattr(runner, method, _recorder(getattr(runner, method), calls[name], shape_of))
    together = run_together(together_tracker)
    assert_equal_results(together, run_alone(Tracker(model, config)))

    # Every frame with objects in both streams took ONE image-encoder call of two frames, and one call of
    # the tracked decoder and of the memory encoder over the rows of both streams, each row with its own
    # frame's features: (frame features, rows) per call. Frames 0-1: A alone, 2: B's first object,
    # 3: A refined + B's mask prompt, 5: a new object in each, 6 on: A 2 objects, B 3.
    assert calls["images"] == [(1,)] * 2 + [(2,)] * (NUM_FRAMES - 2)
    tracked = [(1, 2), (1, 2), (3, 3), (4, 4), (4, 4)] + [(5, 5)] * 4
    assert calls["decoder"] == tracked
    assert calls["memory"] == [(1, 2), (1, 2), (3, 3), (4, 4), (4, 4), (6, 6)] + [(5, 5)] * 4
    if together_tracker._memory_attention_batch == 1:  # one row at a time anyway (CPU default): each
        # frame's rows alone, with its feature of batch 1 (the frame's first self-attention runs once)
        assert calls["attention"] == [(1, 2), (1, 2), (1, 2), (1, 1)] + [(1, 2), (1, 2)] * 2 + [(1, 2), (1, 3)] * 4
    else:  # all slots always: the streams' readouts have one shape, one call over all rows
        assert calls["attention"] == tracked
    last_a, last_b = together[-1]
    assert last_a.object_ids == [1, 3] and last_b.object_ids == [7, 8, 9]
    assert last_a.masks.shape[1:] == SIZE_A and last_b.masks.shape[1:] == SIZE_B
    assert ObjectState.TRACKING in last_a.states + last_b.states


def test_two_threads_stepping_different_streams_at_once_equal_each_stepped_alone(model: SAM2Model) -> None:
    """The eager backend keeps no state but the streams': the node's worker threads (worker_threads > 1) step
    different cameras' streams at the same time with one tracker."""
    tracker = Tracker(model, TrackerConfig(max_objects=4))
    streams = {"a": tracker.create_stream(), "b": tracker.create_stream()}
    frames = {"a": FRAMES_A, "b": FRAMES_B}
    results: Dict[str, List[TrackResult]] = {"a": [], "b": []}
    errors: List[BaseException] = []
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        try:
            for index in range(NUM_FRAMES):
                for stream, obj_id, prompt in EVENTS.get(index, []):
                    if stream != name:
                        continue
                    if prompt is None:
                        tracker.remove_objects(streams[name], [obj_id])
                    else:
                        tracker.add_prompt(streams[name], obj_id, frame_size=SIZE_A if name == "a" else SIZE_B,
                                           **prompt)
                barrier.wait(timeout=60.0)  # both threads step their frame `index` at the same time
                results[name].append(tracker.step(streams[name], frames[name][index]))
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300.0)
    assert not errors, errors
    assert_equal_results([list(pair) for pair in zip(results["a"], results["b"])],
                         run_alone(Tracker(model, TrackerConfig(max_objects=4))))


def _recorder(method: Callable, calls: List[Tuple[int, ...]], shape_of: Callable) -> Callable:
    def record(*args: Any) -> Any:
        calls.append(shape_of(args))
        return method(*args)
    return record


def test_a_stream_without_objects_is_not_encoded_and_one_stream_equals_step(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig(max_objects=4))
    busy, idle, alone = tracker.create_stream(), tracker.create_stream(), tracker.create_stream()
    for stream in (busy, alone):
        tracker.add_prompt(stream, 1, points=CENTRES_A[:1], labels=[1], frame_size=SIZE_A)
    for index in range(3):
        got_busy, got_idle = tracker.step_many([busy, idle], [FRAMES_A[index], FRAMES_B[index]])
        want = tracker.step(alone, FRAMES_A[index])
        # Only one stream had objects: its frame ran alone, exactly as `step` runs it.
        assert torch.equal(got_busy.low_res_logits, want.low_res_logits)
        assert got_idle.object_ids == [] and got_idle.masks.shape == (0, *SIZE_B)
        assert got_idle.frame_index == index
    assert idle.frame_index == 3 and idle.frame_size == SIZE_B
    assert tracker.step_many([], []) == []


def assert_unchanged(before: StreamSnapshot, state: StreamState) -> None:
    after = state.snapshot()
    assert after == before, f"the stream changed: {before.differences(after)}"


@pytest.fixture(scope="module")
def two_started_streams(model: SAM2Model) -> Tuple[Tracker, StreamState, StreamState]:
    """Two streams with tracked objects, A with a refinement and B with a new object pending."""
    tracker = Tracker(model, TrackerConfig(max_objects=4))
    streams = {"a": tracker.create_stream(), "b": tracker.create_stream()}
    tracker.add_prompt(streams["b"], 7, points=CENTRES_B[1:2], labels=[1], frame_size=SIZE_B)
    for index in range(4):
        apply_events(tracker, streams, index)
        tracker.step_many([streams["a"], streams["b"]], [FRAMES_A[index], FRAMES_B[index]])
    tracker.add_prompt(streams["a"], 1, points=CENTRES_A[:1], labels=[1])
    tracker.add_prompt(streams["b"], 4, points=CENTRES_B[2:3], labels=[1])
    return tracker, streams["a"], streams["b"]


@pytest.mark.parametrize("failing", ["encode_memory", "decode_tracked", "encode_image"])
def test_a_failure_in_a_batched_step_leaves_every_stream_unchanged(
    two_started_streams, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    tracker, stream_a, stream_b = two_started_streams
    a, b = copy.deepcopy(stream_a), copy.deepcopy(stream_b)
    before = a.snapshot(), b.snapshot()

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(tracker.runner, failing, out_of_memory)
        with pytest.raises(RuntimeError, match="out of memory"):
            tracker.step_many([a, b], [FRAMES_A[4], FRAMES_B[4]])
    assert_unchanged(before[0], a)
    assert_unchanged(before[1], b)
    # ... and the streams go on as if nothing had happened.
    clean_a, clean_b = copy.deepcopy(stream_a), copy.deepcopy(stream_b)
    for got, want in zip(tracker.step_many([a, b], [FRAMES_A[4], FRAMES_B[4]]),
                         tracker.step_many([clean_a, clean_b], [FRAMES_A[4], FRAMES_B[4]])):
        assert got.object_ids == want.object_ids and torch.equal(got.low_res_logits, want.low_res_logits)


def test_a_bad_frame_names_its_stream_and_changes_nothing(two_started_streams) -> None:
    tracker, stream_a, stream_b = two_started_streams
    a, b = copy.deepcopy(stream_a), copy.deepcopy(stream_b)
    before = a.snapshot(), b.snapshot()
    with pytest.raises(TrackerInputError, match=r"stream 1 of 2: a numpy frame must be uint8"):
        tracker.step_many([a, b], [FRAMES_A[4], FRAMES_B[4].astype(np.float32)])
    with pytest.raises(TrackerInputError, match=r"^a numpy frame must be \(H, W, 3\) RGB"):
        tracker.step_many([a], [FRAMES_A[4][..., 0]])  # one stream: the message of `step`
    assert_unchanged(before[0], a)
    assert_unchanged(before[1], b)
    with pytest.raises(ValueError, match="one frame per stream: 2 streams, 1 frames"):
        tracker.step_many([a, b], [FRAMES_A[4]])
    with pytest.raises(ValueError, match="same stream twice"):
        tracker.step_many([a, a], [FRAMES_A[4], FRAMES_A[5]])
    assert_unchanged(before[0], a)
    assert_unchanged(before[1], b)


def test_a_snapshot_sees_every_change_a_step_or_a_prompt_makes(two_started_streams) -> None:
    """The check the two tests above rely on can fail: a queued prompt, a step and a removal each show."""
    tracker, stream_a, _ = two_started_streams
    a = copy.deepcopy(stream_a)
    start = a.snapshot()
    assert a.snapshot() == start and start.differences(a.snapshot()) == []
    tracker.add_prompt(a, 9, points=CENTRES_B[:1], labels=[1])
    queued = a.snapshot()
    assert queued != start and start.differences(queued) == ["object_ids", "pending", "nbytes"]
    tracker.step(a, FRAMES_A[4])
    stepped = a.snapshot()
    assert {"frame_index", "absent_frames", "pending", "bank"} <= set(queued.differences(stepped))
    tracker.remove_objects(a, [9])
    assert a.snapshot() != stepped and tuple(a.object_ids) == start.object_ids
