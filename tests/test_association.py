"""The detection-association policy (sam2_rt.detection.association): unit tests on synthetic TrackResults, then one
tracker-level scenario with the random-weights tiny model."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import pytest
import torch

from sam2_rt.detection.association import DetectionAssociator
from sam2_rt.detection.decisions import (
    AssociationConfig,
    AssociationOutcome,
    Decision,
    DecisionKind,
    Detection,
    Reason,
    apply_outcome,
)
from sam2_rt.detection.matching import box_center_distance, box_iou
from sam2_rt.weights.checkpoint import random_model
from sam2_rt import ObjectState, Tracker, TrackerConfig, TrackResult

HEIGHT, WIDTH = 120, 160
SIZE = (HEIGHT, WIDTH)
TRACKING, OCCLUDED, LOST = ObjectState.TRACKING, ObjectState.OCCLUDED, ObjectState.LOST
NO_BOX = (0.0, 0.0, 0.0, 0.0)  # what TrackResult.boxes holds for an empty mask
CUP_BOX = (10.0, 10.0, 30.0, 30.0)  # 20 x 20: diagonal 28.28 px


def result(frame_index: int, objects: Sequence[Tuple[int, ObjectState, Tuple[float, ...]]]) -> TrackResult:
    """A TrackResult of a HEIGHT x WIDTH frame; only what the policy reads is meaningful (ids, states,
    boxes: the box of each object's mask, zeros for an empty mask)."""
    n = len(objects)
    return TrackResult(
        frame_index=frame_index,
        object_ids=[object_id for object_id, _, _ in objects],
        masks=torch.zeros(n, HEIGHT, WIDTH, dtype=torch.bool),
        logits=torch.zeros(n, HEIGHT, WIDTH),
        low_res_logits=torch.zeros(n, 1, 4, 4),
        ious=torch.ones(n),
        presence=torch.tensor([1.0 if state is TRACKING else 0.0 for _, state, _ in objects]),
        states=[state for _, state, _ in objects],
        boxes=torch.tensor([list(box) for _, _, box in objects], dtype=torch.float32).reshape(n, 4),
    )


def shifted(box: Tuple[float, ...], dx: float, dy: float = 0.0) -> Tuple[float, float, float, float]:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def only(outcome: AssociationOutcome) -> Decision:
    assert len(outcome.decisions) == 1, outcome.decisions
    return outcome.decisions[0]


def kinds(decisions: Union[AssociationOutcome, Sequence[Decision]]) -> List[Tuple[str, Optional[str], Optional[int]]]:
    """(kind, reason, object id) of every decision, for compact comparisons."""
    records = decisions.decisions if isinstance(decisions, AssociationOutcome) else decisions
    return [(d.kind.value, d.reason.value if d.reason else None, d.object_id) for d in records]


def started_cup(config: AssociationConfig = AssociationConfig(), track_id: Optional[str] = None) -> DetectionAssociator:
    """An associator that started object 1 ("cup", at CUP_BOX) before the stream's frame 0."""
    associator = DetectionAssociator(config)
    assert kinds(associator.associate([Detection(CUP_BOX, 0.9, "cup", track_id)], SIZE)) == [("started", None, 1)]
    return associator


def lost_cup(config: AssociationConfig = AssociationConfig(), track_id: Optional[str] = None) -> DetectionAssociator:
    """Object 1 ("cup") was seen at CUP_BOX on frame 0, then absent on frames 1..3 and LOST on 4..9."""
    associator = started_cup(config, track_id)
    associator.associate([], SIZE, result(0, [(1, TRACKING, CUP_BOX)]))
    for frame in range(1, 10):
        associator.associate([], SIZE, result(frame, [(1, OCCLUDED if frame < 4 else LOST, NO_BOX)]))
    return associator


# ----------------------------------------------------------------------------- geometry


def test_box_iou_and_centre_distance() -> None:
    assert box_iou(CUP_BOX, CUP_BOX) == 1.0
    assert box_iou(CUP_BOX, shifted(CUP_BOX, 10)) == pytest.approx(200 / 600)
    assert box_iou(CUP_BOX, shifted(CUP_BOX, 20)) == 0.0  # touching edges
    assert box_iou(CUP_BOX, (5.0, 5.0, 5.0, 9.0)) == 0.0  # no area
    assert box_center_distance(shifted(CUP_BOX, 30, 40), CUP_BOX) == pytest.approx(50 / math.hypot(20, 20))
    assert box_center_distance(CUP_BOX, (3.0, 3.0, 3.0, 3.0)) == math.inf


# ----------------------------------------------------------------------------- starting objects


def test_a_detection_over_no_object_starts_a_new_object_with_its_label() -> None:
    associator = DetectionAssociator()
    outcome = associator.associate([Detection(CUP_BOX, 0.9, "cup")], SIZE)
    decision = only(outcome)
    assert (decision.kind, decision.object_id, decision.box) == (DecisionKind.STARTED, 1, CUP_BOX)
    assert outcome.prompts == [decision] and outcome.removals == [] and outcome.excess == 0
    assert associator.labels() == {1: "cup"}
    record = associator.objects[1]
    assert record.from_detector and record.last_box == CUP_BOX and record.last_prompt_frame == 0
    # a second object elsewhere on the next frame gets the next id
    frame0 = result(0, [(1, TRACKING, CUP_BOX)])
    later = associator.associate([Detection(shifted(CUP_BOX, 60), 0.8, "cup")], SIZE, frame0)
    assert kinds(later) == [("started", None, 2)]
    assert associator.labels() == {1: "cup", 2: "cup"}


def test_a_detection_over_a_tracked_object_does_not_duplicate_it() -> None:
    associator = started_cup()
    mask_box = shifted(CUP_BOX, 3, 2)  # the tracker's mask box, close to the detection
    outcome = associator.associate(
        [Detection(CUP_BOX, 0.9, "cup"), Detection(shifted(CUP_BOX, -5), 0.8, "cup"), Detection(CUP_BOX, 0.9, "dog")],
        SIZE,
        result(0, [(1, TRACKING, mask_box)]),
    )
    # the best-overlapping detection is matched, the other overlapping ones would duplicate object 1
    assert kinds(outcome) == [
        ("ignored", "already_tracked", 1), ("ignored", "duplicate", 1), ("ignored", "duplicate", 1)
    ]
    assert outcome.prompts == [] and associator.objects[1].last_box == mask_box


def test_matching_is_greedy_by_iou_with_ties_to_the_lower_index() -> None:
    associator = DetectionAssociator()
    associator.associate([Detection(CUP_BOX, 0.9, "cup"), Detection(shifted(CUP_BOX, 10), 0.9, "cup")], SIZE)
    tracked = result(0, [(1, TRACKING, CUP_BOX), (2, TRACKING, shifted(CUP_BOX, 10))])  # overlapping objects
    # detection 0 overlaps both objects (IoU 0.6 each), less than detection 1 overlaps object 1 (0.9):
    # greedy by IoU gives detection 1 -> object 1 first, then detection 0 -> object 2
    between, near_first = shifted(CUP_BOX, 5), shifted(CUP_BOX, 1)
    assert box_iou(between, CUP_BOX) == box_iou(between, shifted(CUP_BOX, 10)) == pytest.approx(0.6)
    assert box_iou(near_first, CUP_BOX) == pytest.approx(0.905, abs=1e-3)
    outcome = associator.associate([Detection(between, 0.9, "cup"), Detection(near_first, 0.9, "cup")], SIZE, tracked)
    assert kinds(outcome) == [("ignored", "already_tracked", 2), ("ignored", "already_tracked", 1)]
    # two identical detections on one object: the lower index is matched
    apart = result(1, [(1, TRACKING, CUP_BOX), (2, TRACKING, shifted(CUP_BOX, 100))])
    tie = associator.associate([Detection(CUP_BOX, 0.9, "cup"), Detection(CUP_BOX, 0.9, "cup")], SIZE, apart)
    assert kinds(tie) == [("ignored", "already_tracked", 1), ("ignored", "duplicate", 1)]


def test_objects_added_by_hand_are_never_duplicated_and_keep_no_label() -> None:
    associator = DetectionAssociator()
    hand = result(4, [(5, TRACKING, CUP_BOX)])  # object 5 was prompted by the user, not from a detection
    outcome = associator.associate([Detection(shifted(CUP_BOX, 2), 0.9, "person")], SIZE, hand)
    assert kinds(outcome) == [("ignored", "already_tracked", 5)]
    assert associator.labels() == {5: None} and not associator.objects[5].from_detector
    # new objects get ids above those in use; a briefly occluded hand object still blocks duplicates
    outcome = associator.associate(
        [Detection(shifted(CUP_BOX, 50), 0.9, "person"), Detection(CUP_BOX, 0.9, "person")],
        SIZE,
        result(5, [(5, OCCLUDED, NO_BOX)]),
    )
    assert kinds(outcome) == [("started", None, 6), ("ignored", "occluded_briefly", 5)]


def test_ids_of_objects_added_since_the_last_result_are_not_issued() -> None:
    associator = DetectionAssociator()
    frame0 = result(0, [(1, TRACKING, shifted(CUP_BOX, 80))])
    outcome = associator.associate([Detection(CUP_BOX, 0.9, "cup")], SIZE, frame0, stream_ids=[1, 2, 3])
    assert kinds(outcome) == [("started", None, 4)]


def test_asking_twice_about_the_same_frame_does_not_start_an_object_twice() -> None:
    associator = DetectionAssociator()
    detection = Detection(CUP_BOX, 0.9, "cup")
    assert kinds(associator.associate([detection], SIZE)) == [("started", None, 1)]
    assert kinds(associator.associate([detection], SIZE)) == [("ignored", "already_tracked", 1)]
    frame0 = result(0, [(1, TRACKING, CUP_BOX)])
    other = Detection(shifted(CUP_BOX, 60), 0.9, "cup")
    assert kinds(associator.associate([other], SIZE, frame0)) == [("started", None, 2)]
    assert kinds(associator.associate([other], SIZE, frame0)) == [("ignored", "already_tracked", 2)]
    # once a newer result lacks a started object (its start failed, or it was removed), it is forgotten
    associator.associate([], SIZE, result(1, [(1, TRACKING, CUP_BOX)]))
    assert set(associator.objects) == {1}


# ----------------------------------------------------------------------------- re-acquisition


def test_a_lost_object_is_reacquired_under_its_id_near_its_last_box() -> None:
    associator = lost_cup()
    assert associator.objects[1].last_box == CUP_BOX  # its last visible mask's box
    returned = shifted(CUP_BOX, 30, 20)  # 1.27 diagonals away
    outcome = associator.associate([Detection(returned, 0.9, "cup")], SIZE, result(10, [(1, LOST, NO_BOX)]))
    decision = only(outcome)
    assert (decision.kind, decision.object_id, decision.box) == (DecisionKind.REACQUIRED, 1, returned)
    assert associator.labels() == {1: "cup"}
    assert associator.objects[1].last_box == returned and associator.objects[1].last_prompt_frame == 11


def test_a_never_seen_object_is_reacquired_near_the_box_it_was_prompted_with() -> None:
    associator = started_cup()
    for frame in range(4):  # never TRACKING: the last known box stays the prompted one
        associator.associate([], SIZE, result(frame, [(1, LOST, NO_BOX)]))
    assert associator.objects[1].last_box == CUP_BOX
    outcome = associator.associate([Detection(shifted(CUP_BOX, 20), 0.9, "cup")], SIZE, result(4, [(1, LOST, NO_BOX)]))
    assert kinds(outcome) == [("reacquired", None, 1)]


def test_a_class_mismatch_does_not_reacquire() -> None:
    associator = lost_cup()
    outcome = associator.associate([Detection(CUP_BOX, 0.9, "bottle")], SIZE, result(10, [(1, LOST, NO_BOX)]))
    assert kinds(outcome) == [("started", None, 2)]
    assert associator.labels() == {1: "cup", 2: "bottle"}


@pytest.mark.parametrize(
    "gate, expected",
    [(2.0, [("started", None, 2)]), (3.0, [("reacquired", None, 1)]), (math.inf, [("reacquired", None, 1)])],
)
def test_reacquisition_is_gated_by_distance_in_last_box_diagonals(gate: float, expected: list) -> None:
    associator = lost_cup(AssociationConfig(reacquire_max_distance=gate))
    far = shifted(CUP_BOX, 60, 45)  # 75 px = 2.65 diagonals from the last box
    assert box_center_distance(far, CUP_BOX) == pytest.approx(2.652, abs=1e-3)
    assert kinds(associator.associate([Detection(far, 0.9, "cup")], SIZE, result(10, [(1, LOST, NO_BOX)]))) == expected


def test_the_closest_lost_object_of_the_class_is_reacquired() -> None:
    associator = DetectionAssociator(AssociationConfig(reacquire_max_distance=math.inf))
    associator.associate([Detection(CUP_BOX, 0.9, "cup"), Detection(shifted(CUP_BOX, 100), 0.9, "cup")], SIZE)
    lost = result(0, [(1, LOST, NO_BOX), (2, LOST, NO_BOX)])
    detections = [Detection(shifted(CUP_BOX, 70), 0.9, "cup"), Detection(shifted(CUP_BOX, 75), 0.9, "cup")]
    outcome = associator.associate(detections, SIZE, lost)
    # both detections are closer to object 2; the closer one (detection 1) gets it, detection 0 gets object 1
    assert kinds(outcome) == [("reacquired", None, 1), ("reacquired", None, 2)]


def test_an_occluded_object_is_reacquired_only_after_enough_frames() -> None:
    associator = started_cup(AssociationConfig(reacquire_occluded_after_frames=5))
    associator.associate([], SIZE, result(0, [(1, TRACKING, CUP_BOX)]))
    detection = [Detection(shifted(CUP_BOX, 2), 0.9, "cup")]
    history = []
    for frame in range(1, 7):
        history.append(kinds(associator.associate(detection, SIZE, result(frame, [(1, OCCLUDED, NO_BOX)])))[0])
        if history[-1][0] == "reacquired":
            break
    assert history == [("ignored", "occluded_briefly", 1)] * 4 + [("reacquired", None, 1)]


# ----------------------------------------------------------------------------- detector track ids


def test_a_detector_track_id_keeps_its_object_whatever_the_class_or_distance() -> None:
    associator = lost_cup(track_id="7")
    far = (120.0, 90.0, 150.0, 118.0)
    assert box_center_distance(far, CUP_BOX) > associator.config.reacquire_max_distance
    int_track_id = Detection(far, 0.9, "mug", track_id=7)  # type: ignore[arg-type]
    outcome = associator.associate([int_track_id], SIZE, result(10, [(1, LOST, NO_BOX)]))
    assert kinds(outcome) == [("reacquired", None, 1)]  # an int track id is compared as a string
    # a TRACKING object keeps its detector track id: a box of another track id over it starts nothing
    tracked = result(11, [(1, TRACKING, far)])
    outcome = associator.associate(
        [Detection(far, 0.9, "mug", "8"), Detection(shifted(far, -1), 0.8, "mug", "7"),
         Detection(far, 0.7, "mug", "7")],
        SIZE,
        tracked,
    )
    assert kinds(outcome) == [
        ("ignored", "duplicate", 1), ("ignored", "already_tracked", 1), ("ignored", "duplicate_track_id", 1)
    ]


def test_a_detection_with_a_new_track_id_starts_an_object_bound_to_it() -> None:
    associator = DetectionAssociator()
    assert kinds(associator.associate([Detection(CUP_BOX, 0.9, "cup", "a")], SIZE)) == [("started", None, 1)]
    assert associator.objects[1].track_id == "a"
    # later boxes of track "a" anywhere are object 1 (here TRACKING: nothing to do)
    frame0 = result(0, [(1, TRACKING, CUP_BOX)])
    outcome = associator.associate([Detection(shifted(CUP_BOX, 90), 0.9, "cup", "a")], SIZE, frame0)
    assert kinds(outcome) == [("ignored", "already_tracked", 1)]


def test_an_object_added_by_hand_is_reacquired_through_a_track_id_bound_by_overlap() -> None:
    associator = DetectionAssociator()
    associator.associate([Detection(CUP_BOX, 0.9, "dog", "d1")], SIZE, result(0, [(3, TRACKING, CUP_BOX)]))
    assert associator.objects[3].track_id == "d1" and associator.labels() == {3: None}
    lost = result(1, [(3, LOST, NO_BOX)])
    # without the track id a lost hand-made object (no class) is not re-acquired; with it, it is
    assert kinds(associator.associate([Detection(CUP_BOX, 0.9, "dog")], SIZE, lost)) == [("started", None, 4)]
    associator = DetectionAssociator()
    associator.associate([Detection(CUP_BOX, 0.9, "dog", "d1")], SIZE, result(0, [(3, TRACKING, CUP_BOX)]))
    assert kinds(associator.associate([Detection(shifted(CUP_BOX, 100), 0.9, "dog", "d1")], SIZE, lost)) == [
        ("reacquired", None, 3)
    ]


# ----------------------------------------------------------------------------- bounds, removal, refresh


def test_at_most_max_objects_and_the_excess_is_counted() -> None:
    associator = DetectionAssociator(AssociationConfig(max_objects=3))
    hand = result(0, [(9, TRACKING, (140.0, 100.0, 159.0, 119.0))])  # counts towards max_objects
    detections = [Detection(shifted(CUP_BOX, 25 * k), 0.5 + 0.1 * k, "cup") for k in range(5)]
    outcome = associator.associate(detections, SIZE, hand)
    # the two best scores (detections 4, 3) start objects 10, 11; the other three are counted as excess
    assert kinds(outcome) == [("ignored", "max_objects", None)] * 3 + [("started", None, 11), ("started", None, 10)]
    assert outcome.excess == 3 and len(outcome.prompts) == 2


def test_ids_wrap_to_the_smallest_free_one_at_max_object_id() -> None:
    associator = DetectionAssociator(AssociationConfig(max_object_id=3))
    detections = [Detection(shifted(CUP_BOX, 30 * k), 0.9, "cup") for k in range(4)]
    outcome = associator.associate(detections, SIZE, result(0, [(2, TRACKING, (140.0, 100.0, 159.0, 119.0))]))
    assert kinds(outcome) == [("started", None, 3), ("started", None, 1), ("ignored", "no_free_id", None),
                              ("ignored", "no_free_id", None)]
    assert outcome.excess == 2


def test_objects_lost_for_too_long_are_removed_and_forgotten() -> None:
    associator = started_cup(AssociationConfig(remove_lost_after_frames=3))
    hand = (140.0, 100.0, 159.0, 119.0)
    removed_on = []
    for frame in range(8):
        state = TRACKING if frame == 0 else (OCCLUDED if frame < 3 else LOST)  # LOST from frame 3 on
        objects = [(1, state, CUP_BOX if frame == 0 else NO_BOX), (2, LOST, hand)]
        outcome = associator.associate([], SIZE, result(frame, objects))
        if outcome.removals:
            removed_on.append((frame, outcome.removals, kinds(outcome)))
            break
    # LOST on frames 3, 4, 5: removed on frame 5; object 2 was added by hand and is never removed
    assert removed_on == [(5, [1], [("removed", None, 1)])]
    assert associator.labels() == {2: None}


def test_an_object_reacquired_on_its_removal_frame_is_kept() -> None:
    associator = lost_cup(AssociationConfig(remove_lost_after_frames=7))  # LOST on frames 4..10: due on frame 10
    outcome = associator.associate([Detection(CUP_BOX, 0.9, "cup")], SIZE, result(10, [(1, LOST, NO_BOX)]))
    assert kinds(outcome) == [("reacquired", None, 1)] and outcome.removals == []
    assert associator.objects[1].lost_since is None  # the LOST time starts again


@pytest.mark.parametrize("every, expected_refresh_frames", [(0, []), (3, [2, 5, 8])])
def test_tracked_objects_are_refreshed_every_n_frames(every: int, expected_refresh_frames: List[int]) -> None:
    associator = started_cup(AssociationConfig(refresh_every_n_frames=every))  # prompted on frame 0
    refreshed = []
    for frame in range(10):  # the detections of result frame f prompt frame f + 1
        outcome = associator.associate([Detection(CUP_BOX, 0.9, "cup")], SIZE, result(frame, [(1, TRACKING, CUP_BOX)]))
        (kind, reason, object_id), = kinds(outcome)
        assert object_id == 1 and (kind, reason) in (("refreshed", None), ("ignored", "already_tracked"))
        if kind == "refreshed":
            refreshed.append(frame)
    assert refreshed == expected_refresh_frames


def test_objects_added_by_hand_are_never_refreshed() -> None:
    associator = DetectionAssociator(AssociationConfig(refresh_every_n_frames=1))
    for frame in range(3):
        outcome = associator.associate([Detection(CUP_BOX, 0.9)], SIZE, result(frame, [(4, TRACKING, CUP_BOX)]))
        assert kinds(outcome) == [("ignored", "already_tracked", 4)]


# ----------------------------------------------------------------------------- bad input


BAD_DETECTIONS = {
    "NaN coordinate": (Detection((float("nan"), 1.0, 20.0, 20.0)), Reason.INVALID),
    "infinite coordinate": (Detection((1.0, 1.0, float("inf"), 20.0)), Reason.INVALID),
    "three numbers": (Detection((1.0, 1.0, 20.0)), Reason.INVALID),
    "not numbers": (Detection(("a", "b", "c", "d")), Reason.INVALID),  # type: ignore[arg-type]
    "not a sequence": (Detection(None), Reason.INVALID),  # type: ignore[arg-type]
    "NaN score": (Detection(CUP_BOX, float("nan")), Reason.INVALID),
    "score not a number": (Detection(CUP_BOX, "high"), Reason.INVALID),  # type: ignore[arg-type]
    "zero width": (Detection((10.0, 10.0, 10.0, 30.0)), Reason.EMPTY_BOX),
    "negative height": (Detection((10.0, 30.0, 20.0, 10.0)), Reason.EMPTY_BOX),
    "right of the frame": (Detection((WIDTH + 1.0, 10.0, WIDTH + 30.0, 30.0)), Reason.OUTSIDE_FRAME),
    "above the frame": (Detection((10.0, -30.0, 30.0, 0.0)), Reason.OUTSIDE_FRAME),
    "low score": (Detection(CUP_BOX, 0.2), Reason.LOW_SCORE),
}


@pytest.mark.parametrize("name", list(BAD_DETECTIONS))
def test_bad_detections_are_ignored_with_a_reason(name: str) -> None:
    detection, reason = BAD_DETECTIONS[name]
    associator = DetectionAssociator()
    outcome = associator.associate([detection, Detection(shifted(CUP_BOX, 100), 0.9)], SIZE)
    assert kinds(outcome) == [("ignored", reason.value, None), ("started", None, 1)]
    assert outcome.decisions[0].detail  # says what is wrong
    assert set(associator.objects) == {1}


def test_a_box_partly_outside_the_frame_is_clipped_to_it() -> None:
    outcome = DetectionAssociator().associate([Detection((-10.0, 100.0, 30.0, 200.0), 0.9)], SIZE)
    assert only(outcome).box == (0.0, 100.0, 30.0, float(HEIGHT))


@pytest.mark.parametrize("field, value", [("iou_threshold", 0.0), ("iou_threshold", 1.5), ("score_threshold", math.nan),
                                          ("reacquire_max_distance", -1.0), ("reacquire_max_distance", math.nan),
                                          ("refresh_every_n_frames", -1), ("remove_lost_after_frames", -2),
                                          ("reacquire_occluded_after_frames", -1), ("max_objects", 0),
                                          ("max_object_id", 0), ("max_object_id", 2**31)])
def test_invalid_config_is_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AssociationConfig(**{field: value})


def test_readme_documents_every_parameter_with_its_default() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Detector-driven tracking"):]
    for config_field in dataclasses.fields(AssociationConfig):
        assert f"| `{config_field.name}` | `{config_field.default!r}` |" in section, config_field.name


def test_a_stream_reset_is_noticed_from_the_frame_index() -> None:
    associator = lost_cup()
    outcome = associator.associate([Detection(CUP_BOX, 0.9, "cup")], SIZE, result(0, []))
    assert kinds(outcome) == [("started", None, 1)]  # object 1 of the old stream is forgotten
    assert associator.labels() == {1: "cup"} and associator.objects[1].last_prompt_frame == 1
    associator.reset()
    assert kinds(associator.associate([Detection(CUP_BOX, 0.9, "cup")], SIZE)) == [("started", None, 1)]


# ----------------------------------------------------------------------------- applying outcomes to a tracker

IMAGE_SIZE = 128
FRAME_SIZE = (96, 128)


@pytest.fixture(scope="module")
def tracker() -> Tracker:
    """The tiny model with seeded random weights at 128 px (its masks are meaningless)."""
    model = random_model("sam2.1_hiera_tiny", image_size=IMAGE_SIZE)
    return Tracker(model, TrackerConfig(max_objects=3, lost_after_frames=2))


def square_frame(top_left: Optional[Tuple[int, int]]) -> np.ndarray:
    """A dark 96 x 128 RGB frame with a bright 20 x 20 square at (x, y) = top_left (None: no square)."""
    frame = np.full(FRAME_SIZE + (3,), 20, dtype=np.uint8)
    if top_left is not None:
        x, y = top_left
        frame[y:y + 20, x:x + 20] = 230
    return frame


def test_apply_outcome_keeps_going_when_the_tracker_rejects_an_action(tracker: Tracker) -> None:
    state = tracker.create_stream()
    tracker.add_prompt(state, 1, box=[60.0, 60.0, 80.0, 80.0], frame_size=FRAME_SIZE)  # by hand, not yet stepped
    associator = DetectionAssociator(AssociationConfig(max_objects=5))  # more than the tracker's 3
    detections = [Detection((10.0 + 25 * k, 10.0, 30.0 + 25 * k, 30.0), 0.9 - 0.1 * k, "cup") for k in range(4)]
    outcome = associator.associate(detections, FRAME_SIZE)  # not told about object 1 (no stream_ids)
    assert [d.object_id for d in outcome.prompts] == [1, 2, 3, 4]
    decisions = apply_outcome(tracker, state, outcome, associator)
    # id 1 is the user's object: not refined by a start; 4 would exceed the tracker's max_objects=3
    assert kinds(decisions) == [
        ("ignored", "tracker_rejected", 1), ("started", None, 2), ("started", None, 3),
        ("ignored", "tracker_rejected", 4),
    ]
    assert "already in use" in decisions[0].detail and "max_objects=3" in decisions[3].detail
    assert state.object_ids == [1, 2, 3] and set(associator.objects) == {2, 3}
    stepped = tracker.step(state, square_frame(None))
    assert stepped.object_ids == [1, 2, 3]
    # removing an object the stream no longer has is rejected alone; re-acquiring a vanished id too
    tracker.remove_objects(state, [3])
    stale = AssociationOutcome(
        decisions=[Decision(DecisionKind.REACQUIRED, 0, 3, box=(1.0, 1.0, 9.0, 9.0)),
                   Decision(DecisionKind.REFRESHED, 1, 2, box=(1.0, 1.0, 9.0, 9.0)),
                   Decision(DecisionKind.REMOVED, None, 3)],
        frame_size=FRAME_SIZE,
    )
    assert kinds(apply_outcome(tracker, state, stale)) == [
        ("ignored", "tracker_rejected", 3), ("refreshed", None, 2), ("ignored", "tracker_rejected", 3)
    ]
    assert state.object_ids == [1, 2]


def test_an_object_that_leaves_and_returns_elsewhere_is_reacquired_under_its_id(tracker: Tracker) -> None:
    """A bright square starts object 1 from a detector box on frame 0, moves right, is out of view on
    frames 3-5 and comes back lower on frame 6, beside a new object of another class. The detector runs
    every third frame (0, 3, 6), as a slow detector beside the tracker would.

    How LOST is driven: with these seeded random weights the tracker predicts the object absent on every
    frame (its masks are meaningless), so with lost_after_frames=2 the tracker itself reports it LOST from
    frame 2 on (asserted before the return): the state comes from the tracker, not from a constructed
    result. The object was never seen, so its last known box is the box it was prompted with; the return
    is 3.0 of that box's diagonals away, inside the 4.0 gate.
    """
    positions = [(10, 30), (45, 30), (80, 30), None, None, None, (90, 60)]
    detector_frames = {0, 3, 6}
    associator = DetectionAssociator(AssociationConfig(reacquire_max_distance=4.0))
    state = tracker.create_stream()
    last: Optional[TrackResult] = None
    history = []
    for frame_index, position in enumerate(positions):
        detections = []
        if frame_index in detector_frames and position is not None:
            x, y = position
            detections = [Detection((float(x), float(y), x + 20.0, y + 20.0), 0.9, "square", None)]
        if frame_index == 6:
            detections.append(Detection((5.0, 70.0, 25.0, 90.0), 0.8, "disc"))  # a new object meanwhile
            assert last is not None and last.states == [LOST], "the random model was expected to lose the object"
            assert associator.objects[1].last_box == (10.0, 30.0, 30.0, 50.0)  # never seen: the prompted box
            before = copy.deepcopy(state)
        outcome = associator.associate(detections, FRAME_SIZE, last, state.object_ids)
        decisions = apply_outcome(tracker, state, outcome, associator)
        history.append([(d.kind.value, d.object_id) for d in decisions])
        last = tracker.step(state, square_frame(position))

    assert history == [[("started", 1)], [], [], [], [], [], [("reacquired", 1), ("started", 2)]]
    assert last.object_ids == [1, 2] and associator.labels() == {1: "square", 2: "disc"}
    # the box re-prompted object 1 on frame 6 (a new conditioning frame): its output differs from tracking only
    without = tracker.step(before, square_frame(positions[6]))
    assert without.object_ids == [1]
    assert not torch.equal(last.low_res_logits[0], without.low_res_logits[0])
