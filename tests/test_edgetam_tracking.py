"""EdgeTAM through everything the tracker does besides its backends: a bounded memory of (512, 64) perceiver
tokens per memory frame whose bytes never change, objects added and removed mid-stream without touching the
others, OCCLUDED / LOST from a negative object score, several streams in one `step_many`, detector-driven
objects, and motion="samurai". Also its memory per object at 1024 px against SAM 2.1's.

Seeded random weights at 256 px (EdgeTAM's smallest size: its perceiver needs a multiple of 256). The image
encoder is memoised per batch of frames (`memoised_images`): what these tests check happens after it, and
every distinct batch of frames is still encoded once, by the model.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch

from testkit.oracle import assert_same_tracking, present_objects_model, set_object_score_bias
from sam2_rt import ObjectState, StreamState, Tracker, TrackerConfig, TrackResult
from sam2_rt.detection.association import DetectionAssociator
from sam2_rt.detection.decisions import AssociationConfig, Detection, apply_outcome
from sam2_rt.io.synthetic import SyntheticClip
from sam2_rt.modeling.config import get_config
from sam2_rt.modeling.sam2 import SAM2Model
from sam2_rt.tracking.memory import EMPTY, MemoryBank
from sam2_rt.tracking.motion import SamuraiConfig
from test_tracker_memory import held

IMAGE_SIZE = 256
SLOT = (512, 64)  # one memory frame: 256 global + 16 x 16 grid latents of width mem_dim
CLIP = SyntheticClip(height=48, width=64, num_shapes=3, seed=1)
SIZE = (48, 64)
O, L, T = ObjectState.OCCLUDED, ObjectState.LOST, ObjectState.TRACKING
# Image features by batch of frames, shared by the models below: they differ in the object-score head only.
_FEATURES: Dict[Tuple[Tuple[int, ...], str], Tuple[torch.Tensor, ...]] = {}


def memoised_images(model: SAM2Model) -> SAM2Model:
    """The model, its image encoder computing each distinct batch of frames once (see the module doc)."""
    encode = model.forward_image

    def forward_image(images: torch.Tensor, channels_last: bool = False) -> Tuple[torch.Tensor, ...]:
        key = (tuple(images.shape), hashlib.sha1(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest())
        if key not in _FEATURES:
            _FEATURES[key] = encode(images, channels_last)
        return _FEATURES[key]

    model.forward_image = forward_image  # type: ignore[method-assign]
    return model


@pytest.fixture(scope="module")
def model() -> SAM2Model:
    """EdgeTAM whose objects are present (object score bias +4), so that masks are real."""
    return memoised_images(present_objects_model(IMAGE_SIZE, "edgetam"))


@pytest.fixture(scope="module")
def absent_model() -> SAM2Model:
    """The same weights with the object score far below 0: every object is absent on every frame."""
    absent = present_objects_model(IMAGE_SIZE, "edgetam")
    set_object_score_bias(absent, -50.0)
    return memoised_images(absent)


def click(obj: int, frame: int) -> dict:
    """A click on the centre of the clip's shape obj - 1 on `frame`."""
    return dict(points=CLIP.centers(frame)[obj - 1:obj], labels=[1])


def track(tracker: Tracker, events: Dict[int, List[Tuple[int, Optional[dict]]]], frames: int,
          stream: Optional[StreamState] = None) -> List[TrackResult]:
    """Step one stream over the clip; events[frame]: (object id, prompt), a prompt None removes the object."""
    stream = stream if stream is not None else tracker.create_stream()
    results = []
    for index in range(frames):
        for obj, prompt in events.get(index, []):
            if prompt is None:
                tracker.remove_objects(stream, [obj])
            else:
                tracker.add_prompt(stream, obj, frame_size=SIZE, **prompt)
        results.append(tracker.step(stream, CLIP.frame(index)))
    return results


def only(result: TrackResult, objects: Sequence[int]) -> TrackResult:
    """The part of a result about some of its objects (in the result's order)."""
    rows = [k for k, obj in enumerate(result.object_ids) if obj in objects]
    return TrackResult(result.frame_index, [result.object_ids[k] for k in rows], result.masks[rows],
                       result.logits[rows], result.low_res_logits[rows], result.ious[rows], result.presence[rows],
                       [result.states[k] for k in rows], result.boxes[rows])


def recent(stream: StreamState, row: int) -> List[int]:
    return sorted(f for f in stream.memory.recent_frames[row].tolist() if f != EMPTY)


# --------------------------------------------------------------------------- bounded memory


