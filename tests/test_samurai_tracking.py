"""TrackerConfig(motion="samurai"): each object keeps its own Kalman filter and its own memory selection in the
stream's bounded state, in the same batched step (sam2_rt.tracking.motion, MemoryBank(selective=True))."""

import copy
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch

from testkit.oracle import assert_same_tracking, present_objects_model
from sam2_rt import StreamState, Tracker, TrackerConfig, TrackResult
from sam2_rt.io.synthetic import SyntheticClip
from sam2_rt.modeling.sam2 import SAM2Model
from sam2_rt.tracking.memory import EMPTY
from sam2_rt.tracking.motion import SamuraiConfig

IMAGE_SIZE = 64
CLIP = SyntheticClip(height=48, width=64, num_shapes=3, seed=1)
FRAMES = 24
# A short learning phase, so that the filters score candidates by motion within the clip.
SAMURAI = SamuraiConfig(stable_frames_threshold=3)


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    return present_objects_model(IMAGE_SIZE)


def click(obj: int, frame: int) -> List[List[float]]:
    return [[float(v) for v in CLIP.centers(frame)[obj - 1]]]


def track(tracker: Tracker, events: Dict[int, List[Tuple[str, int]]], frames: int = FRAMES) -> List[TrackResult]:
    """Step one stream over the clip; `events[frame]`: ("add", id) a click on shape id, ("remove", id)."""
    stream = tracker.create_stream()
    results = []
    for index in range(frames):
        for action, obj in events.get(index, []):
            if action == "add":
                tracker.add_prompt(stream, obj, points=click(obj, index), labels=[1], frame_size=CLIP.frame(0).shape[:2])
            else:
                tracker.remove_objects(stream, [obj])
        results.append(tracker.step(stream, CLIP.frame(index)))
    return results


def only(result: TrackResult, obj: int) -> TrackResult:
    """The part of a result about one object."""
    k = result.object_ids.index(obj)
    return TrackResult(result.frame_index, [obj], result.masks[k:k + 1], result.logits[k:k + 1],
                       result.low_res_logits[k:k + 1], result.ious[k:k + 1], result.presence[k:k + 1],
                       [result.states[k]], result.boxes[k:k + 1])


def test_each_object_among_others_equals_it_tracked_alone_through_a_removal_and_an_addition(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig(max_objects=4, motion="samurai", samurai=SAMURAI))
    together = track(tracker, {0: [("add", 1), ("add", 2), ("add", 3)], 10: [("remove", 2)], 12: [("add", 2)]})
    alone = {1: track(tracker, {0: [("add", 1)]}), 3: track(tracker, {0: [("add", 3)]}),
             2: track(tracker, {0: [("add", 2)], 10: [("remove", 2)], 12: [("add", 2)]})}
    for index, result in enumerate(together):
        for obj in (1, 3) + ((2,) if index < 10 or index >= 12 else ()):
            assert_same_tracking(only(result, obj), alone[obj][index], f"frame {index}, object {obj}")
    assert together[-1].object_ids == [1, 3, 2]


def test_two_streams_stepped_together_equal_each_alone(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig(max_objects=3, motion="samurai", samurai=SAMURAI))
    a, b = tracker.create_stream(), tracker.create_stream()
    size = CLIP.frame(0).shape[:2]
    tracker.add_prompt(a, 1, points=click(1, 0), labels=[1], frame_size=size)
    tracker.add_prompt(b, 2, points=click(2, 0), labels=[1], frame_size=size)
    tracker.add_prompt(b, 3, points=click(3, 0), labels=[1], frame_size=size)
    alone_a, alone_b = copy.deepcopy(a), copy.deepcopy(b)
    for index in range(12):
        frame = CLIP.frame(index)
        got = tracker.step_many([a, b], [frame, frame[::-1].copy()])
        want = [tracker.step(alone_a, frame), tracker.step(alone_b, frame[::-1].copy())]
        for g, w, name in zip(got, want, "ab"):
            assert_same_tracking(g, w, f"frame {index}, stream {name}")
    for together, alone in ((a, alone_a), (b, alone_b)):
        assert torch.equal(together.motion.stable, alone.motion.stable) and int(together.motion.stable.max()) >= 3
        assert torch.allclose(together.motion.mean, alone.motion.mean, rtol=1e-4, atol=1e-3)