def test_memory_holds_perceiver_tokens_and_the_state_bytes_never_change(model: SAM2Model) -> None:
    """Prompts come back every 4 frames (object 1 refined, object 2 removed and added again) and object 1's
    conditioning frames reach their cap (2) on frame 8: every stored memory frame is (512, 64) tokens, the
    stream's bytes after every frame are those of the empty stream, and after frame 11 the stream holds what it
    held after frame 7 (same tensors by shape and dtype, same containers by length). The clip's first 4 frames
    repeat (the image encoder runs 4 times)."""
    assert model.config.memory_slot_shape == SLOT
    tracker = Tracker(model, TrackerConfig(max_objects=3, max_conditioning_frames=2))
    stream = tracker.create_stream()
    bank = stream.memory
    assert bank.cond_feats.shape == (3, 2, *SLOT) and bank.recent_feats.shape == (3, 6, *SLOT)
    assert bank.mem_pos.shape == SLOT and bank.cond_feats.dtype == bank.recent_feats.dtype == torch.bfloat16
    empty_bytes = stream.state_nbytes()
    events: Dict[int, List[Tuple[int, Optional[dict]]]] = {0: [(1, click(1, 0)), (2, dict(box=CLIP.boxes(0)[1]))]}
    for frame in (4, 8):
        events[frame] = [(1, click(1, 0)), (2, None), (2, dict(box=CLIP.boxes(0)[1]))]
    sizes, snapshots = set(), {}
    for index in range(12):
        for obj, prompt in events.get(index, []):
            if prompt is None:
                tracker.remove_objects(stream, [obj])
            else:
                tracker.add_prompt(stream, obj, frame_size=SIZE, **prompt)
        result = tracker.step(stream, CLIP.frame(index % 4))
        sizes.add(stream.state_nbytes())
        if index in (7, 11):
            snapshots[index] = held(stream, "stream")
    assert sizes == {empty_bytes}, "the stream's bytes never change"
    assert snapshots[11] == snapshots[7]
    assert sum(isinstance(v, tuple) for v in snapshots[11].values()) >= 8  # the walk reached the bank's tensors
    assert result.object_ids == [1, 2] and stream.frame_index == 12
    # object 1 kept its first prompted frame and the latest (the cap), object 2 its restart frame; object 1 holds
    # the memories of the tracked frames among the last 6 (frame 8 is a conditioning memory only), object 2
    # those since its restart (its removal emptied its slots)
    assert sorted(bank.cond_frames[0].tolist()) == [0, 8] and sorted(bank.cond_frames[1].tolist()) == [EMPTY, 8]
    assert recent(stream, 0) == [6, 7, 9, 10, 11] and recent(stream, 1) == [9, 10, 11]
    assert T in result.states and np.isfinite(result.logits.numpy()).all()


def bank_bytes_per_object(name: str, image_size: int = 1024) -> int:
    """Bytes one more object adds to a stream's memory bank (TrackerConfig defaults), with nothing allocated."""
    config, defaults = get_config(name, image_size), TrackerConfig()
    one, two = (MemoryBank.for_model(config, capacity, defaults.max_conditioning_frames, torch.device("meta"))
                for capacity in (1, 2))
    return two.nbytes() - one.nbytes()


def test_edgetam_memory_per_object_at_1024_px_is_under_a_quarter_of_sam2_1_tiny() -> None:
    """Per object: 4 conditioning + 6 recent memory frames in bfloat16, 4 + 15 float pointers of 256, and
    their frame indices. SAM 2.1 tiny's memory frame is a (64, 64, 64) map at 1024 px; EdgeTAM's is 512 tokens of
    64 whatever the size."""
    pointers_and_indices = (4 + 15) * 256 * 4 + (4 + 6 + 15) * 8
    edgetam = bank_bytes_per_object("edgetam")
    sam2 = bank_bytes_per_object("sam2.1_hiera_tiny")
    assert edgetam == (4 + 6) * 512 * 64 * 2 + pointers_and_indices == 675_016
    assert sam2 == (4 + 6) * 64 * 64 * 64 * 2 + pointers_and_indices == 5_262_536
    assert edgetam * 4 <= sam2  # 12.8 %
    assert bank_bytes_per_object("edgetam", 512) == edgetam  # the perceiver's 512 tokens at any size


# --------------------------------------------------------------------------- objects in and out


def test_objects_added_and_removed_mid_stream_leave_the_others_as_in_a_run_without_them(model: SAM2Model) -> None:
    """Objects 1 and 2 from frame 0, object 3 added on frame 2, object 2 removed on frame 4: objects 1 and 3
    track as in a run that never had object 2, and object 2 (until its removal) as alone."""
    tracker = Tracker(model, TrackerConfig(max_objects=3))
    frames = 6
    together = track(tracker, {0: [(1, click(1, 0)), (2, click(2, 0))], 2: [(3, click(3, 2))], 4: [(2, None)]},
                     frames)
    without = track(tracker, {0: [(1, click(1, 0))], 2: [(3, click(3, 2))]}, frames)
    alone = track(tracker, {0: [(2, click(2, 0))]}, 4)
    for index, result in enumerate(together):
        assert result.object_ids == ([1, 2] if index < 2 else [1, 2, 3] if index < 4 else [1, 3]), index
        assert_same_tracking(only(result, (1, 3)), without[index], f"frame {index}, objects 1 and 3")
        if index < 4:
            assert_same_tracking(only(result, (2,)), alone[index], f"frame {index}, object 2")
    assert together[-1].masks.any(), "the objects have masks (else the comparison would be trivial)"


def test_a_negative_object_score_makes_an_object_occluded_then_lost_and_a_mask_prompt_brings_it_back(
        absent_model: SAM2Model, model: SAM2Model) -> None:
    tracker = Tracker(absent_model, TrackerConfig(lost_after_frames=3))
    stream = tracker.create_stream()
    tracker.add_prompt(stream, 5, frame_size=SIZE, **click(1, 0))
    states = [tracker.step(stream, CLIP.frame(index)).states[0] for index in range(6)]
    assert states == [O, O, O, L, L, L]
    # a mask prompt is its own output: the object is present on that frame again
    mask = np.zeros(SIZE, dtype=bool)
    mask[10:20, 10:30] = True
    tracker.add_prompt(stream, 5, mask=mask)
    result = tracker.step(stream, CLIP.frame(6))
    assert result.states == [T] and result.presence[0] > 0.99
    assert torch.allclose(result.boxes[0], torch.tensor([10.0, 10.0, 30.0, 20.0]), atol=2.0)
    assert tracker.step(stream, CLIP.frame(7)).states == [O]
    present = Tracker(model, TrackerConfig(lost_after_frames=3))
    assert [r.states[0] for r in track(present, {0: [(5, click(1, 0))]}, 5)] == [T] * 5


# --------------------------------------------------------------------------- several streams


@pytest.mark.parametrize(
    "config",
    [TrackerConfig(max_objects=3), TrackerConfig(max_objects=3, memory_attention_batch=8, compact_memory=False)],
    ids=["per-frame-memory-attention", "memory-attention-across-frames"],
)
def test_two_streams_stepped_together_equal_each_stepped_alone(model: SAM2Model, config: TrackerConfig) -> None:
    """Stream A: the clip, two objects, one refined on frame 2 and one removed on frame 4; stream B: the clip
    upside down, an object from frame 1 and a mask prompt on frame 2. One step_many per frame, one image-encoder
    call of both frames, against each stream stepped alone. Also with memory attention over the rows of both
    streams in one call, every memory slot read with a mask of the filled ones (compact_memory=False)."""
    flipped = [CLIP.frame(index)[::-1].copy() for index in range(6)]
    mask = np.zeros(SIZE, dtype=bool)
    mask[20:40, 30:50] = True
    events: Dict[int, List[Tuple[str, int, Optional[dict]]]] = {
        0: [("a", 1, click(1, 0)), ("a", 2, dict(box=CLIP.boxes(0)[1]))],
        1: [("b", 7, dict(points=[[20.0, 30.0]], labels=[1]))],
        2: [("a", 1, dict(points=[[20.0, 20.0], [40.0, 24.0]], labels=[1, 0])), ("b", 8, dict(mask=mask))],
        4: [("a", 2, None)],
    }
    tracker = Tracker(model, config)
    encoded: List[int] = []
    encode = tracker.runner.encode_image
    tracker.runner.encode_image = lambda images: encoded.append(images.shape[0]) or encode(images)  # type: ignore
    together = {"a": tracker.create_stream(), "b": tracker.create_stream()}
    alone = {"a": tracker.create_stream(), "b": tracker.create_stream()}
    for index in range(6):
        for name, obj, prompt in events.get(index, []):
            for streams in (together, alone):
                if prompt is None:
                    tracker.remove_objects(streams[name], [obj])
                else:
                    tracker.add_prompt(streams[name], obj, frame_size=SIZE, **prompt)
        frames = {"a": CLIP.frame(index), "b": flipped[index]}
        got = tracker.step_many([together["a"], together["b"]], [frames["a"], frames["b"]])
        for name, result in zip("ab", got):
            want = tracker.step(alone[name], frames[name])
            assert_same_tracking(result, want, f"frame {index}, stream {name}")
    assert got[0].object_ids == [1] and got[1].object_ids == [7, 8]
    # frame 0: stream B has no object (not encoded); then one call of both frames, each alone beside it
    assert encoded[:2] == [1, 1] and encoded[2:] == [2, 1, 1] * 5