def ring(stream: StreamState, row: int) -> List[int]:
    return sorted(f for f in stream.memory.recent_frames[row].tolist() if f != EMPTY)


@pytest.mark.parametrize("threshold, expected", [
    # nothing passes: the ring holds the last frame only
    (2.0, [FRAMES - 1]),
    # everything passes (object scores too): the last six frames; frame 1 never counts (too early)
    (-1.0, list(range(FRAMES - 6, FRAMES))),
])
def test_only_accepted_memories_stay_and_the_last_frame_always(model: SAM2Model, threshold: float,
                                                                expected: Sequence[int]) -> None:
    config = SamuraiConfig(memory_bank_iou_threshold=threshold, memory_bank_obj_score_threshold=-1e9)
    tracker = Tracker(model, TrackerConfig(max_objects=2, motion="samurai", samurai=config))
    stream = tracker.create_stream()
    tracker.add_prompt(stream, 1, points=click(1, 0), labels=[1], frame_size=CLIP.frame(0).shape[:2])
    sizes = set()
    for index in range(FRAMES):
        tracker.step(stream, CLIP.frame(index))
        sizes.add(stream.state_nbytes())
        if index == 2:  # frame 1 (too early to count) was kept until frame 2 took its place
            assert ring(stream, 0) == [2]
        if index == 3:
            assert ring(stream, 0) == ([2, 3] if threshold < 0 else [3])
    assert ring(stream, 0) == list(expected)
    assert len(sizes) == 1, "the state's bytes never change"
    assert int(stream.motion.stable[0]) >= 1, "the filter runs"


def test_plain_tracking_is_unchanged_and_keeps_no_filter(model: SAM2Model) -> None:
    tracker = Tracker(model, TrackerConfig(max_objects=2))
    stream = tracker.create_stream()
    assert stream.motion is None and not stream.memory.selective
    with pytest.raises(ValueError, match="motion must be one of"):
        TrackerConfig(motion="kalman")


def test_the_compile_backend_tracks_like_eager_and_compiles_nothing_after_warmup(model: SAM2Model) -> None:
    config = dict(max_objects=2, motion="samurai", samurai=SAMURAI)
    eager = Tracker(model, TrackerConfig(**config))
    compiled = Tracker(model, TrackerConfig(backend="compile", compiler="eager", **config))
    compiled.warmup()
    before = compiled.compilations
    events = {0: [("add", 1)], 3: [("add", 2)]}
    for index, (got, want) in enumerate(zip(track(compiled, events, 16), track(eager, events, 16))):
        assert_same_tracking(got, want, f"frame {index}")
    assert compiled.compilations == before
    assert np.isfinite(want.logits.numpy()).all()


def test_a_motion_threshold_keeps_out_every_frame_whose_motion_score_is_below_it(model: SAM2Model) -> None:
    """memory_bank_kf_score_threshold 2 (no box IoU reaches it): frames with a motion score (the filter was
    stable) never stay in memory; frames without one (filter learning) pass, as the other thresholds let them."""
    config = SamuraiConfig(stable_frames_threshold=3, memory_bank_iou_threshold=-1e9,
                           memory_bank_obj_score_threshold=-1e9, memory_bank_kf_score_threshold=2.0)
    tracker = Tracker(model, TrackerConfig(max_objects=2, motion="samurai", samurai=config))
    stream = tracker.create_stream()
    tracker.add_prompt(stream, 1, points=click(1, 0), labels=[1], frame_size=CLIP.frame(0).shape[:2])
    scored = set()  # frames decoded with a stable filter (they have a motion score)
    kept = set()
    for index in range(FRAMES):
        if index > 0 and int(stream.motion.stable[0]) >= config.stable_frames_threshold:
            scored.add(index)
        tracker.step(stream, CLIP.frame(index))
        kept.update(f for f in ring(stream, 0) if f != index)  # what stays beyond its own next frame
    assert scored, "the filter became stable (else the threshold was never applied)"
    assert not kept & scored, f"frames with a motion score stayed in memory: {sorted(kept & scored)}"