# --------------------------------------------------------------------------- detector-driven objects


def square_frame(top_left: Optional[Tuple[int, int]]) -> np.ndarray:
    """A dark 96 x 128 RGB frame with a bright 20 x 20 square at (x, y) = top_left (None: no square)."""
    frame = np.full((96, 128, 3), 20, dtype=np.uint8)
    if top_left is not None:
        x, y = top_left
        frame[y:y + 20, x:x + 20] = 230
    return frame


def test_detections_start_an_edgetam_object_and_reacquire_it_under_its_id_when_lost(absent_model: SAM2Model) -> None:
    """A detector box starts object 1 on frame 0; the model finds it absent on every frame (object score far
    below 0), so the tracker reports it LOST from frame 2 (lost_after_frames=2); on frame 6 a box of its class
    near the box it was prompted with re-acquires it under id 1 (a new conditioning frame in its memory) and a
    box of another class starts object 2."""
    tracker = Tracker(absent_model, TrackerConfig(max_objects=3, lost_after_frames=2))
    associator = DetectionAssociator(AssociationConfig(reacquire_max_distance=4.0))
    stream = tracker.create_stream()
    positions = [(10, 30), (45, 30), (80, 30), None, None, None, (90, 60)]
    last: Optional[TrackResult] = None
    history, states = [], []
    for index, position in enumerate(positions):
        detections = []
        if index in (0, 3, 6) and position is not None:
            x, y = position
            detections = [Detection((float(x), float(y), x + 20.0, y + 20.0), 0.9, "square")]
        if index == 6:
            detections.append(Detection((5.0, 70.0, 25.0, 90.0), 0.8, "disc"))
        outcome = associator.associate(detections, (96, 128), last, stream.object_ids)
        history.append([(d.kind.value, d.object_id) for d in apply_outcome(tracker, stream, outcome, associator)])
        last = tracker.step(stream, square_frame(position))
        states.append(last.states)
    assert history == [[("started", 1)], [], [], [], [], [], [("reacquired", 1), ("started", 2)]]
    assert states[:6] == [[O], [O], [L], [L], [L], [L]]
    assert last.object_ids == [1, 2] and associator.labels() == {1: "square", 2: "disc"}
    assert sorted(stream.memory.cond_frames[0].tolist()) == [EMPTY, EMPTY, 0, 6]
    assert sorted(stream.memory.cond_frames[1].tolist()) == [EMPTY, EMPTY, EMPTY, 6]


# --------------------------------------------------------------------------- samurai


@pytest.mark.parametrize("threshold, ring", [(2.0, [11]), (-1.0, list(range(6, 12)))],
                         ids=["nothing-accepted", "everything-accepted"])
def test_samurai_motion_runs_with_edgetam_and_selects_its_memories(model: SAM2Model, threshold: float,
                                                                   ring: List[int]) -> None:
    """motion="samurai": each object's Kalman filter learns (3 stable frames) and its memory selection keeps
    only accepted frames, and the last one, among EdgeTAM's token memories; the state's bytes never change."""
    samurai = SamuraiConfig(stable_frames_threshold=3, memory_bank_iou_threshold=threshold,
                            memory_bank_obj_score_threshold=-1e9)
    tracker = Tracker(model, TrackerConfig(max_objects=2, motion="samurai", samurai=samurai))
    stream = tracker.create_stream()
    assert stream.memory.selective and stream.memory.recent_feats.shape[2:] == SLOT
    empty_bytes = stream.state_nbytes()
    sizes = set()
    for index in range(12):
        if index == 0:
            tracker.add_prompt(stream, 1, frame_size=SIZE, **click(1, 0))
            tracker.add_prompt(stream, 2, frame_size=SIZE, **click(2, 0))
        result = tracker.step(stream, CLIP.frame(index))
        sizes.add(stream.state_nbytes())
    assert sizes == {empty_bytes}
    assert result.object_ids == [1, 2] and np.isfinite(result.logits.numpy()).all()
    assert int(stream.motion.stable.min()) >= 3, "both filters learned"
    assert recent(stream, 0) == recent(stream, 1) == ring
